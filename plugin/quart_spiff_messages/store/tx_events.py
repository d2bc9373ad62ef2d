"""The durable event feed: written in each change's own transaction, read gap-free."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, or_, select

from ..events import Event
from . import statements as sql
from .tx_base import TxBase


class Events(TxBase):
    """Queries of ``spiff_event``."""

    def record_event(self, kind: str, instance_id: int | None = None, message_id: int | None = None,
                     **data: Any) -> None:
        """An event of this transaction: written to the feed with it, signalled after its commit."""
        self.events.append(Event(kind, instance_id, message_id, data, created_at=self.now))

    def write_events(self) -> None:
        """Write this transaction's events to the feed (their order: see :meth:`events_after`).

        On PostgreSQL each row carries the id of the transaction writing it, read by the insert itself; no lock is
        taken, so writers of different instances never wait for each other here.
        """
        stmt = sql.INSERT_EVENT_PG if self.store.dialect == "postgresql" else sql.INSERT_EVENT
        self.conn.execute(stmt, [
            {"kind": e.kind, "process_instance_id": e.process_instance_id,
             "message_instance_id": e.message_instance_id, "data": dict(e.data), "created_at": self.now}
            for e in self.events])

    def events_after(self, after: int, limit: int) -> list[Event]:
        """The feed's events after event ``after`` (0: from the start), in feed order: (transaction, id).

        The gap-free rule: on PostgreSQL a reader sees only rows of transactions older than the oldest transaction
        still in flight (``pg_snapshot_xmin`` of its own snapshot). Every such transaction has ended, and every
        transaction that starts later gets a greater id, so no row can later appear before the reader's cursor:
        a row that commits late is seen late, never skipped. Ids within one transaction are in insert order; on
        SQLite (one writer) ``xact`` is 0 and ids are commit order. The cursor stays the numeric id of the last
        event seen: its (transaction, id) is looked up; an id purged meanwhile falls back to ``id > after``.
        """
        E = sql.EVENTS
        cond: list[Any] = []
        if after:
            at = self.conn.execute(select(E.c.xact).where(E.c.id == after)).scalar_one_or_none()
            if at is None:
                cond.append(E.c.id > after)
            else:
                cond.append(or_(E.c.xact > at, and_(E.c.xact == at, E.c.id > after)))
        if self.store.dialect == "postgresql":
            cond.append(E.c.xact < sql.OLDEST_XACT_IN_FLIGHT)
        rows = self.conn.execute(select(E).where(*cond).order_by(E.c.xact, E.c.id).limit(limit)).mappings()
        return [Event(r["kind"], r["process_instance_id"], r["message_instance_id"], r["data"], r["id"],
                      r["created_at"]) for r in rows]

    def instance_events(self, instance_id: int, limit: int) -> list[Event]:
        """An instance's latest ``limit`` events, newest first (the index on instance and id answers it)."""
        rows = self.conn.execute(select(sql.EVENTS).where(sql.EVENTS.c.process_instance_id == instance_id)
                                 .order_by(sql.EVENTS.c.id.desc()).limit(limit)).mappings()
        return [Event(r["kind"], r["process_instance_id"], r["message_instance_id"], r["data"], r["id"],
                      r["created_at"]) for r in rows]

    def purge_events(self, before: float, batch: int) -> int:
        """Delete up to ``batch`` events older than ``before`` (the messages' retention)."""
        old = select(sql.EVENTS.c.id).where(sql.EVENTS.c.created_at < before).order_by(sql.EVENTS.c.id).limit(batch)
        ids = list(self.conn.execute(old).scalars())
        if ids:
            self.conn.execute(delete(sql.EVENTS).where(sql.EVENTS.c.id.in_(ids)))
        return len(ids)
