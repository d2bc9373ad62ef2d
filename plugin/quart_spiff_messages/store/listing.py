"""The message list: stored message rows and the receivers waiting now, in one newest-first order.

A catch an instance waits at is listed as a ``receive`` row with status ``ready`` and the correlation keys it
waits for, as Spiff Arena lists its waiting receivers. It is read from the subscription index at the moment of
the query, not written as a row: a wait is indexed once already, and a second copy could disagree with it. Such
a row's ``id`` is its first subscription row's id: messages and subscription rows take their ids from one space
(one sequence on PostgreSQL, :meth:`Tx.fresh_ids` on SQLite), so it is never a stored message's id. On delivery
the wait leaves the index and the stored ``receive`` row (``completed``) takes its place with the same id; a wait
that ends otherwise is stored as a ``cancelled`` receive row, with the same id too (:mod:`.receivers`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, literal, select, tuple_, union_all

from ..names import group_path
from . import statements as sql
from .records import MessageRecord, Page, record

if TYPE_CHECKING:
    from . import Tx

M, P, S = sql.MESSAGES, sql.INSTANCES, sql.SUBSCRIPTIONS


@dataclass(frozen=True)
class MessageFilter:
    name: str | None = None
    statuses: Sequence[str] | None = None
    message_types: Sequence[str] | None = None
    process_instance_id: int | None = None
    created_after: float | None = None
    created_before: float | None = None
    process_model_identifier: str | None = None  # rows of instances of this process (key ``group/process_id``)


@dataclass(frozen=True)
class ListedMessage:
    """A row of the list: the message, and the process of its instance (None for a message sent from outside)."""

    message: MessageRecord
    process_key: str | None
    process_id: str | None


def _wants(values: Sequence[str] | None, value: str) -> bool:
    return values is None or len(values) == 0 or value in values


def _message_ids(flt: MessageFilter) -> Any:
    cond: list[Any] = []
    if flt.name:
        cond.append(M.c.name == flt.name)
    if flt.statuses:
        cond.append(M.c.status.in_(list(flt.statuses)))
    if flt.message_types:
        cond.append(M.c.message_type.in_(list(flt.message_types)))
    if flt.process_instance_id is not None:
        cond.append(M.c.process_instance_id == flt.process_instance_id)
    if flt.created_after is not None:
        cond.append(M.c.created_at >= flt.created_after)
    if flt.created_before is not None:
        cond.append(M.c.created_at <= flt.created_before)
    stmt = select(M.c.id.label("id"), M.c.created_at.label("created_at"), literal(0).label("waiting"))
    if flt.process_model_identifier is not None:
        stmt = stmt.join(P, P.c.id == M.c.process_instance_id).where(P.c.process_key == flt.process_model_identifier)
    return stmt.where(*cond)


def _wait_ids(flt: MessageFilter) -> Any | None:
    """One row per waiting catch (instance, task, message name): its id and when it began to wait."""
    if not (_wants(flt.statuses, "ready") and _wants(flt.message_types, "receive")):
        return None
    created = func.min(S.c.created_at)
    stmt = select(func.min(S.c.id).label("id"), created.label("created_at"), literal(1).label("waiting"))
    if flt.process_model_identifier is not None:
        stmt = stmt.join(P, P.c.id == S.c.process_instance_id).where(P.c.process_key == flt.process_model_identifier)
    if flt.name:
        stmt = stmt.where(S.c.message_name == flt.name)
    if flt.process_instance_id is not None:
        stmt = stmt.where(S.c.process_instance_id == flt.process_instance_id)
    stmt = stmt.group_by(S.c.process_instance_id, S.c.task_id, S.c.message_name)
    if flt.created_after is not None:
        stmt = stmt.having(created >= flt.created_after)
    if flt.created_before is not None:
        stmt = stmt.having(created <= flt.created_before)
    return stmt


def list_messages(tx: Tx, flt: MessageFilter, page: int, per_page: int) -> Page[ListedMessage]:
    """Messages and waiting receivers matching ``flt``, newest first (then by id, descending)."""
    parts = [_message_ids(flt)]
    waits = _wait_ids(flt)
    if waits is not None:
        parts.append(waits)
    both = union_all(*parts).subquery() if len(parts) > 1 else parts[0].subquery()
    total = tx.conn.execute(select(func.count()).select_from(both)).scalar_one()
    ids = [(int(i), bool(w)) for i, w in tx.conn.execute(
        select(both.c.id, both.c.waiting).order_by(both.c.created_at.desc(), both.c.id.desc())
        .offset((page - 1) * per_page).limit(per_page))]
    stored = {r.id: r for r in _stored(tx, [i for i, w in ids if not w])}
    waiting = _waiting(tx, [i for i, w in ids if w])
    found = [waiting.get(i) if w else stored.get(i) for i, w in ids]
    rows = [r for r in found if r is not None]  # (a row purged between the two reads is left out)
    processes = _processes(tx, {r.process_instance_id for r in rows if r.process_instance_id is not None})
    return Page([ListedMessage(r, *processes.get(r.process_instance_id or 0, (None, None))) for r in rows],
                int(total), page, per_page)


def _stored(tx: Tx, ids: list[int]) -> list[MessageRecord]:
    if not ids:
        return []
    return [record(MessageRecord, r) for r in tx.conn.execute(select(M).where(M.c.id.in_(ids))).mappings()]


def _waiting(tx: Tx, first_ids: list[int]) -> dict[int, MessageRecord]:
    """The waiting receivers whose first subscription rows are ``first_ids``, as ``receive`` rows."""
    if not first_ids:
        return {}
    heads = list(tx.conn.execute(select(S.c.id, S.c.process_instance_id, S.c.task_id, S.c.message_name)
                                 .where(S.c.id.in_(first_ids))))
    waits = {(int(h.process_instance_id), str(h.task_id), str(h.message_name)): int(h.id) for h in heads}
    rows = tx.conn.execute(
        select(S).where(tuple_(S.c.process_instance_id, S.c.task_id, S.c.message_name).in_(list(waits)))
        .order_by(S.c.id)).mappings()
    keys: dict[int, dict[str, Any]] = {}
    created: dict[int, float] = {}
    for r in rows:
        head = waits[(int(r["process_instance_id"]), str(r["task_id"]), str(r["message_name"]))]
        created.setdefault(head, float(r["created_at"]))
        if r["key_name"]:
            keys.setdefault(head, {})[str(r["key_name"])] = json.loads(r["values_json"])
    out = {}
    for (instance_id, _task, name), head in waits.items():
        out[head] = MessageRecord(
            id=head, name=name, scope="", message_type="receive", status="ready", payload=None,
            correlation_keys=keys.get(head, {}), process_instance_id=instance_id, counterpart_id=None,
            message_instance_uuid=None, failure_cause=None, expires_at=None, created_at=created[head],
            updated_at=created[head])
    return out


def _processes(tx: Tx, instance_ids: set[int]) -> dict[int, tuple[str, str]]:
    """Instance id -> (process key, process id), for the rows that belong to an instance."""
    if not instance_ids:
        return {}
    found = tx.conn.execute(select(P.c.id, P.c.process_key, P.c.process_id).where(P.c.id.in_(list(instance_ids))))
    return {int(i): (str(k), str(p)) for i, k, p in found}


WAITING_CAP = 1000  # a refusal counts the instances waiting for its message up to this many


def waiting_instances(tx: Tx, message_name: str, scope: str, cap: int = WAITING_CAP) -> int:
    """How many instances wait for ``message_name`` in ``scope`` (its group and sub-groups; "" = every group),
    counted up to ``cap``: a refusal says "at least" beyond it rather than count every waiter."""
    if scope:
        found = tx.conn.execute(sql.COUNT_WAITERS_IN_GROUP,
                                {"name": message_name, "group": group_path(scope), "cap": cap})
    else:
        found = tx.conn.execute(sql.COUNT_WAITERS, {"name": message_name, "cap": cap})
    return int(found.scalar_one())


def ended_receives(tx: Tx, message_name: str, limit: int = 50) -> list[tuple[int | None, dict[str, Any]]]:
    """The latest waits for ``message_name`` that ended (receive rows delivered or cancelled), newest first: the
    instance and the keys it waited with."""
    found = tx.conn.execute(sql.ENDED_RECEIVES, {"name": message_name, "limit": limit})
    return [(instance_id, keys or {}) for instance_id, keys in found]


def instances_of(tx: Tx, message_ids: Sequence[int]) -> dict[int, int]:
    """The instance each of these messages belongs to (those that belong to one): a send row from outside names
    no instance, its counterpart (the receive row it became) names the one it reached."""
    if not message_ids:
        return {}
    rows = tx.conn.execute(select(M.c.id, M.c.process_instance_id)
                           .where(M.c.id.in_(list(message_ids)), M.c.process_instance_id.is_not(None)))
    return {int(r[0]): int(r[1]) for r in rows}


def waits_of(tx: Tx, instance_ids: Sequence[int]) -> dict[int, list[str]]:
    """What each of these instances waits for, read from the wait indexes in three queries (no instance state is
    loaded): ``message <name>``, ``timer <element> at <due>`` and ``service <operator>``, in that order."""
    if not instance_ids:
        return {}
    ids = list(instance_ids)
    found: dict[int, list[str]] = {i: [] for i in ids}
    T, C = sql.TIMERS, sql.SERVICE_CALLS
    for iid, name in tx.conn.execute(select(S.c.process_instance_id, S.c.message_name).distinct()
                                     .where(S.c.process_instance_id.in_(ids)).order_by(S.c.message_name)):
        found[int(iid)].append(f"message {name}")
    for iid, element, due in tx.conn.execute(select(T.c.process_instance_id, T.c.element_id, T.c.due_at)
                                             .where(T.c.process_instance_id.in_(ids)).order_by(T.c.due_at)):
        found[int(iid)].append(f"timer {element} at {_iso(float(due))}")
    for iid, operator in tx.conn.execute(select(C.c.process_instance_id, C.c.operator)
                                         .where(C.c.process_instance_id.in_(ids))):
        found[int(iid)].append(f"service {operator}")
    return found


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
