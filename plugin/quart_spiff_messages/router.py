"""The router decides where a message goes: a waiting task, a new instance, the buffer, or nowhere.

Order: (1) the waiting task whose subscription matches (exact key before accept-any, oldest first), and only that
task; (2) the nearest Message Start Event in scope; (3) otherwise the message is refused (``not_accepted``, kept for
audit), or, for a message a process threw, kept ``ready`` until a receiver comes to wait. Each message is one
transaction; what the instance it reached threw is routed right after the commit, each message in its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from . import metrics, refusals
from .catalog import Catalog, StartPoint
from .core import Core, Deliver, StartByMessage, StartWithData
from .correlation import KeyValue, key_values
from .errors import (
    DatabaseUnavailable,
    InstanceBusy,
    InsufficientStorage,
    InvalidMessageInstanceUuid,
    InvalidTimeToLive,
    MessageInstanceUuidConflict,
    MessageInstanceUuidRequired,
    MessageNotCancellable,
    MessageNotFound,
    ProcessNotFound,
    ProcessNotStartable,
    SpiffMessagesError,
)
from .hints import did_you_mean, processes_meant
from .names import ScopedName, parse_modified_name, parse_process_id
from .outcomes import METRIC_RESULTS, Outcome
from .refusals import Refusal
from .replay import Replay
from .store import (
    AlreadyExists,
    Busy,
    Committed,
    InstanceRecord,
    MessageRecord,
    Store,
    Tx,
    active_keys,
    correlation_lock,
    reserved,
)

log = logging.getLogger("quart_spiff_messages")
T = TypeVar("T")

# Messages thrown by processes routed after one request (a conversation ping-pong is bounded by this).
MAX_OUTBOX_PER_REQUEST = 1000
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def order_key(keys: Iterable[KeyValue]) -> str | None:
    """The key a queued message keeps its arrival order under: its correlation keys, canonical (None: it has
    none, and no order to keep)."""
    pairs = sorted({f"{kv.key}={kv.digest}" for kv in keys})
    return ";".join(pairs)[:512] if pairs else None


def correlation_keys_of(keys: Iterable[KeyValue]) -> dict[str, dict[str, Any]] | None:
    """A message's correlation keys as its row keeps them (``{key: {property: value}}``; None: it has none)."""
    return {kv.key: dict(kv.values) for kv in keys} or None


def normalize_uuid(value: str) -> str:
    """A message_instance_uuid in canonical form, stored lower-case."""
    if len(value) > 40:
        raise InvalidMessageInstanceUuid("message_instance_uuid must be 40 characters or fewer")
    lowered = value.strip().lower()
    if not _UUID.match(lowered):
        raise InvalidMessageInstanceUuid(
            "message_instance_uuid must be a UUID in canonical form (8-4-4-4-12 hexadecimal digits)")
    return lowered


class Accepts:
    """The asynchronous accepts of this worker: the routing loop lets a burst of them go first (an accept is one
    short transaction; a round of routing holds SQLite's writer and the GIL for much longer)."""

    QUIET_SECONDS = 0.005  # no accept began for this long: the burst is over

    def __init__(self) -> None:
        self.in_flight = 0
        self.last_began = -math.inf

    @contextlib.contextmanager
    def one(self) -> Iterator[None]:
        self.in_flight += 1
        self.last_began = time.monotonic()
        try:
            yield
        finally:
            self.in_flight -= 1

    def busy(self) -> bool:
        return bool(self.in_flight) or time.monotonic() - self.last_began < self.QUIET_SECONDS

    async def let_pass(self, longest: float) -> None:
        """Wait until no accept is under way or began just now, ``longest`` seconds at most (under a flood
        routing must go on too)."""
        deadline = time.monotonic() + longest
        while self.busy() and time.monotonic() < deadline:  # a quiet period is a time: polled  # noqa: ASYNC110
            await asyncio.sleep(self.QUIET_SECONDS)


