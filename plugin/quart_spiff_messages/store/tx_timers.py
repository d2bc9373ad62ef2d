"""Timers of instances (one row per timer an instance waits at) and timer start events' schedules."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy import delete, func, select, update

from . import statements as sql
from .records import TimerRow, TimerStartRecord, record
from .tx_base import TxBase

TM, TS = sql.TIMERS, sql.TIMER_STARTS


class Timers(TxBase):
    """Queries of ``spiff_timer`` and ``spiff_timer_start``."""

    def sync_timers(self, instance_id: int, timers: Sequence[TimerRow]) -> None:
        """Make the timer index say exactly ``timers`` for the instance (a cycle's row moves to its next due)."""
        if not timers:
            self.conn.execute(sql.DELETE_TIMERS, {"instance_id": instance_id})
            return
        self.conn.execute(sql.DELETE_OTHER_TIMERS,
                          {"instance_id": instance_id, "keep": [(t.task_id, t.element_id) for t in timers]})
        self.conn.execute(sql.upsert_timers(self.store.dialect), [
            {"process_instance_id": instance_id, "task_id": t.task_id, "element_id": t.element_id,
             "timer_type": t.timer_type, "due_at": t.due_at, "created_at": self.now} for t in timers])
        self.due_at(min(t.due_at for t in timers))

    def claim_due_timer(self) -> int | None:
        """The instance of the timer due longest ago, locked; instances another transaction holds are skipped
        (PostgreSQL; SQLite's one writer serializes the claims)."""
        stmt = sql.CLAIM_DUE_TIMER if self.store.dialect == "postgresql" else sql.NEXT_DUE_TIMER
        found = self.conn.execute(stmt, {"now": self.now}).scalar_one_or_none()
        return int(found) if found is not None else None

    def postpone_timers(self, instance_id: int, when: float) -> None:
        """Move the instance's timers that are due now to ``when``."""
        self.conn.execute(update(TM).where(TM.c.process_instance_id == instance_id, TM.c.due_at <= self.now)
                          .values(due_at=when))

    def drop_timers(self, instance_id: int) -> None:
        self.conn.execute(sql.DELETE_TIMERS, {"instance_id": instance_id})

    def instance_timers(self, instance_id: int) -> list[TimerRow]:
        rows = self.conn.execute(select(TM).where(TM.c.process_instance_id == instance_id)
                                 .order_by(TM.c.due_at, TM.c.id)).mappings()
        return [record(TimerRow, r) for r in rows]

    def next_timer_due(self) -> float | None:
        """The nearest due time of any timer or timer start event (None: nothing is scheduled)."""
        timer = self.conn.execute(select(func.min(TM.c.due_at))).scalar_one_or_none()
        start = self.conn.execute(select(func.min(TS.c.next_due))).scalar_one_or_none()
        due = [float(d) for d in (timer, start) if d is not None]
        return min(due) if due else None

    def timers_pending(self) -> int:
        return int(self.conn.execute(select(func.count()).select_from(TM)).scalar_one())

    def timer_starts(self) -> list[TimerStartRecord]:
        rows = self.conn.execute(select(TS).order_by(TS.c.process_key, TS.c.element_id)).mappings()
        return [record(TimerStartRecord, r) for r in rows]

    def put_timer_start(self, rec: TimerStartRecord) -> None:
        """Write a schedule; one that exists is replaced (its expression changed)."""
        self.conn.execute(delete(TS).where(TS.c.process_key == rec.process_key, TS.c.element_id == rec.element_id))
        self.conn.execute(sql.TIMER_STARTS.insert(), dataclasses.asdict(rec))
        if rec.next_due is not None:
            self.due_at(rec.next_due)

    def drop_timer_start(self, process_key: str, element_id: str) -> None:
        self.conn.execute(delete(TS).where(TS.c.process_key == process_key, TS.c.element_id == element_id))

    def claim_due_timer_start(self) -> TimerStartRecord | None:
        """The schedule due longest ago, locked (others skip it on PostgreSQL)."""
        stmt = sql.NEXT_DUE_TIMER_START
        if self.store.dialect == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        found = self.conn.execute(stmt, {"now": self.now}).mappings().first()
        return record(TimerStartRecord, found) if found is not None else None

    def save_timer_start(self, rec: TimerStartRecord) -> None:
        self.conn.execute(update(TS).where(TS.c.process_key == rec.process_key, TS.c.element_id == rec.element_id)
                          .values(next_due=rec.next_due, cycles_left=rec.cycles_left, started=rec.started,
                                  updated_at=self.now))
        if rec.next_due is not None:
            self.due_at(rec.next_due)
