"""What happened to one message or one start: the router's answer, built from store records only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .core import Applied
from .store import InstanceRecord, MessageRecord

# Outcome kinds as metric results (a replayed outcome counts as "replayed").
METRIC_RESULTS = {"delivered": "delivered", "started": "started", "buffered": "buffered",
                  "not_accepted": "not_accepted", "accepted": "accepted", "reserved": "accepted",
                  "process_error": "error"}


@dataclass(frozen=True)
class Outcome:
    """What happened to one message (or one API start)."""

    # delivered | started | task_completed | retried | buffered | not_accepted | process_error, and for an
    # asynchronous send: accepted (queued) | reserved (queued, its ``not_started`` instance in ``instance``)
    kind: str
    message: MessageRecord | None
    instance: InstanceRecord | None = None
    task_data: dict[str, Any] | None = None
    reason: str | None = None
    refusal: dict[str, Any] | None = None  # why a message was not accepted, as data (``refusals.py``)
    error: dict[str, Any] | None = None
    replayed: bool = False  # the stored outcome of an earlier request with the same message_instance_uuid

    @classmethod
    def of(cls, kind: str, applied: Applied, *, replayed: bool = False) -> Outcome:
        """The outcome of an action that took: ``kind``, or ``process_error`` when the instance failed."""
        if applied.failure is not None:
            return cls("process_error", applied.message, applied.instance, applied.task_data,
                       error=applied.failure, replayed=replayed)
        return cls(kind, applied.message, applied.instance, applied.task_data, replayed=replayed)
