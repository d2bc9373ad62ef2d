"""Upkeep: work nobody's request waits for. The expiry sweep, routing what a crash left unrouted, and starting
processes that a reloaded catalog gives to buffered messages. Each goes through the router and the core."""

from __future__ import annotations

import asyncio
import logging

from . import metrics
from .names import ScopedName
from .router import Router
from .store import Busy, Tx

log = logging.getLogger("quart_spiff_messages")

# Rows the expiry sweep changes per transaction: a delivery that arrives meanwhile waits for at most one batch.
SWEEP_BATCH = 500
SWEEP_PAUSE_SECONDS = 0.02


class Upkeep:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.store = router.store

    async def sweep(self, batch: int = SWEEP_BATCH, retention_seconds: float | None = None) -> tuple[int, int]:
        """Mark expired buffered messages cancelled and purge old finished rows, one bounded batch per transaction;
        first route what a flush left when the database was away.

        Returns (expired, purged). Safe to run from several workers at once.
        """
        if self.router.unflushed:  # thrown while the database was away: route them now it answers
            pending = sorted(self.router.unflushed)
            self.router.unflushed.difference_update(pending)
            await self.router.flush(pending)
        expired = purged = 0
        while True:
            n = await self.store.write(lambda tx: self._expire(tx, batch))
            metrics.observe_expired(n)
            expired += n
            if n < batch:
                break
            await self._pause_between_batches()
        if retention_seconds is not None:
            while True:
                n = await self.store.write(lambda tx: tx.purge_finished_messages(tx.now - retention_seconds, batch))
                purged += n
                if n < batch:
                    break
                await self._pause_between_batches()
            while await self.store.write(lambda tx: tx.purge_events(tx.now - retention_seconds, batch)) == batch:
                await self._pause_between_batches()  # the event feed keeps what the messages keep
        return expired, purged

    @staticmethod
    def _expire(tx: Tx, batch: int) -> int:
        ids = tx.expire_ready_messages(batch)
        for message_id in ids:
            tx.record_event("message_expired", None, message_id)
        return len(ids)

    async def _pause_between_batches(self) -> None:
        """SQLite has one writer: let the deliveries queued behind a sweep batch have it before the next batch."""
        await asyncio.sleep(SWEEP_PAUSE_SECONDS if self.store.dialect == "sqlite" else 0)

    async def recover(self) -> int:
        """Route messages processes threw before a crash cut their request short (at start-up; CAS-safe)."""
        pending = await self.store.read(lambda tx: tx.unrouted_thrown_messages())
        await self.router.flush(pending)
        return len(pending)

    async def start_buffered(self) -> int:
        """Start the processes whose Message Start Events take buffered messages (after a reload added some).

        Oldest first, each message in its own transaction, claimed by compare-and-set: several workers may run this
        at once. Returns how many messages were taken.
        """
        catalog = self.router.catalog
        names = sorted(catalog.starts)
        candidates = await self.store.read(lambda tx: tx.ready_messages_named(names)) if names else []
        taken = 0
        for message_id, name, scope in candidates:
            scoped = ScopedName(scope, name)
            if catalog.pick_start(scoped) is None:
                continue

            def attempt(tx: Tx, message_id: int = message_id, scoped: ScopedName = scoped) -> bool:
                msg = tx.claim_message(message_id)
                if msg is None:
                    return False
                live = msg.expires_at is None or msg.expires_at > tx.now
                outcome = self.router.route(tx, msg, scoped)[0] if live else None
                if outcome is None:
                    tx.update_message(msg, status="ready")
                    return False
                tx.drop_message_keys(message_id)
                return True

            try:
                done = await self.store.run(attempt)
            except Busy:
                log.warning("buffered message %s stays ready: its receiver stayed busy", message_id)
                continue
            taken += done.value
            await self.router.flush(done.outbox)
        return taken
