"""Message rows (sent, received, buffered, refused) and the correlation keys of buffered ones."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update

from ..correlation import KeyValue
from ..names import ancestor_groups
from . import statements as sql
from .records import MessageRecord, WaitRow, record
from .tx_base import TxBase

M, K = sql.MESSAGES, sql.MESSAGE_KEYS
FINISHED = ("completed", "cancelled", "not_accepted", "failed")


class Messages(TxBase):
    """Queries of ``spiff_message_instance`` and ``spiff_message_key``."""

    def draft_message(self, **fields: Any) -> MessageRecord:
        """A message not written yet: the router fills in its outcome, then :meth:`save_message` writes it once."""
        values: dict[str, Any] = {c: None for c in sql.MESSAGE_COLUMNS}
        values.update(fields)  # created_at and updated_at: when it is written (the time may not be read yet)
        return MessageRecord(id=None, **values)

    def save_message(self, row: MessageRecord, with_id: int | None = None) -> MessageRecord:
        """Write a drafted message now (its id is needed); a written one is returned unchanged. ``with_id``: the
        id of the wait the row ends (a receive row keeps the id its wait was listed with)."""
        if row.id is not None:
            return row
        row = dataclasses.replace(row, created_at=row.created_at or self.now, updated_at=row.updated_at or self.now)
        values = {c: getattr(row, c) for c in sql.MESSAGE_COLUMNS}
        if with_id is None and self.store.dialect != "postgresql" and self._next_id is None:
            new_id = int(self.conn.execute(sql.INSERT_MESSAGE_AFTER_LAST, values).scalar_one())
            self._next_id = new_id + 1  # the space's next id, as :meth:`fresh_ids` hands them out
            return dataclasses.replace(row, id=new_id)
        if with_id is None:
            fresh = self.fresh_ids(1)
            with_id = fresh[0] if fresh is not None else None
        if with_id is not None:
            values["id"] = with_id
        return dataclasses.replace(row, id=int(self.conn.execute(sql.INSERT_MESSAGE, values).scalar_one()))

    def add_message(self, with_id: int | None = None, **fields: Any) -> MessageRecord:
        """Draft and write a message at once."""
        return self.save_message(self.draft_message(**fields), with_id)

    def add_receive(self, instance_id: int, task_id: str, **fields: Any) -> MessageRecord:
        """Write the receive row of the wait of ``task_id`` that a message ends: with the id the wait is listed
        with while it is indexed (read by the insert itself, no round trip of its own), else a fresh one."""
        row = self.draft_message(**fields)
        row = dataclasses.replace(row, created_at=row.created_at or self.now, updated_at=row.updated_at or self.now)
        values: dict[str, Any] = {c: getattr(row, c) for c in sql.MESSAGE_COLUMNS}
        values.update(wait_instance=instance_id, wait_task=task_id, wait_message=row.name)
        if self.store.dialect == "postgresql":
            stmt = sql.INSERT_RECEIVE_PG
        else:
            fresh = self.fresh_ids(1)
            assert fresh is not None
            stmt, values["fresh_id"] = sql.INSERT_RECEIVE, fresh[0]
        return dataclasses.replace(row, id=int(self.conn.execute(stmt, values).scalar_one()))

    def update_message(self, row: MessageRecord, **changes: Any) -> MessageRecord:
        """Change a message: written at once if the row exists, kept in the draft otherwise."""
        if row.id is not None:
            changes["updated_at"] = self.now
            self.conn.execute(sql.update_message(tuple(sorted(changes))), {**changes, "_id": row.id})
        return dataclasses.replace(row, **changes)

    def message(self, message_id: int) -> MessageRecord | None:
        found = self.conn.execute(sql.SELECT_MESSAGE, {"id": message_id}).mappings().first()
        return record(MessageRecord, found) if found is not None else None

    def message_by_uuid(self, key: str) -> MessageRecord | None:
        found = self.conn.execute(select(M).where(M.c.message_instance_uuid == key)).mappings().first()
        return record(MessageRecord, found) if found is not None else None

    def unrouted_thrown_messages(self, limit: int = 10_000) -> list[int]:
        """Messages processes threw that were never routed (no correlation keys indexed yet)."""
        indexed = select(K.c.id).where(K.c.message_instance_id == M.c.id).exists()
        stmt = (select(M.c.id)
                .where(M.c.status == "ready", M.c.message_type == "send", M.c.process_instance_id.is_not(None),
                       ~indexed)
                .order_by(M.c.id).limit(limit))
        return [int(i) for i in self.conn.execute(stmt).scalars()]

    def ready_messages_named(self, names: Sequence[str], limit: int = 10_000) -> list[tuple[int, str, str]]:
        """(id, name, scope) of live ready messages with one of ``names``, oldest first."""
        stmt = (select(M.c.id, M.c.name, M.c.scope)
                .where(M.c.status == "ready", M.c.name.in_(list(names)),
                       or_(M.c.expires_at.is_(None), M.c.expires_at > self.now))
                .order_by(M.c.id).limit(limit))
        return [(int(i), str(n), str(g)) for i, n, g in self.conn.execute(stmt)]

    def expire_ready_messages(self, batch: int) -> list[int]:
        """Mark up to ``batch`` expired ready messages ``cancelled`` (``failure_cause`` "expired"); their ids."""
        due = (select(M.c.id).where(M.c.status == "ready", M.c.expires_at <= self.now)
               .order_by(M.c.expires_at).limit(batch))
        if self.store.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        ids = [int(i) for i in self.conn.execute(due).scalars()]
        if not ids:
            return []
        self.conn.execute(update(M).where(M.c.id.in_(ids), M.c.status == "ready")
                          .values(status="cancelled", failure_cause="expired", updated_at=self.now))
        self.conn.execute(delete(K).where(K.c.message_instance_id.in_(ids)))
        return ids

    def purge_finished_messages(self, before: float, batch: int) -> int:
        """Delete up to ``batch`` finished messages last changed before ``before``."""
        old = (select(M.c.id).where(M.c.status.in_(FINISHED), M.c.updated_at < before)
               .order_by(M.c.updated_at).limit(batch))
        if self.store.dialect == "postgresql":
            old = old.with_for_update(skip_locked=True)
        ids = list(self.conn.execute(old).scalars())
        if ids:
            self.conn.execute(delete(K).where(K.c.message_instance_id.in_(ids)))
            self.conn.execute(delete(M).where(M.c.id.in_(ids)))
        return len(ids)

    def claim_message(self, message_id: int) -> MessageRecord | None:
        """Take a ``ready`` message for routing (compare-and-set), or None if someone else has it."""
        found = self.conn.execute(sql.CLAIM_MESSAGE, {"_id": message_id, "now": self.now}).mappings().first()
        return record(MessageRecord, found) if found is not None else None

    def drop_message_keys(self, message_id: int) -> None:
        self.conn.execute(sql.DELETE_MESSAGE_KEYS, {"id": message_id})

    def index_ready_message(self, row: MessageRecord, keys: Iterable[KeyValue]) -> None:
        """Record the keys of a message left ``ready`` so a receiver that comes to wait later finds it."""
        rows = [{"message_instance_id": row.id, "message_name": row.name, "key_name": key, "values_digest": digest}
                for key, digest in sorted({(kv.key, kv.digest) for kv in keys})]
        if rows:
            self.conn.execute(sql.INSERT_MESSAGE_KEY, rows)

    def ready_messages_for(self, group: str, waits: Sequence[WaitRow], limit: int = 8) -> list[MessageRecord]:
        """Ready messages an instance in ``group`` that now waits for ``waits`` could take; exact first, FIFO."""
        live = and_(M.c.status == "ready", M.c.scope.in_(ancestor_groups(group)),
                    or_(M.c.expires_at.is_(None), M.c.expires_at > self.now))
        exact = sorted({(w.message_name, w.key.key, w.key.digest) for w in waits if w.key is not None})
        keyed: list[MessageRecord] = []
        for name, key, dig in exact:  # one index seek per key
            stmt = (select(M).join(K, K.c.message_instance_id == M.c.id)
                    .where(K.c.message_name == name, K.c.key_name == key, K.c.values_digest == dig, live)
                    .order_by(K.c.id).limit(limit))
            keyed += (record(MessageRecord, r) for r in self.conn.execute(stmt).mappings())
        found: dict[int | None, MessageRecord] = {}
        for m in sorted(keyed, key=lambda m: m.id or 0):
            found.setdefault(m.id, m)
        anyname = sorted({w.message_name for w in waits if w.key is None})
        if anyname:
            stmt = select(M).where(M.c.name.in_(anyname), live).order_by(M.c.id).limit(limit)
            for r in self.conn.execute(stmt).mappings():
                found.setdefault(r["id"], record(MessageRecord, r))
        return list(found.values())

    def messages_left_running(self) -> list[MessageRecord]:
        """Messages in ``running`` that no transaction routes and none is queued to route (none may be)."""
        queued = select(sql.QUEUE.c.id).where(sql.QUEUE.c.message_instance_id == M.c.id).exists()
        rows = self.conn.execute(select(M).where(M.c.status == "running", ~queued).order_by(M.c.id)).mappings()
        return [record(MessageRecord, r) for r in rows]

    def deliveries_without_one_receive(self) -> list[tuple[int, int]]:
        """(send id, receive rows) for delivered sends that do not have exactly one receive row."""
        receives = (select(M.c.counterpart_id.label("send_id"), func.count().label("n"))
                    .where(M.c.message_type == "receive").group_by(M.c.counterpart_id).subquery())
        stmt = (select(M.c.id, func.coalesce(receives.c.n, 0))
                .outerjoin(receives, receives.c.send_id == M.c.id)
                .where(M.c.message_type == "send", M.c.status.in_(("completed", "failed")),
                       M.c.counterpart_id.is_not(None), func.coalesce(receives.c.n, 0) != 1))
        return [(int(i), int(n)) for i, n in self.conn.execute(stmt)]
