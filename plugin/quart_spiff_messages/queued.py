"""Messages accepted with ``execution_mode=asynchronous``: routed by the work loop of any worker, exactly once.

The accept wrote the message (``running``) and a row of ``spiff_message_queue`` in one transaction. A round claims
the oldest queued message of each correlation key (so per key the order of arrival is kept; rows another worker is
routing are skipped on PostgreSQL, and their successors wait behind them), and routes several of them in one
transaction through the router and the core, as a synchronous send would: each in a savepoint of its own, so one
that fails is rolled back alone. Routing a message deletes its queue row in the same savepoint: a crash before the
commit leaves the row for the next round (this worker's after a restart, or another's), a commit leaves none.
A message whose accept reserved a ``not_started`` instance starts exactly that one (:meth:`.Router.route_reserved`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .names import ScopedName
from .router import Router
from .store import Busy, MessageRecord, Tx, fault, reserved

log = logging.getLogger("quart_spiff_messages")
# The longest a round of routing waits for the accepts under way (under a flood it goes on anyway).
ACCEPTS_FIRST_SECONDS = 0.05


class Queued:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.store = router.store

    async def route_all(self, batch: int, limit: int) -> int:
        """Rounds of :meth:`route_round` until the queue is empty or ``limit`` messages were routed; each round
        waits for this worker's accepts under way (up to :data:`ACCEPTS_FIRST_SECONDS`) and is a single message
        while some are, so a burst is answered first and routed right behind it, in full batches."""
        if not await self.store.read(lambda tx: tx.queued_count(1)):  # nothing queued: no writing transaction
            return 0
        done = 0
        while done < limit:
            accepts = self.router.accepts
            await accepts.let_pass(ACCEPTS_FIRST_SECONDS)
            # a round holds SQLite's one writer: while accepts keep coming it is one message, so none waits long
            routed = await self.route_round(1 if accepts.busy() else batch)
            if not routed:
                break
            done += routed
        return done

    async def route_round(self, batch: int) -> int:
        """Route up to ``batch`` queued messages in one transaction; how many left the queue."""

        def attempt(tx: Tx) -> int:
            routed = 0
            for queued in tx.claim_queued(batch):
                assert queued.id is not None
                message_id = queued.id
                try:
                    with tx.savepoint():
                        self._route(tx, queued)
                    routed += 1
                except Exception as exc:
                    kind = fault(exc)
                    if kind in ("busy", "conflict"):  # its instance stayed busy: the next round takes it
                        log.info("queued message %s waits for a busy instance", message_id)
                        continue
                    if kind is not None:  # the database is gone or full: the whole round is retried
                        raise
                    log.exception("routing queued message %s failed; it is marked failed", message_id)
                    with tx.savepoint():
                        self._fail(tx, message_id, f"routing failed: {type(exc).__name__}: {exc}")
                    routed += 1
            return routed

        try:
            done = await self.store.run(attempt)
        except Busy:
            return 0
        await self.router.flush(done.outbox)
        return done.value

    def _route(self, tx: Tx, msg: MessageRecord) -> None:
        """Route one claimed message (as read by the claim: only its routing changes a ``running`` message)."""
        assert msg.id is not None
        tx.dequeue(msg.id)
        if msg.status != "running":  # routed or failed before a crash left its queue row (none is left otherwise)
            return
        scoped = ScopedName(msg.scope, msg.name)
        # an outside message links an instance only when its accept reserved one for it (thrown ones are not queued)
        route = self.router.route if msg.process_instance_id is None else self.router.route_reserved
        outcome, msg = route(tx, msg, scoped)
        if outcome is None:
            self.router.unrouted(tx, msg, scoped, msg.expires_at)

    @staticmethod
    def _fail(tx: Tx, message_id: int, cause: str) -> None:
        tx.dequeue(message_id)
        msg = tx.message(message_id)
        if msg is not None:
            tx.update_message(msg, status="failed", failure_cause=cause[:2000])
            if msg.process_instance_id is not None:  # its reserved instance is never started: it ends
                reserved.terminate(tx, msg.process_instance_id, f"its start message failed: {cause[:1000]}", msg.id)

    async def pending(self) -> int:
        """How many accepted messages wait to be routed."""
        return await self.store.read(lambda tx: tx.queued_count())


class Wake:
    """Wakes the routing loop when this worker queued a message; a wake while it routes is not lost (its next
    sleep returns at once)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ring(self) -> None:
        self._event.set()

    async def sleep(self, longest: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._event.wait(), longest)
        self._event.clear()
