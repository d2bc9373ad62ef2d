"""Service calls: the service tasks instances wait at, claimed by handlers under a lease, retried when due."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy import case, delete, func, or_, select, update

from . import statements as sql
from .records import ServiceCallRecord, ServiceCallRow, record
from .tx_base import TxBase

SC = sql.SERVICE_CALLS


class ServiceCalls(TxBase):
    """Queries of ``spiff_service_call``."""

    def sync_service_calls(self, instance_id: int, calls: Sequence[ServiceCallRow]) -> None:
        """Make the service calls of the instance exactly ``calls`` (those already there keep their attempts and
        lease); a new one is due now."""
        keep = [c.task_id for c in calls]
        stmt = delete(SC).where(SC.c.process_instance_id == instance_id)
        self.conn.execute(stmt.where(SC.c.task_id.not_in(keep)) if keep else stmt)
        if not calls:
            return
        added = self.conn.execute(sql.insert_service_calls(self.store.dialect), [
            {"process_instance_id": instance_id, "task_id": c.task_id, "element_id": c.element_id,
             "operator": c.operator, "params": c.params, "attempt": 1, "next_attempt_at": self.now,
             "lease_until": None, "created_at": self.now} for c in calls]).all()
        if added:
            self.due_at(self.now)

    def claim_service_calls(self, operators: Sequence[str] | None, lease_seconds: float,
                            limit: int = 100) -> list[ServiceCallRecord]:
        """Due service calls nobody holds (``operators``: only these; None: any), oldest due first, leased to this
        transaction's caller until ``now + lease_seconds`` (PostgreSQL skips rows another claim holds)."""
        cond = [SC.c.next_attempt_at <= self.now, or_(SC.c.lease_until.is_(None), SC.c.lease_until <= self.now)]
        if operators is not None:
            if not operators:
                return []
            cond.append(SC.c.operator.in_(list(operators)))
        stmt = select(SC).where(*cond).order_by(SC.c.next_attempt_at, SC.c.id).limit(limit)
        if self.store.dialect == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        found = [record(ServiceCallRecord, r) for r in self.conn.execute(stmt).mappings()]
        if found:
            until = self.now + lease_seconds
            self.conn.execute(update(SC).where(SC.c.id.in_([c.id for c in found])).values(lease_until=until))
            found = [dataclasses.replace(c, lease_until=until) for c in found]
        return found

    def renew_service_calls(self, ids: Sequence[int], until: float) -> None:
        """Extend the leases of calls whose handlers still run."""
        if ids:
            self.conn.execute(update(SC).where(SC.c.id.in_(list(ids)), SC.c.lease_until.is_not(None))
                              .values(lease_until=until))

    def reschedule_service_call(self, instance_id: int, task_id: str, attempt: int, when: float,
                                lease_until: float | None) -> None:
        """After a failed attempt: the next one is number ``attempt``, due at ``when``."""
        self.conn.execute(update(SC).where(SC.c.process_instance_id == instance_id, SC.c.task_id == task_id)
                          .values(attempt=attempt, next_attempt_at=when, lease_until=lease_until))
        self.due_at(when)

    def next_service_call_due(self, operators: Sequence[str] | None) -> float | None:
        """When the next service call (of ``operators``) can be claimed: its due time, or its lease's end."""
        free_at = case((SC.c.lease_until > SC.c.next_attempt_at, SC.c.lease_until), else_=SC.c.next_attempt_at)
        stmt = select(func.min(free_at))
        if operators is not None:
            if not operators:
                return None
            stmt = stmt.where(SC.c.operator.in_(list(operators)))
        found = self.conn.execute(stmt).scalar_one_or_none()
        return float(found) if found is not None else None
