"""Process instance rows (and the spec versions they run on): add, lock, read, save, list."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import select, update

from . import statements as sql
from .records import InstanceRecord, Page, record
from .tx_base import TxBase

P, S, TM = sql.INSTANCES, sql.SUBSCRIPTIONS, sql.TIMERS


class Instances(TxBase):
    """Queries of ``spiff_process_instance`` (and ``spiff_process_spec``)."""

    def spec(self, process_key: str, version: str) -> str | None:
        found = self.conn.execute(sql.SELECT_SPEC, {"key": process_key, "version": version}).scalar_one_or_none()
        return str(found) if found is not None else None

    def add_instance(self, *, process_key: str, process_id: str, group: str, spec_version: str) -> InstanceRecord:
        """A new instance row, written now; :meth:`save_instance` writes its state."""
        values: dict[str, Any] = {
            "process_key": process_key, "process_id": process_id, "process_group": group,
            "spec_version": spec_version, "status": "waiting", "state": "{}", "correlations": {}, "error": None,
            "created_at": self.now, "updated_at": self.now}
        new_id = self.conn.execute(sql.INSERT_INSTANCE, values).scalar_one()
        return InstanceRecord(id=int(new_id), **values)

    def lock_instance(self, instance_id: int) -> InstanceRecord | None:
        """The instance row, locked until commit (PostgreSQL; SQLite's writer lock already covers it)."""
        if self.store.dialect != "postgresql":
            found = self.conn.execute(sql.SELECT_INSTANCE, {"id": instance_id}).mappings().first()
            return record(InstanceRecord, found) if found is not None else None
        row = self.conn.execute(sql.LOCK_INSTANCE_AT, {"id": instance_id}).mappings().first()
        if row is None:
            return None
        values = dict(row)
        self._saw_time(values.pop("db_now"))
        return record(InstanceRecord, values)

    def instance(self, instance_id: int) -> InstanceRecord | None:
        found = self.conn.execute(sql.SELECT_INSTANCE, {"id": instance_id}).mappings().first()
        return record(InstanceRecord, found) if found is not None else None

    def save_instance(self, row: InstanceRecord, *, state: str, status: str, correlations: dict[str, Any],
                      error: dict[str, Any] | None) -> InstanceRecord:
        """Write the instance's new state; returns the record as written."""
        self.conn.execute(sql.SAVE_INSTANCE, {"_id": row.id, "state": state, "status": status,
                                              "correlations": correlations, "error": error,
                                              "updated_at": self.now})
        return dataclasses.replace(row, state=state, status=status, correlations=correlations, error=error,
                                   updated_at=self.now)

    def set_spec_version(self, row: InstanceRecord, spec_version: str) -> InstanceRecord:
        """Move an instance to another version of its spec (a retry on a fixed spec)."""
        self.conn.execute(update(P).where(P.c.id == row.id).values(spec_version=spec_version))
        return dataclasses.replace(row, spec_version=spec_version)

    def list_instances(self, *, status: str | None, process_key: str | None, page: int,
                       per_page: int) -> Page[InstanceRecord]:
        cond = []
        if status:
            cond.append(P.c.status == status)
        if process_key:
            cond.append(P.c.process_key == process_key)
        return self._page(InstanceRecord, P, cond, [P.c.id.desc()], page, per_page)

    def waiting_instances_without_waits(self) -> list[InstanceRecord]:
        """Instances in ``waiting`` that the index has no wait for (the invariants check reads their state)."""
        indexed = select(S.c.id).where(S.c.process_instance_id == P.c.id).exists()
        timed = select(TM.c.id).where(TM.c.process_instance_id == P.c.id).exists()
        rows = self.conn.execute(select(P).where(P.c.status == "waiting", ~indexed, ~timed)
                                 .order_by(P.c.id)).mappings()
        return [record(InstanceRecord, r) for r in rows]