class Router:
    def __init__(self, catalog: Catalog, core: Core, store: Store, max_ttl_seconds: int = 300) -> None:
        self.catalog = catalog
        self.core = core
        self.store = store
        self.max_ttl_seconds = max_ttl_seconds
        self.replay = Replay(store, core)
        # thrown messages a flush left for when the database is back (routed by Upkeep.sweep; a new process routes
        # any it did not reach at start-up, Upkeep.recover)
        self.unflushed: set[int] = set()
        # called after a message was queued (execution_mode=asynchronous): wakes this worker's work loop
        self.on_queued: Callable[[], None] | None = None
        self.accepts = Accepts()

    # -- entry points -------------------------------------------------------------------------------------------
    async def send_message(self, modified_name: str, payload: Mapping[str, Any], *, ttl: int = 0,
                           message_instance_uuid: str | None = None, asynchronous: bool = False) -> Outcome:
        """Route one message. With ``ttl`` > 0 a message nobody takes now is kept until a receiver waits.

        ``asynchronous``: write it to the queue and answer at once (``accepted``); a worker's work loop routes it
        (:mod:`.queued`)."""
        started, result = time.perf_counter(), "error"
        try:
            outcome = await self._send(modified_name, payload, ttl, message_instance_uuid, asynchronous)
            result = "replayed" if outcome.replayed else METRIC_RESULTS.get(outcome.kind, "error")
            return outcome
        except MessageInstanceUuidConflict:
            result = "conflict"
            raise
        except SpiffMessagesError as exc:
            result = "invalid" if exc.status < 500 else "error"
            raise
        finally:
            metrics.observe_send(result, time.perf_counter() - started)

    async def _send(self, modified_name: str, payload: Mapping[str, Any], ttl: int,
                    message_instance_uuid: str | None, asynchronous: bool = False) -> Outcome:
        scoped = parse_modified_name(modified_name)
        if not 0 <= ttl <= self.max_ttl_seconds:
            raise InvalidTimeToLive(f"time_to_live_in_seconds must be between 0 and {self.max_ttl_seconds}")
        key = normalize_uuid(message_instance_uuid) if message_instance_uuid is not None else None
        if ttl > 0 and key is None:
            raise MessageInstanceUuidRequired(
                "message_instance_uuid is required when time_to_live_in_seconds is greater than 0")
        payload = dict(payload)
        if key is not None:
            replay = await self.replay.outcome(key, scoped, payload)
            if replay is not None:
                return replay

        def attempt(tx: Tx) -> Outcome:
            # Written once, with its outcome (a delivery writes it earlier: the receive row points to it).
            msg = tx.draft_message(name=scoped.name, scope=scoped.group, message_type="send", status="running",
                                   payload=payload, message_instance_uuid=key)
            outcome, msg = self.route(tx, msg, scoped)
            if outcome is not None:
                return outcome
            return self.unrouted(tx, msg, scoped, tx.now + ttl if ttl > 0 else None)

        # computed before the accept's transaction (on SQLite it holds the one writer)
        start = self.catalog.pick_start(scoped) if asynchronous else None
        keys = self.message_keys(scoped, payload) if asynchronous else []
        queue_order = order_key(self.queue_keys(scoped, payload, keys)) if asynchronous else None

        def accept(tx: Tx) -> Outcome:
            # a message that will start a process gets its instance reserved now (Spiff Arena's ``not_started``)
            booked = self.reserve(tx, scoped, payload, start, keys) if start is not None else None
            # ``running`` until routed; the TTL is kept as the expiry a buffered message will have
            msg = tx.add_message(name=scoped.name, scope=scoped.group, message_type="send", status="running",
                                 payload=payload, message_instance_uuid=key, correlation_keys=correlation_keys_of(keys),
                                 expires_at=tx.now + ttl if ttl > 0 else None,
                                 process_instance_id=booked.id if booked is not None else None)
            assert msg.id is not None
            tx.enqueue(msg.id, queue_order)
            return Outcome("reserved", msg, booked, {}) if booked is not None else Outcome("accepted", msg)

        try:
            if asynchronous:
                with self.accepts.one():
                    done = await self.transact(accept)
            else:
                done = await self.transact(attempt)
        except AlreadyExists:
            # Another request inserted the same message_instance_uuid first: answer with its outcome.
            replay = await self.replay.outcome(key, scoped, payload) if key is not None else None
            if replay is None:
                raise
            return replay
        await self.flush(done.outbox)
        if asynchronous and self.on_queued is not None:
            self.on_queued()
        return done.value

    def reserve(self, tx: Tx, scoped: ScopedName, payload: Mapping[str, Any], start: StartPoint,
                keys: Iterable[KeyValue]) -> InstanceRecord | None:
        """The ``not_started`` instance an asynchronous message that would start ``start``'s process gets at its
        accept, or None when it would not start: a waiting task correlates now (one index lookup with the message's
        ``keys``), or, for a start that makes one instance per correlation key, an active instance holds the key."""
        pairs = sorted({(kv.key, kv.digest) for kv in keys})
        if tx.find_waiting_tasks(scoped.name, scoped.group, pairs, limit=1):
            return None
        if start.one_per_key and active_keys.holder(tx, start.process_key,
                                                    key_values(start.properties, payload) or []) is not None:
            return None
        entry = self.catalog.processes[start.process_key]
        return reserved.reserve(tx, process_key=entry.key, process_id=entry.process_id, group=entry.group,
                                spec_version=entry.spec_version)

    def route_reserved(self, tx: Tx, msg: MessageRecord,
                       scoped: ScopedName) -> tuple[Outcome | None, MessageRecord]:
        """Route a queued message whose accept reserved an instance: start exactly that instance (the core's
        ``StartByMessage`` on the reserved row). When the start no longer takes (the catalog was reloaded without
        it, or an active instance now holds its correlation key), the reservation ends ``terminated`` with the
        reason and the message is unlinked and routed as any other (:meth:`route`)."""
        assert msg.process_instance_id is not None
        booked, msg, pairs = msg.process_instance_id, *self._lock(tx, msg, scoped)
        start = self.catalog.pick_start(scoped)
        if start is not None:
            applied = self.core.apply(tx, StartByMessage(msg, start), booked)
            if applied is not None:
                return Outcome.of("started", applied), msg
        reserved.terminate(tx, booked, self._why_not_started(tx, scoped, msg, booked), msg.id)
        msg = tx.update_message(msg, process_instance_id=None)
        return self._deliver_or_start(tx, msg, scoped, pairs), msg

    def _why_not_started(self, tx: Tx, scoped: ScopedName, msg: MessageRecord, booked: int) -> str:
        """Why a reserved instance was not started, in words (its ``error.message`` once terminated)."""
        start = self.catalog.pick_start(scoped)
        row = tx.instance(booked)
        if start is None:
            return f"no process starts on message {scoped.name!r} any more (the BPMN folder was reloaded)"
        if row is not None and start.process_key != row.process_key:
            return f"message {scoped.name!r} starts process {start.process_key!r} now (the BPMN folder was reloaded)"
        holder = active_keys.holder(tx, start.process_key, key_values(start.properties, msg.payload_object) or []) \
            if start.one_per_key else None
        if holder is not None:
            return (f"process instance {holder} of {start.process_key!r} holds the message's correlation key "
                    "(one instance per correlation key)")
        return f"the Message Start Event of {start.process_key!r} did not catch the message"

    def unrouted(self, tx: Tx, msg: MessageRecord, scoped: ScopedName, expires_at: float | None) -> Outcome:
        """What becomes of a message nothing took: kept ``ready`` until ``expires_at`` (a TTL), else refused."""
        payload = msg.payload_object
        if expires_at is not None and expires_at > tx.now:
            msg = tx.save_message(tx.update_message(msg, status="ready", expires_at=expires_at))
            tx.index_ready_message(msg, self.message_keys(scoped, payload))
            tx.record_event("message_buffered", None, msg.id, name=msg.name, expires_at=msg.expires_at)
            return Outcome("buffered", msg)
        if expires_at is not None:  # accepted with a TTL that ran out before it was routed
            msg = tx.save_message(tx.update_message(msg, status="cancelled", failure_cause="expired"))
            return Outcome("not_accepted", msg, reason="expired")
        refusal = self.refusal(tx, scoped, payload)
        msg = tx.save_message(tx.update_message(msg, status="not_accepted", failure_cause=refusal.text))
        tx.record_event("message_not_accepted", None, msg.id, name=msg.name, reason=refusal.text,
                        refusal=refusal.as_json())
        return Outcome("not_accepted", msg, reason=refusal.text, refusal=refusal.as_json())

    async def start_process(self, modified_process_id: str, data: Mapping[str, Any]) -> Outcome:
        scoped = parse_process_id(modified_process_id)
        entry = self.catalog.process(scoped.key)
        if entry is None:
            meant = processes_meant(self.catalog, scoped.key)
            raise ProcessNotFound(f"no process {scoped.key!r} in the BPMN folder{did_you_mean(meant)}",
                                  did_you_mean=meant)
        if not entry.has_plain_start:
            raise ProcessNotStartable(
                f"process {scoped.key!r} has no plain start event; it starts when one of its start messages is sent")
        done = await self._answer(self.core.advance(StartWithData(entry, dict(data))))
        await self.flush(done.outbox)
        assert done.value is not None  # a start with data always makes an instance
        return Outcome.of("started", done.value)

    async def cancel_message(self, message_instance_uuid: str) -> MessageRecord:
        """Cancel a buffered message; cancelling a cancelled one is a no-op, a delivered one a 409."""
        key = normalize_uuid(message_instance_uuid)

        def attempt(tx: Tx) -> MessageRecord:
            msg = tx.message_by_uuid(key)
            if msg is None:
                raise MessageNotFound(f"no message with message_instance_uuid {key}")
            if msg.status == "ready":
                assert msg.id is not None
                claimed = tx.claim_message(msg.id)
                if claimed is not None:
                    tx.drop_message_keys(msg.id)
                    tx.record_event("message_cancelled", None, msg.id, name=msg.name)
                    return tx.update_message(claimed, status="cancelled", failure_cause="cancelled by request")
                msg = tx.message(msg.id) or msg  # someone else took it meanwhile
            if msg.status != "cancelled":
                raise MessageNotCancellable(
                    f"message {msg.id} is {msg.status}; only a buffered (ready) message can be cancelled",
                    status_of_message=msg.status)
            return msg

        return (await self.transact(attempt)).value

    # -- routing ------------------------------------------------------------------------------------------------
    def route(self, tx: Tx, msg: MessageRecord, scoped: ScopedName) -> tuple[Outcome | None, MessageRecord]:
        """Deliver ``msg`` to the waiting task that correlates, else start the nearest process that starts on it.

        Returns the outcome (None when nothing took it) and the message as it is now.
        """
        msg, pairs = self._lock(tx, msg, scoped)
        return self._deliver_or_start(tx, msg, scoped, pairs), msg

    def _lock(self, tx: Tx, msg: MessageRecord,
              scoped: ScopedName) -> tuple[MessageRecord, list[tuple[str, str]]]:
        """Compute the message's correlation keys and take their locks (a receiver coming to wait at the same
        moment takes them too); the message with its keys, and the keys as (name, digest)."""
        keys = self.message_keys(scoped, msg.payload_object)
        found = correlation_keys_of(keys)
        # a thrown message keeps the correlations SpiffWorkflow computed, a queued one those of its accept
        if msg.correlation_keys is None and found is not None:
            msg = tx.update_message(msg, correlation_keys=found)
        pairs = sorted({(kv.key, kv.digest) for kv in keys})
        tx.lock_keys(exclusive=[correlation_lock(scoped.name, k, d) for k, d in pairs],
                     shared=[correlation_lock(scoped.name)])
        return msg, pairs

    def _deliver_or_start(self, tx: Tx, msg: MessageRecord, scoped: ScopedName,
                          pairs: list[tuple[str, str]]) -> Outcome | None:
        for waiting in tx.find_waiting_tasks(scoped.name, scoped.group, pairs):
            applied = self.core.apply(tx, Deliver(msg, waiting.task_id), waiting.instance_id)
            if applied is not None and applied.message is not None:
                return Outcome.of("delivered", applied)
            # else the index said yes and SpiffWorkflow no, or an overdue timer took the wait first: next one
        start = self.catalog.pick_start(scoped)
        if start is not None:
            applied = self.core.apply(tx, StartByMessage(msg, start))
            if applied is not None:
                return Outcome.of("started", applied)
        return None

    def message_keys(self, scoped: ScopedName, payload: Mapping[str, Any]) -> list[KeyValue]:
        """Correlation keys the payload carries, computed with the receiving catches' retrieval expressions."""
        keys: dict[tuple[str, str], KeyValue] = {}
        for shape in self.catalog.catch_shapes(scoped):
            for kv in key_values(shape, payload) or ():
                keys.setdefault((kv.key, kv.digest), kv)
        return list(keys.values())

    def queue_keys(self, scoped: ScopedName, payload: Mapping[str, Any],
                   caught: Iterable[KeyValue] | None = None) -> list[KeyValue]:
        """The correlation keys a queued message keeps its order under: those its catches compute (``caught``, if
        computed already) and those its Message Start Events give the instance they start (so a start and the
        messages for the instance it starts keep their order)."""
        if caught is None:
            caught = self.message_keys(scoped, payload)
        keys = {(kv.key, kv.digest): kv for kv in caught}
        for start in self.catalog.start_points(scoped):
            for kv in key_values(start.properties, payload) or ():
                keys.setdefault((kv.key, kv.digest), kv)
        return list(keys.values())

    def refusal(self, tx: Tx, scoped: ScopedName, payload: Mapping[str, Any]) -> Refusal:
        """Why nothing took a message: a reason a client can act on, in data and in words (``refusals.py``)."""
        return refusals.explain(tx, self.catalog, scoped, payload, self.message_keys(scoped, payload))

    def _keep_ready(self, tx: Tx, msg: MessageRecord) -> None:
        """Leave a message nobody takes now ``ready``, indexed for the first receiver that comes to wait."""
        msg = tx.update_message(msg, status="ready")
        if msg.id is not None:
            tx.drop_message_keys(msg.id)  # a buffered message routed again (a key was released) is indexed already
        tx.index_ready_message(msg, self.message_keys(ScopedName(msg.scope, msg.name), msg.payload_object))

    async def flush(self, outbox: Iterable[int]) -> None:
        """Route what processes threw, each message in its own transaction, breadth first."""
        queue = deque(outbox)
        budget = MAX_OUTBOX_PER_REQUEST
        while queue and budget > 0:
            budget -= 1
            message_id = queue.popleft()

            def attempt(tx: Tx, message_id: int = message_id) -> None:
                msg = tx.claim_message(message_id)
                if msg is None:
                    return
                outcome, msg = self.route(tx, msg, ScopedName(msg.scope, msg.name))
                if outcome is None:  # nobody wants it yet: keep it for the first receiver that comes to wait
                    self._keep_ready(tx, msg)

            try:
                done = await self.store.run(attempt)
            except Busy:
                log.warning("message %s stays ready: its receiver stayed busy", message_id)
                continue
            except (DatabaseUnavailable, InsufficientStorage) as exc:
                # the sender's change is committed and its answer must say so; the thrown messages stay ready
                # and unrouted, and the sweep routes them once the database is back (Upkeep.recover)
                log.warning("%d thrown messages stay ready until the database is back: %s", len(queue) + 1, exc)
                self.unflushed.update([message_id, *queue])
                return
            queue.extend(done.outbox)

    async def transact(self, work: Callable[[Tx], T]) -> Committed[T]:
        """``work`` in one transaction, committed; the client's 503 when a lock it needed stayed taken."""
        return await self._answer(self.store.run(work))

    @staticmethod
    async def _answer(transaction: Awaitable[Committed[T]]) -> Committed[T]:
        """A committed transaction, or the client's 503 when a lock it needed stayed taken."""
        try:
            return await transaction
        except Busy as exc:
            raise InstanceBusy(
                "A lock this request needs (the process instance it is for, or the database) stayed taken by "
                "other requests longer than the lock timeout; nothing was written, retry shortly.") from exc
