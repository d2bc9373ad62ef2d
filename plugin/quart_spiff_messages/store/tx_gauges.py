"""The gauges the metrics show: buffered messages, waiting catch points, pending timers."""

from __future__ import annotations

from sqlalchemy import func, select

from . import statements as sql
from .tx_timers import Timers

M, S = sql.MESSAGES, sql.SUBSCRIPTIONS


class Gauges(Timers):
    """Counts across tables for ``/metrics``."""

    def gauges(self) -> tuple[int, int, int]:
        """(buffered messages, waiting catch points, pending timers) for the metrics."""
        buffered = self.conn.execute(select(func.count()).select_from(M).where(M.c.status == "ready")).scalar_one()
        waits = select(S.c.process_instance_id, S.c.task_id).distinct().subquery()
        waiting = self.conn.execute(select(func.count()).select_from(waits)).scalar_one()
        return int(buffered), int(waiting), self.timers_pending()
