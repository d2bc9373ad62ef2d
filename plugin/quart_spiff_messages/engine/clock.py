"""One clock for SpiffWorkflow's timers: the time the core decides with, not the wall clock's.

SpiffWorkflow computes and compares due times with ``datetime.now(timezone.utc)``. While the core applies an action
it sets the time it decided with (:func:`at`), and SpiffWorkflow's timer module reads that instead, so "is this timer
due" has one answer: the extension's (injectable) clock's. Outside an action: the wall clock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from SpiffWorkflow.bpmn.specs.event_definitions import timer as spiff_timer

_NOW: ContextVar[float | None] = ContextVar("spiff_messages_now", default=None)
# SpiffWorkflow fires a cycle when ``next < now``; a cycle due exactly now is due for us, so it sees a hair later.
HAIR = 1e-6


class _ClockDatetime(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> Any:
        at = _NOW.get()
        if at is None:
            return datetime.now(tz)
        moment = datetime.fromtimestamp(at, timezone.utc)
        return moment.astimezone(tz) if tz is not None else moment.replace(tzinfo=None)


spiff_timer.datetime = _ClockDatetime


@contextlib.contextmanager
def at(now: float) -> Iterator[None]:
    """Let SpiffWorkflow's timers read ``now`` (the time the core decides with) while the block runs."""
    token = _NOW.set(now)
    try:
        yield
    finally:
        _NOW.reset(token)
