"""The queue of messages accepted asynchronously: written with the message, routed by the work loop."""

from __future__ import annotations

from sqlalchemy import func, select

from . import statements as sql
from .records import MessageRecord, record
from .tx_base import TxBase


class Queue(TxBase):
    """Queries of ``spiff_message_queue``."""

    def enqueue(self, message_id: int, order_key: str | None) -> None:
        """Queue a written message for the work loop (``order_key``: its arrival order is kept per key)."""
        self.conn.execute(sql.INSERT_QUEUED, {"message_instance_id": message_id, "order_key": order_key,
                                              "created_at": self.now})

    def claim_queued(self, limit: int) -> list[MessageRecord]:
        """Up to ``limit`` queued messages to route now, oldest first: the oldest of each order key only, none
        another transaction is routing (PostgreSQL, locked until commit; SQLite's one writer serializes)."""
        stmt = sql.CLAIM_QUEUE_HEADS if self.store.dialect == "postgresql" else sql.QUEUE_HEADS
        return [record(MessageRecord, row) for row in self.conn.execute(stmt, {"limit": limit}).mappings()]

    def dequeue(self, message_id: int) -> None:
        self.conn.execute(sql.DELETE_QUEUED, {"id": message_id})

    def queued_count(self, limit: int | None = None) -> int:
        """How many messages are queued (counted up to ``limit``)."""
        rows = select(sql.QUEUE.c.id).limit(limit).subquery() if limit is not None else sql.QUEUE
        return int(self.conn.execute(select(func.count()).select_from(rows)).scalar_one())
