"""Reserved instances: Spiff Arena's ``not_started`` row for a message accepted asynchronously that will start one.

The accept writes the row (no state: nothing ran) and links the send message to it, so the client learns the id at
once; the routing loop later starts exactly that row through the core, or, when the start no longer takes, ends it
``terminated`` with the reason in ``error``. Neither status has a state to load: no view or action loads one in the
engine. Statements of the router's accept and routing steps; they take the transaction (:class:`.Tx`) they run in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from . import statements as sql
from .records import InstanceRecord, record

if TYPE_CHECKING:
    from . import Tx

NOT_STARTED = "not_started"
TERMINATED = "terminated"
# Statuses of an instance that never ran: its row has no state (only a reservation ends terminated).
NEVER_RAN = frozenset({NOT_STARTED, TERMINATED})

M, P, Q = sql.MESSAGES, sql.INSTANCES, sql.QUEUE


def reserve(tx: Tx, *, process_key: str, process_id: str, group: str, spec_version: str) -> InstanceRecord:
    """A ``not_started`` row for the process a queued start message will start (one insert, no state)."""
    values: dict[str, Any] = {
        "process_key": process_key, "process_id": process_id, "process_group": group,
        "spec_version": spec_version, "status": NOT_STARTED, "state": "{}", "correlations": {}, "error": None,
        "created_at": tx.now, "updated_at": tx.now}
    new_id = tx.conn.execute(sql.INSERT_INSTANCE, values).scalar_one()
    return InstanceRecord(id=int(new_id), **values)


def terminate(tx: Tx, instance_id: int, reason: str, message_id: int | None) -> InstanceRecord | None:
    """End a reservation whose start did not take: ``terminated``, ``error`` says why. None (nothing written) when
    the row is not ``not_started`` (any more)."""
    row = tx.lock_instance(instance_id)
    if row is None or row.status != NOT_STARTED:
        return None
    error = {"reason": "start_not_taken", "message": reason, "message_instance_id": message_id}
    return tx.save_instance(row, state=row.state, status=TERMINATED, correlations=row.correlations, error=error)


def orphans(tx: Tx) -> list[InstanceRecord]:
    """``not_started`` rows that no queued ``running`` message will start (the invariants: there are none)."""
    queued = (select(M.c.id).join(Q, Q.c.message_instance_id == M.c.id)
              .where(M.c.process_instance_id == P.c.id, M.c.status == "running").exists())
    rows = tx.conn.execute(select(P).where(P.c.status == NOT_STARTED, ~queued).order_by(P.c.id)).mappings()
    return [record(InstanceRecord, r) for r in rows]
