"""Active keys: one instance per correlation key, decided by the database.

A process whose Message Start Event starts one instance per correlation key holds each key its start message
carried, in a row of ``spiff_active_key``, from the start to the instance's completion. A second start with the
same key inserts the same ``(process, key, values)``: the unique index refuses it (on PostgreSQL after waiting for
the first insert's transaction to end), whatever worker or host it runs on. Statements of the core's start and
settle steps and of the refusal path; they take the transaction (:class:`.Tx`) they run in.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, delete, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..correlation import KeyValue
from . import statements as sql

if TYPE_CHECKING:
    from . import Tx

A, M, K, P = sql.ACTIVE_KEYS, sql.MESSAGES, sql.MESSAGE_KEYS, sql.INSTANCES
HELD = select(A.c.key_name, A.c.values_digest).where(A.c.process_instance_id == bindparam("instance_id"))
RELEASE = delete(A).where(A.c.process_instance_id == bindparam("instance_id"))
DROP_INSTANCE = delete(P).where(P.c.id == bindparam("instance_id"))


@functools.lru_cache(maxsize=4)
def _insert(dialect: str) -> Any:
    insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
    return insert_(A).on_conflict_do_nothing().returning(A.c.id)


def hold(tx: Tx, process_key: str, keys: Sequence[KeyValue], instance_id: int) -> bool:
    """Hold every key for the new instance ``instance_id``; False when an active instance holds one of them
    (then the caller drops the new instance: the transaction writes nothing of it)."""
    rows = [{"process_key": process_key, "key_name": kv.key, "values_digest": kv.digest, "values_json": kv.canonical,
             "process_instance_id": instance_id, "created_at": tx.now} for kv in keys]
    return len(tx.conn.execute(_insert(tx.store.dialect), rows).all()) == len(rows)


def drop_instance(tx: Tx, instance_id: int) -> None:
    """Undo :meth:`.Tx.add_instance` of a start that could not hold its key (and any key it did hold)."""
    tx.conn.execute(delete(A).where(A.c.process_instance_id == instance_id))
    tx.conn.execute(DROP_INSTANCE, {"instance_id": instance_id})


def held(tx: Tx, instance_id: int) -> list[tuple[str, str]]:
    """The keys the instance holds, as (key name, values digest)."""
    rows = tx.conn.execute(HELD, {"instance_id": instance_id})
    return [(str(k), str(d)) for k, d in rows]


def release(tx: Tx, instance_id: int) -> None:
    """The instance completed: its keys are free again."""
    tx.conn.execute(RELEASE, {"instance_id": instance_id})


def holder(tx: Tx, process_key: str, keys: Sequence[KeyValue]) -> int | None:
    """The active instance of ``process_key`` that holds one of ``keys``, if any."""
    if not keys:
        return None
    stmt = (select(A.c.process_instance_id)
            .where(A.c.process_key == process_key,
                   or_(*(and_(A.c.key_name == kv.key, A.c.values_digest == kv.digest) for kv in keys)))
            .order_by(A.c.id).limit(1))
    found = tx.conn.execute(stmt).scalar_one_or_none()
    return int(found) if found is not None else None


def waiting_start(tx: Tx, message_names: Sequence[str], keys: Sequence[tuple[str, str]]) -> int | None:
    """The oldest live buffered message for one of ``message_names`` with one of ``keys``: the start a released
    key lets through next."""
    if not message_names or not keys:
        return None
    stmt = (select(M.c.id).join(K, K.c.message_instance_id == M.c.id)
            .where(K.c.message_name.in_(list(message_names)),
                   or_(*(and_(K.c.key_name == k, K.c.values_digest == d) for k, d in keys)),
                   M.c.status == "ready", or_(M.c.expires_at.is_(None), M.c.expires_at > tx.now))
            .order_by(M.c.id).limit(1))
    found = tx.conn.execute(stmt).scalar_one_or_none()
    return int(found) if found is not None else None


def held_by_completed(tx: Tx) -> list[tuple[int, str]]:
    """(instance id, key name) of keys still held by completed instances (the invariants: there are none)."""
    stmt = (select(A.c.process_instance_id, A.c.key_name).join(P, P.c.id == A.c.process_instance_id)
            .where(P.c.status == "complete").order_by(A.c.id))
    return [(int(i), str(k)) for i, k in tx.conn.execute(stmt)]
