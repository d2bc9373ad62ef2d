"""How much each process has run: the counts Spiff Arena's Processes page shows on its cards."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select

from . import statements as sql

if TYPE_CHECKING:
    from . import Tx

P = sql.INSTANCES


def instance_stats(tx: Tx) -> dict[str, tuple[int, float]]:
    """Process key -> (instances, when the latest started): one grouped read over the instances' key index."""
    found = tx.conn.execute(select(P.c.process_key, func.count(), func.max(P.c.created_at)).group_by(P.c.process_key))
    return {str(key): (int(count), float(last)) for key, count, last in found}
