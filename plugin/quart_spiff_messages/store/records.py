"""What the store hands back: frozen records, never ORM objects, so nothing above it can write a row by accident.

A change is made by asking the store (:meth:`Tx.update_message`, :meth:`Tx.save_instance`), which writes it and
returns the changed record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

from ..correlation import KeyValue

R = TypeVar("R")


@dataclass(frozen=True)
class MessageRecord:
    """One message row. ``id`` is None for a message not written yet (the router writes it with its outcome)."""

    id: int | None
    name: str
    scope: str  # the group prefix it was sent to ("" = every group)
    message_type: str  # send | receive
    status: str
    payload: Any
    correlation_keys: dict[str, Any] | None
    process_instance_id: int | None
    counterpart_id: int | None
    message_instance_uuid: str | None
    failure_cause: str | None
    expires_at: float | None
    created_at: float
    updated_at: float

    @property
    def payload_object(self) -> Mapping[str, Any]:
        """The payload as a mapping (a stored payload that is not an object correlates like an empty one)."""
        return self.payload if isinstance(self.payload, Mapping) else {}


@dataclass(frozen=True)
class InstanceRecord:
    id: int
    process_key: str
    process_id: str
    process_group: str
    spec_version: str
    status: str
    state: str
    correlations: dict[str, Any]
    error: dict[str, Any] | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class WaitRow:
    """What the store needs to index one wait (built by the core from the engine's waits)."""

    task_id: str
    element_id: str
    message_name: str
    key: KeyValue | None  # None: accepts any message of that name


@dataclass(frozen=True)
class EndedWait:
    """A wait the index dropped: its task, its message and the correlation keys it expected."""

    task_id: str
    message_name: str
    correlation_keys: dict[str, Any]
    wait_id: int | None = None  # the id it was listed with while it waited: its receive row takes it


@dataclass(frozen=True)
class TimerRow:
    """A timer an instance waits at, as the store indexes it (built by the core from the engine's timers)."""

    task_id: str
    element_id: str
    timer_type: str
    due_at: float


@dataclass(frozen=True)
class ServiceCallRow:
    """A service task waiting for its result, as the store indexes it (built by the core from the engine's)."""

    task_id: str
    element_id: str
    operator: str
    params: dict[str, Any]


@dataclass(frozen=True)
class ServiceCallRecord:
    """A claimed service call: which handler to call, with what, for which attempt."""

    id: int
    process_instance_id: int
    task_id: str
    element_id: str
    operator: str
    params: dict[str, Any]
    attempt: int
    next_attempt_at: float
    lease_until: float | None


@dataclass(frozen=True)
class TimerStartRecord:
    """The schedule of one timer start event (see the ``spiff_timer_start`` table)."""

    process_key: str
    element_id: str
    expression: str
    next_due: float | None
    cycles_left: int
    interval_seconds: float
    started: int
    updated_at: float


@dataclass(frozen=True)
class WaitingTask:
    """A task the subscription index says waits for a message: where a delivery is offered."""

    instance_id: int
    task_id: str


@dataclass(frozen=True)
class Page(Generic[R]):
    rows: list[R]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return math.ceil(self.total / self.per_page) if self.per_page else 0


def record(cls: type[R], row: Mapping[Any, Any]) -> R:
    """A record from a result row's mapping (columns the record does not name are ignored)."""
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    return cls(**{n: row[n] for n in names})


_FIELDS: dict[type[Any], tuple[str, ...]] = {}
