"""Timers: fire what is due, through the core, one instance per transaction, exactly once.

An instance's timers are rows of ``spiff_timer`` (written and removed by the core's settle step with the instance),
claimed oldest due first (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so workers share the work; SQLite's one writer
serializes claims). Firing is :class:`~.core.FireTimers` through :meth:`Core.apply`: the instance is locked and
loaded, every timer still due fires, it runs, settles and is saved in the claim's transaction. A crash rolls it back
and another worker (or the next start) claims the row again; a timer whose task stopped waiting has no row left.

Timer start events have a schedule row each (``spiff_timer_start``), kept by :meth:`Timers.schedule_starts` at
start-up and after a reload; a start and the schedule's step to its next due time are one transaction, so each due
time starts one instance across every worker and host.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math

from . import metrics
from .clock import Clock
from .core import FireTimers, StartByTimer
from .router import Router
from .store import AlreadyExists, Busy, TimerStartRecord, Tx

log = logging.getLogger("quart_spiff_messages")

# Instances fired per round before the loop looks at the clock again (a burst never starves the other upkeep).
FIRE_BATCH = 1000
# A timer SpiffWorkflow did not fire although it is due is looked at again this much later (never in a hot loop).
STUCK_RETRY_SECONDS = 5.0


class Timers:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.core = router.core
        self.store = router.store

    async def fire_all_due(self) -> int:
        """:meth:`fire_due` until nothing is due any more, waiting for what other transactions (this app's timer
        loop, another worker) are firing meanwhile: when it returns, every timer due when it was called has fired.
        """
        done = 0
        while True:
            done += await self.fire_due()
            due = await self.store.read(lambda tx: (tx.next_timer_due() or math.inf) <= tx.now)
            if not due:
                return done
            await asyncio.sleep(0.01)

    async def fire_due(self, limit: int = FIRE_BATCH) -> int:
        """Fire the timers and timer start events due now, each instance in its own transaction; returns how many
        instances were fired or started. Safe to run from several workers at once."""
        done = 0
        while done < limit:
            fired = await self._fire_one()
            if fired is None:
                break
            done += 1
        while done < limit:
            started = await self._start_one()
            if started is None:
                break
            done += 1
        return done

    async def _fire_one(self) -> int | None:
        """Claim the timer due longest ago and fire its instance; None when nothing is due (or it stays busy)."""

        def attempt(tx: Tx) -> int | None:
            instance_id = tx.claim_due_timer()
            if instance_id is None:
                return None
            applied = self.core.apply(tx, FireTimers(), instance_id)
            if applied is None:  # the instance is gone or finished: its rows are left over
                tx.drop_timers(instance_id)
                return 0
            stuck = [t for t in tx.instance_timers(instance_id) if t.due_at <= tx.now]
            if stuck:
                log.warning("process instance %s: timers %s are due but did not fire; trying again in %g s",
                            instance_id, [t.element_id for t in stuck], STUCK_RETRY_SECONDS)
                tx.postpone_timers(instance_id, tx.now + STUCK_RETRY_SECONDS)
            return len(applied.timers_fired)

        try:
            committed = await self.store.run(attempt)
        except Busy:
            log.info("a due timer's instance stayed busy; it fires on the next round")
            return None
        if committed.value:
            metrics.observe_timers_fired("instance", committed.value)
        await self.router.flush(committed.outbox)
        return committed.value

    async def _start_one(self) -> int | None:
        """Start an instance through the timer start event due longest ago; None when none is due."""
        catalog = self.router.catalog

        def attempt(tx: Tx) -> int | None:
            schedule = tx.claim_due_timer_start()
            if schedule is None:
                return None
            entry = catalog.process(schedule.process_key)
            applied = self.core.apply(tx, StartByTimer(entry, schedule.element_id)) if entry is not None else None
            tx.save_timer_start(next_step(schedule, tx.now))
            return 1 if applied is not None else 0

        try:
            committed = await self.store.run(attempt)
        except Busy:
            return None
        metrics.observe_timers_fired("start", committed.value or 0)
        await self.router.flush(committed.outbox)
        return committed.value

    async def schedule_starts(self) -> int:
        """Give every timer start event of the catalog its schedule (kept as it is when its expression did not
        change, so a restart neither repeats nor skips a due time) and drop the schedules of the ones gone.
        Returns how many schedules there are."""
        catalog, engine = self.router.catalog, self.core.engine

        def attempt(tx: Tx) -> int:
            have = {(s.process_key, s.element_id): s for s in tx.timer_starts()}
            for point in catalog.timer_starts:
                current = have.pop((point.process_key, point.element_id), None)
                if current is not None and current.expression == point.expression:
                    continue
                try:
                    plan = engine.start_schedule(catalog.processes[point.process_key], point.element_id, tx.now)
                except ValueError as exc:
                    log.error("%s; it starts nothing", exc)
                    continue
                tx.put_timer_start(TimerStartRecord(
                    point.process_key, point.element_id, point.expression, plan.first_due, plan.cycles,
                    plan.interval_seconds, 0, tx.now))
            for key, element_id in have:
                tx.drop_timer_start(key, element_id)
            return len(catalog.timer_starts)

        try:
            return await self.store.write(attempt)
        except AlreadyExists:  # another worker wrote the same schedules at the same moment: keep theirs
            return await self.store.write(attempt)


def next_step(schedule: TimerStartRecord, now: float) -> TimerStartRecord:
    """The schedule after one start: one cycle fewer, due one interval later. Due times missed while no worker
    ran are not each made up for: a schedule that is still behind jumps to its latest due time at or before now
    (counted as spent), so one start stands for them, and the rhythm goes on from there."""
    left = schedule.cycles_left - 1 if schedule.cycles_left > 0 else schedule.cycles_left
    due = schedule.next_due
    interval = schedule.interval_seconds
    if left == 0 or due is None or interval <= 0:
        return dataclasses.replace(schedule, next_due=None, cycles_left=0, started=schedule.started + 1)
    due += interval
    if due <= now:
        behind = math.floor((now - due) / interval)
        if left > 0:
            behind = min(behind, left - 1)
            left -= behind
        due += behind * interval
    return dataclasses.replace(schedule, next_due=due, cycles_left=left, started=schedule.started + 1)


class Alarm:
    """When the timer loop wakes: at the nearest due time, at the latest every ``interval`` seconds (due times
    other workers wrote), and at once when this worker commits a timer due sooner than the loop's next wake."""

    def __init__(self, clock: Clock, interval: float) -> None:
        self.clock = clock
        self.interval = interval
        self._event = asyncio.Event()
        self._wake_at = math.inf

    def due(self, when: float) -> None:
        """A commit wrote a timer due at ``when`` (``Store.on_due``)."""
        if when < self._wake_at:
            self._event.set()

    def ring(self) -> None:
        """Wake now (the clock was moved)."""
        self._event.set()

    async def sleep(self, next_due: float | None) -> None:
        """Sleep until ``next_due`` (or the interval), or until woken."""
        now = self.clock()
        delay = self.interval if next_due is None else min(self.interval, max(0.0, next_due - now))
        self._wake_at = now + delay
        self._event.clear()
        try:
            await asyncio.wait_for(self._event.wait(), delay)
        except asyncio.TimeoutError:
            pass
        finally:
            self._wake_at = math.inf
