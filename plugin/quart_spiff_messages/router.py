"""The router decides where a message goes: a waiting instance, a new instance, the buffer, or nowhere.

Order: (1) the waiting instance whose subscription matches (exact key before accept-any, oldest first); (2) a
Message Start Event in scope; (3) otherwise the message is refused (``not_accepted``, kept for audit), or, for a
message a process threw, kept ``ready`` until a receiver comes to wait. Each message is one transaction: the
instance it reaches, its new waits, buffered messages those waits take at once, and the outbox of messages the
instance threw are all written together. The outbox is routed right after the commit, each in its own transaction.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError

from . import metrics
from .catalog import Catalog, ProcessEntry, StartPoint
from .correlation import KeyValue, canonical, key_values
from .engine import Engine, Instance
from .names import InvalidName, ScopedName, parse_modified_name
from .store import Busy, MessageFilter, MessageInstance, Page, ProcessInstance, Store, Tx
from .store import WaitRow as _WaitRow

log = logging.getLogger("quart_spiff_messages")
T = TypeVar("T")

# A delivery can make an instance take buffered messages, which can make it wait again: bound the chain.
MAX_CHAINED_DELIVERIES = 100
# Messages thrown by processes routed after one request (a conversation ping-pong is bounded by this).
MAX_OUTBOX_PER_REQUEST = 1000
# Rows the expiry sweep changes per transaction: a delivery that arrives meanwhile waits for at most one batch.
SWEEP_BATCH = 500
SWEEP_PAUSE_SECONDS = 0.02
# Outcome kinds as metric results (a replayed outcome counts as "replayed").
_RESULTS = {"delivered": "delivered", "started": "started", "buffered": "buffered", "not_accepted": "not_accepted",
            "process_error": "error"}


class RouterError(Exception):
    """A request the router refuses; ``error_code`` and ``status`` go to the client unchanged."""

    status = 400
    error_code = "bad_request"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class ProcessNotFound(RouterError):
    status = 404
    error_code = "process_not_found"


class ProcessNotStartable(RouterError):
    error_code = "process_not_startable"


class InstanceNotFound(RouterError):
    status = 404
    error_code = "process_instance_not_found"


class InvalidTimeToLive(RouterError):
    error_code = "invalid_time_to_live"


class InvalidMessageInstanceUuid(RouterError):
    error_code = "invalid_message_instance_uuid"


class MessageInstanceUuidRequired(RouterError):
    error_code = "message_instance_uuid_required"


class MessageInstanceUuidConflict(RouterError):
    status = 409
    error_code = "message_instance_uuid_conflict"


class InstanceBusy(RouterError):
    status = 503
    error_code = "instance_busy"


class MessageNotFound(RouterError):
    status = 404
    error_code = "message_not_found"


class MessageNotCancellable(RouterError):
    status = 409
    error_code = "message_not_cancellable"


_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def normalize_uuid(value: str) -> str:
    """A message_instance_uuid in canonical form, stored lower-case."""
    if len(value) > 40:
        raise InvalidMessageInstanceUuid("message_instance_uuid must be 40 characters or fewer")
    lowered = value.strip().lower()
    if not _UUID.match(lowered):
        raise InvalidMessageInstanceUuid(
            "message_instance_uuid must be a UUID in canonical form (8-4-4-4-12 hexadecimal digits)")
    return lowered


@dataclass
class Outcome:
    """What happened to one message (or one API start)."""

    kind: str  # delivered | started | buffered | not_accepted | process_error
    message: MessageInstance | None
    instance: ProcessInstance | None = None
    task_data: dict[str, Any] | None = None
    reason: str | None = None
    error: dict[str, Any] | None = None
    replayed: bool = False  # the stored outcome of an earlier request with the same message_instance_uuid


@dataclass
class _Work:
    """What one transaction leaves behind for after its commit."""

    outbox: list[int]


class Router:
    def __init__(self, catalog: Catalog, engine: Engine, store: Store, max_ttl_seconds: int = 300) -> None:
        self.catalog = catalog
        self.engine = engine
        self.store = store
        self.max_ttl_seconds = max_ttl_seconds
        self._old_specs: dict[tuple[str, str], ProcessEntry] = {}

    # -- entry points -------------------------------------------------------------------------------------------
    async def send_message(self, modified_name: str, payload: Mapping[str, Any], *, ttl: int = 0,
                           message_instance_uuid: str | None = None) -> Outcome:
        """Route one message. With ``ttl`` > 0 a message nobody takes now is kept until a receiver waits."""
        started, result = time.perf_counter(), "error"
        try:
            outcome = await self._send(modified_name, payload, ttl, message_instance_uuid)
            result = "replayed" if outcome.replayed else _RESULTS.get(outcome.kind, "error")
            return outcome
        except MessageInstanceUuidConflict:
            result = "conflict"
            raise
        except (RouterError, InvalidName) as exc:
            result = "invalid" if getattr(exc, "status", 400) < 500 else "error"
            raise
        finally:
            metrics.observe_send(result, time.perf_counter() - started)

    async def _send(self, modified_name: str, payload: Mapping[str, Any], ttl: int,
                    message_instance_uuid: str | None) -> Outcome:
        scoped = parse_modified_name(modified_name)
        if not 0 <= ttl <= self.max_ttl_seconds:
            raise InvalidTimeToLive(f"time_to_live_in_seconds must be between 0 and {self.max_ttl_seconds}")
        key = normalize_uuid(message_instance_uuid) if message_instance_uuid is not None else None
        if ttl > 0 and key is None:
            raise MessageInstanceUuidRequired(
                "message_instance_uuid is required when time_to_live_in_seconds is greater than 0")
        payload = dict(payload)
        if key is not None:
            replay = await self._replay(key, scoped, payload)
            if replay is not None:
                return replay
        work = _Work([])

        def attempt(tx: Tx) -> Outcome:
            work.outbox.clear()
            # Written once, with its outcome (a delivery writes it earlier: the receive row points to it).
            msg = tx.new_message(name=scoped.name, scope=scoped.group, message_type="send", status="running",
                                 payload=payload, message_instance_uuid=key)
            outcome = self._route(tx, msg, scoped, work)
            if outcome is None and ttl > 0:
                tx.set_message(msg, status="ready", expires_at=tx.now + ttl)
                tx.persist(msg)
                tx.index_ready_message(msg, self._message_keys(scoped, payload))
                return Outcome("buffered", msg)
            if outcome is None:
                reason = self._refusal(scoped)
                tx.set_message(msg, status="not_accepted", failure_cause=reason)
                tx.persist(msg)
                return Outcome("not_accepted", msg, reason=reason)
            return outcome

        try:
            outcome = await self._run(attempt)
        except IntegrityError:
            # Another request inserted the same message_instance_uuid first: answer with its outcome.
            replay = await self._replay(key, scoped, payload) if key is not None else None
            if replay is None:
                raise
            return replay
        await self._flush(work)
        return outcome

    async def _run(self, work: Callable[[Tx], T]) -> T:
        try:
            return await self.store.run(work)
        except Busy as exc:
            raise InstanceBusy(
                "A lock this request needs (the process instance it is for, or the database) stayed taken by "
                "other requests longer than the lock timeout; nothing was written, retry shortly.",
                retry_after=1) from exc

    async def _replay(self, key: str, scoped: ScopedName, payload: dict[str, Any]) -> Outcome | None:
        """The stored outcome of the message sent earlier with this key, or None if there is none."""
        return await self.store.read(lambda tx: self._stored_outcome(tx, key, scoped, payload))

    def _stored_outcome(self, tx: Tx, key: str, scoped: ScopedName, payload: dict[str, Any]) -> Outcome | None:
        """The outcome stored for ``key``; a conflict when it was another message or payload."""
        msg = tx.message_by_uuid(key)
        if msg is None:
            return None
        if (msg.name, msg.scope) != (scoped.name, scoped.group) or not _same_payload(msg.payload, payload):
            raise MessageInstanceUuidConflict(
                "A message with the same message_instance_uuid already exists for a different message or "
                "payload.", message_instance_id=msg.id)
        if msg.status in ("completed", "failed") and msg.counterpart_id is not None:
            receive = tx.message(msg.counterpart_id)
            row = tx.instance(receive.process_instance_id) if receive and receive.process_instance_id \
                else None
            if row is not None:
                inst = self.engine.load(row.state, self._entry(tx, row))
                if msg.status == "failed":
                    return Outcome("process_error", msg, row, self.engine.task_data(inst), error=row.error,
                                   replayed=True)
                return Outcome("delivered", msg, row, self.engine.task_data(inst), replayed=True)
        if msg.status == "not_accepted":
            return Outcome("not_accepted", msg, reason=msg.failure_cause, replayed=True)
        return Outcome("buffered", msg, replayed=True)

    async def cancel_message(self, message_instance_uuid: str) -> MessageInstance:
        """Cancel a buffered message; cancelling a cancelled one is a no-op, a delivered one a 409."""
        key = normalize_uuid(message_instance_uuid)

        def attempt(tx: Tx) -> MessageInstance:
            msg = tx.message_by_uuid(key)
            if msg is None:
                raise MessageNotFound(f"no message with message_instance_uuid {key}")
            if msg.status == "ready":
                if tx.claim_message(msg.id) is not None:
                    tx.set_message(msg, status="cancelled", failure_cause="cancelled by request")
                    tx.drop_message_keys(msg.id)
                    return msg
                tx.session.refresh(msg)  # someone else took it meanwhile
            if msg.status != "cancelled":
                raise MessageNotCancellable(
                    f"message {msg.id} is {msg.status}; only a buffered (ready) message can be cancelled",
                    status_of_message=msg.status)
            return msg

        return await self._run(attempt)

    async def sweep(self, batch: int = SWEEP_BATCH, retention_seconds: float | None = None) -> tuple[int, int]:
        """Mark expired buffered messages cancelled and purge old finished rows, one bounded batch per transaction.

        Returns (expired, purged). Safe to run from several workers at once.
        """
        expired = purged = 0
        while True:
            n = await self.store.run(lambda tx: tx.expire_ready_messages(batch))
            metrics.observe_expired(n)
            expired += n
            if n < batch:
                break
            await self._pause_between_batches()
        if retention_seconds is not None:
            while True:
                n = await self.store.run(lambda tx: tx.purge_finished_messages(tx.now - retention_seconds, batch))
                purged += n
                if n < batch:
                    break
                await self._pause_between_batches()
        return expired, purged

    async def _pause_between_batches(self) -> None:
        """SQLite has one writer: let the deliveries queued behind a sweep batch have it before the next batch."""
        await asyncio.sleep(SWEEP_PAUSE_SECONDS if self.store.dialect == "sqlite" else 0)

    async def start_process(self, modified_process_id: str, data: Mapping[str, Any]) -> Outcome:
        scoped = parse_modified_name(modified_process_id)
        key = f"{scoped.group}/{scoped.name}" if scoped.group else scoped.name
        entry = self.catalog.process(key)
        if entry is None:
            raise ProcessNotFound(f"no process {key!r} in the BPMN folder")
        if not self.engine.has_none_start(entry):
            raise ProcessNotStartable(
                f"process {key!r} has no plain start event; it starts when one of its start messages is sent")
        work = _Work([])

        def attempt(tx: Tx) -> Outcome:
            work.outbox.clear()
            inst = self.engine.new_instance(entry, data)
            row = tx.add_instance(process_key=entry.key, process_id=entry.process_id, group=entry.group,
                                  spec_version=entry.spec_version)
            self._settle(tx, row, inst, work)
            return self._result("started", None, row, inst)

        outcome = await self._run(attempt)
        await self._flush(work)
        return outcome

    async def instance_view(self, instance_id: int) -> tuple[ProcessInstance, dict[str, Any], list[dict[str, Any]]]:
        """An instance with its current data and what it waits for (read from its state, not the index)."""

        def view(tx: Tx) -> tuple[ProcessInstance, dict[str, Any], list[dict[str, Any]]]:
            row = tx.instance(instance_id)
            if row is None:
                raise InstanceNotFound(f"no process instance {instance_id}")
            inst = self.engine.load(row.state, self._entry(tx, row))
            return row, self.engine.task_data(inst), [w.as_json() for w in self.engine.waits(inst)]

        return await self.store.read(view)

    async def metrics(self) -> bytes:
        """The Prometheus text exposition, gauges counted in the database now."""
        buffered, waiting = await self.store.read(lambda tx: tx.gauges())
        return metrics.exposition(buffered, waiting)

    async def list_messages(self, flt: MessageFilter, page: int, per_page: int) -> Page:
        return await self.store.read(lambda tx: tx.list_messages(flt, page, per_page))

    async def list_instances(self, *, status: str | None, process_key: str | None, page: int,
                             per_page: int) -> Page:
        return await self.store.read(
            lambda tx: tx.list_instances(status=status, process_key=process_key, page=page, per_page=per_page))

    # -- routing ------------------------------------------------------------------------------------------------
    def _route(self, tx: Tx, msg: MessageInstance, scoped: ScopedName, work: _Work) -> Outcome | None:
        payload: Mapping[str, Any] = msg.payload if isinstance(msg.payload, Mapping) else {}
        keys = self._message_keys(scoped, payload)
        tx.set_message(msg, correlation_keys={kv.key: dict(kv.values) for kv in keys} or None)
        pairs = sorted({(kv.key, kv.digest) for kv in keys})
        tx.lock_keys(exclusive=[_lock_key(scoped.name, k, d) for k, d in pairs], shared=[_lock_key(scoped.name)])
        for instance_id in tx.find_subscriptions(scoped.name, scoped.group, pairs):
            row = tx.lock_instance(instance_id)
            if row is None or row.status in ("complete", "error"):
                continue
            inst = self.engine.load(row.state, self._entry(tx, row))
            if not self.engine.deliver(inst, scoped.name, payload):
                continue  # the index said yes, SpiffWorkflow said no (e.g. another catch shape): next candidate
            self._received(tx, msg, row, inst)
            self._settle(tx, row, inst, work)
            return self._result("delivered", msg, row, inst)

        start = self._pick_start(scoped)
        if start is not None:
            entry = self.catalog.processes[start.process_key]
            started = self.engine.start_by_message(entry, start, payload)
            if started is not None:
                row = tx.add_instance(process_key=entry.key, process_id=entry.process_id,
                                      group=entry.group, spec_version=entry.spec_version)
                self._received(tx, msg, row, started)
                self._settle(tx, row, started, work)
                return self._result("started", msg, row, started)
        return None

    def _message_keys(self, scoped: ScopedName, payload: Mapping[str, Any]) -> list[KeyValue]:
        """Correlation keys the payload carries, computed with the receiving catches' retrieval expressions."""
        keys: dict[tuple[str, str], KeyValue] = {}
        for shape in self.catalog.catch_shapes(scoped):
            for kv in key_values(shape, payload) or ():
                keys.setdefault((kv.key, kv.digest), kv)
        return list(keys.values())

    def _pick_start(self, scoped: ScopedName) -> StartPoint | None:
        """The Message Start Event nearest to the scope; two equally near in different processes is ambiguous."""
        starts = self.catalog.start_points(scoped)
        if not starts:
            return None
        depth = min(_depth(s.group) for s in starts)
        nearest = {s.process_key: s for s in starts if _depth(s.group) == depth}
        if len(nearest) > 1:
            return None  # refused with a reason that names the candidates (see _refusal)
        return next(iter(nearest.values()))

    def _refusal(self, scoped: ScopedName) -> str:
        starts = self.catalog.start_points(scoped)
        if starts:
            depth = min(_depth(s.group) for s in starts)
            nearest = sorted({s.process_key for s in starts if _depth(s.group) == depth})
            if len(nearest) > 1:
                return (f"Message {scoped.name!r} starts several processes ({', '.join(nearest)}) and no waiting "
                        f"instance correlates: send it with a group prefix to choose one.")
            return (f"Message {scoped.name!r} could not start {nearest[0]!r}: the payload lacks a field its "
                    f"correlation properties read.")
        where = f" in group {scoped.group!r}" if scoped.group else ""
        if not self.catalog.knows_message(scoped.name):
            return f"No process{where} uses message {scoped.name!r}."
        return (f"No waiting process instance{where} correlates with message {scoped.name!r}, and no Message "
                f"Start Event{where} starts on it.")

    def _received(self, tx: Tx, msg: MessageInstance, row: ProcessInstance, inst: Instance) -> None:
        """Record the delivery: a ``receive`` row for the instance, both rows ``completed`` (or ``failed``)."""
        status, cause = "completed", None
        if inst.failure is not None:
            status = "failed"
            cause = f"process instance {row.id} failed in {inst.failure.task}: {inst.failure.message}"
        tx.set_message(msg, status=status, failure_cause=cause)
        tx.persist(msg)
        receive = tx.add_message(name=msg.name, scope=msg.scope, message_type="receive", status=status,
                                 payload=None, correlation_keys=self.engine.correlations(inst),
                                 process_instance_id=row.id, counterpart_id=msg.id, failure_cause=cause)
        tx.set_message(msg, counterpart_id=receive.id)

    def _settle(self, tx: Tx, row: ProcessInstance, inst: Instance, work: _Work) -> None:
        """Index the instance's waits, hand it buffered messages that fit, queue what it threw, save it."""
        for _ in range(MAX_CHAINED_DELIVERIES):
            for thrown in self.engine.drain(inst):
                out = tx.add_message(name=thrown.message_name, scope="", message_type="send", status="ready",
                                     payload=thrown.payload, correlation_keys=thrown.correlations or None,
                                     process_instance_id=row.id)
                work.outbox.append(out.id)
            added = tx.sync_subscriptions(row.id, row.process_group, self._wait_rows(inst))
            if not added or not self._take_buffered(tx, row, inst, added):
                break
        failure = inst.failure
        tx.save_instance(row, state=self.engine.dump(inst), status=self.engine.status(inst),
                         correlations=self.engine.correlations(inst),
                         error=failure.as_json() if failure else None)

    def _take_buffered(self, tx: Tx, row: ProcessInstance, inst: Instance, added: Sequence[_WaitRow]) -> bool:
        """Deliver the oldest ready message that one of the new waits accepts; True if one was delivered."""
        tx.lock_keys(exclusive=[_lock_key(w.message_name, w.key.key, w.key.digest) if w.key
                                else _lock_key(w.message_name) for w in added])
        for cand in tx.ready_messages_for(row.process_group, added):
            claimed = tx.claim_message(cand.id)
            if claimed is None:
                continue
            payload = claimed.payload if isinstance(claimed.payload, Mapping) else {}
            if self.engine.deliver(inst, claimed.name, payload):
                self._received(tx, claimed, row, inst)
                tx.drop_message_keys(claimed.id)
                return True
            tx.set_message(claimed, status="ready")
        return False

    def _wait_rows(self, inst: Instance) -> list[_WaitRow]:
        rows = []
        for w in self.engine.waits(inst):
            if w.accept_any:
                rows.append(_WaitRow(w.task_id, w.element_id, w.message_name, None))
            rows += [_WaitRow(w.task_id, w.element_id, w.message_name, kv) for kv in w.expected]
        return rows

    async def _flush(self, work: _Work) -> None:
        """Route what processes threw, each message in its own transaction, breadth first."""
        queue = deque(work.outbox)
        budget = MAX_OUTBOX_PER_REQUEST
        while queue and budget > 0:
            budget -= 1
            message_id = queue.popleft()
            more = _Work([])

            def attempt(tx: Tx, message_id: int = message_id, more: _Work = more) -> None:
                more.outbox.clear()
                msg = tx.claim_message(message_id)
                if msg is None:
                    return
                outcome = self._route(tx, msg, ScopedName(msg.scope, msg.name), more)
                if outcome is None:  # nobody wants it yet: keep it for the first receiver that comes to wait
                    tx.set_message(msg, status="ready")
                    payload = msg.payload if isinstance(msg.payload, Mapping) else {}
                    tx.index_ready_message(msg, self._message_keys(ScopedName(msg.scope, msg.name), payload))

            try:
                await self.store.run(attempt)
            except Busy:
                log.warning("message %s stays ready: its receiver stayed busy", message_id)
                continue
            queue.extend(more.outbox)

    def with_catalog(self, catalog: Catalog) -> Router:
        """A router for a reloaded catalog. A request keeps the router it started with, so it sees one catalog."""
        router = Router(catalog, self.engine, self.store, self.max_ttl_seconds)
        router._old_specs = self._old_specs  # spec versions never change: share what is loaded
        return router

    async def start_buffered(self) -> int:
        """Start the processes whose Message Start Events take buffered messages (after a reload added some).

        Oldest first, each message in its own transaction, claimed by compare-and-set: several workers may run this
        at once. Returns how many messages were taken.
        """
        names = sorted(self.catalog.starts)
        candidates = await self.store.read(lambda tx: tx.ready_messages_named(names)) if names else []
        taken = 0
        for message_id, name, scope in candidates:
            scoped = ScopedName(scope, name)
            if self._pick_start(scoped) is None:
                continue
            work = _Work([])

            def attempt(tx: Tx, message_id: int = message_id, scoped: ScopedName = scoped,
                        work: _Work = work) -> bool:
                work.outbox.clear()
                msg = tx.claim_message(message_id)
                if msg is None:
                    return False
                live = msg.expires_at is None or msg.expires_at > tx.now
                if not live or self._route(tx, msg, scoped, work) is None:
                    tx.set_message(msg, status="ready")
                    return False
                tx.drop_message_keys(msg.id)
                return True

            try:
                taken += await self.store.run(attempt)
            except Busy:
                log.warning("buffered message %s stays ready: its receiver stayed busy", message_id)
                continue
            await self._flush(work)
        return taken

    async def recover(self) -> int:
        """Route messages processes threw before a crash cut their request short (at start-up; CAS-safe)."""
        pending = await self.store.read(lambda tx: tx.unrouted_thrown_messages())
        await self._flush(_Work(pending))
        return len(pending)

    # -- helpers ------------------------------------------------------------------------------------------------
    def _entry(self, tx: Tx, row: ProcessInstance) -> ProcessEntry:
        """The spec the instance started on: the catalog's if unchanged, else the stored version."""
        entry = self.catalog.process(row.process_key)
        if entry is not None and entry.spec_version == row.spec_version:
            return entry
        cache_key = (row.process_key, row.spec_version)
        if cache_key not in self._old_specs:
            spec_json = tx.spec(row.process_key, row.spec_version)
            if spec_json is None:
                raise RuntimeError(f"spec {row.process_key}@{row.spec_version} of instance {row.id} is gone")
            self._old_specs[cache_key] = self.engine.load_spec(
                ProcessEntry(row.process_key, row.process_id, row.process_group, "", row.spec_version, None, {}),
                spec_json)
        return self._old_specs[cache_key]

    def _result(self, kind: str, msg: MessageInstance | None, row: ProcessInstance, inst: Instance) -> Outcome:
        if inst.failure is not None:
            return Outcome("process_error", msg, row, self.engine.task_data(inst), error=inst.failure.as_json())
        return Outcome(kind, msg, row, self.engine.task_data(inst))


def _lock_key(name: str, key: str = "*", digest: str = "") -> str:
    return f"{name}\x1f{key}\x1f{digest}"


def _same_payload(stored: Any, payload: dict[str, Any]) -> bool:
    try:
        return isinstance(stored, dict) and canonical(stored) == canonical(payload)
    except TypeError:
        return False


def _depth(group: str) -> int:
    return len(group.split("/")) if group else 0
