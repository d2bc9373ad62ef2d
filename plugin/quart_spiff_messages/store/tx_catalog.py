"""The catalog generation: how many reloads of the BPMN folder have been asked for, shared by every worker."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from . import statements as sql
from .tx_base import TxBase


class CatalogGeneration(TxBase):
    """Queries of ``spiff_catalog_generation`` (one row)."""

    def catalog_generation(self) -> int:
        """How many reloads have been asked for (0 before the first)."""
        found = self.conn.execute(select(sql.GENERATION.c.generation).where(sql.GENERATION.c.id == 1))
        value = found.scalar_one_or_none()
        return int(value) if value is not None else 0

    def bump_catalog_generation(self) -> int:
        """Ask every worker to reload its BPMN folder; returns the new generation."""
        insert = pg_insert if self.store.dialect == "postgresql" else sqlite_insert
        table = sql.GENERATION
        stmt = insert(table).values(id=1, generation=1, requested_at=self.now)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.id],
            set_={"generation": table.c.generation + 1, "requested_at": self.now})
        return int(self.conn.execute(stmt.returning(table.c.generation)).scalar_one())
