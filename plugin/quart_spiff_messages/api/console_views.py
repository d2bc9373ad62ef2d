"""What the console's pages show, as plain values for the templates (which escape every one of them).

Element states come from :meth:`Reads.element_states` (module :mod:`..element_states`), the one reading of where an
instance stands; here they are only grouped per diagram and reduced to the latest row per element.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..engine import ElementState
from ..store import MessageRecord
from .json_guard import dumps_text
from .views import time_left

JSON_CELL_START = 32  # characters of a JSON value (or a long text) a table cell shows before "…"
SPAWNERS = ("CallActivity", "SubWorkflowTask", "TransactionSubprocess")  # task specs that run a (sub)workflow


@dataclass(frozen=True)
class JsonCell:
    """A JSON value as a cell shows it: its start on one line; the whole value, indented, when opened."""

    start: str
    whole: str
    cut: bool
    text: bool = False  # plain text (a failure cause), not JSON


def json_cell(value: Any) -> JsonCell:
    compact = dumps_text(value)
    cut = len(compact) > JSON_CELL_START
    return JsonCell(compact[:JSON_CELL_START] + ("…" if cut else ""), dumps_text(value, indent=2), cut)


def text_cell(value: str) -> JsonCell:
    """A long text shown like a JSON cell: its start, the whole when opened."""
    cut = len(value) > JSON_CELL_START
    return JsonCell(value[:JSON_CELL_START] + ("…" if cut else ""), value, cut, text=True)


def iso(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def relative(seconds: float | None, now: float) -> str:
    """``in 4 min``, ``2 h ago``, ``now``: how far a time is from now, in a person's terms."""
    if seconds is None:
        return ""
    delta = seconds - now
    size = abs(delta)
    if size < 1:
        return "now"
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if size >= length:
            amount = math.floor(size / length)
            return f"in {amount} {unit}" if delta > 0 else f"{amount} {unit} ago"
    return "now"  # pragma: no cover (size >= 1 matches "s")


def message_row(row: MessageRecord, now: float, instance_id: int | None) -> dict[str, Any]:
    """One message as the console lists it; ``instance_id`` the one it belongs to, reached or came from."""
    return {
        "id": row.id,
        "created": iso(row.created_at)[5:],  # the year on hover (``created_full``): a column less wide
        "created_full": iso(row.created_at),
        "status": row.status,
        "message_type": row.message_type,
        "name": row.name,
        "group": row.scope,
        "correlation_keys": json_cell(row.correlation_keys) if row.correlation_keys else None,
        "payload": json_cell(row.payload) if row.payload is not None else None,
        "instance_id": instance_id,
        "failure_cause": text_cell(row.failure_cause) if row.failure_cause else None,
        "time_left": time_left(row.expires_at, row.status, now),
        "uuid": row.message_instance_uuid,
        "cancellable": row.status == "ready" and row.message_type == "send" and row.id is not None and row.id > 0
        and row.message_instance_uuid is not None,
    }


def latest_per_element(rows: Iterable[ElementState]) -> dict[str, ElementState]:
    """Element id -> its latest row (a loop or a multi-instance runs an element several times)."""
    latest: dict[str, ElementState] = {}
    for r in rows:
        if r.element_id is None:
            continue
        seen = latest.get(r.element_id)
        if seen is None or r.last_state_change >= seen.last_state_change:
            latest[r.element_id] = r
    return latest


def rows_of_workflow(states: list[ElementState], workflow: str | None) -> list[ElementState]:
    """The rows one diagram shows: those of the workflow a task ``workflow`` spawned (None: the instance's own),
    with those of the embedded subprocesses inside it, which are drawn in the same file; not those of the
    processes its call activities call (each is a diagram of its own)."""
    inside: set[str | None] = {workflow}
    changed = True
    while changed:  # embedded subprocesses (at any depth) of this workflow belong to its diagram
        changed = False
        for r in states:
            if r.process_guid in inside and r.typename in ("SubWorkflowTask", "TransactionSubprocess") \
                    and r.guid not in inside:
                inside.add(r.guid)
                changed = True
    return [r for r in states if r.process_guid in inside]


def called_workflows(rows: Iterable[ElementState]) -> list[ElementState]:
    """The call activities among ``rows`` that have run or run now: each opens the called process's diagram."""
    return [r for r in rows if r.typename == "CallActivity" and r.called_process and r.marker is not None]


def diagram_marks(rows: Iterable[ElementState]) -> list[dict[str, Any]]:
    """What the diagram script colours: element id -> its marker (``spiff-<marker>`` on its ``g[data-element-id]``)."""
    return [{"element_id": eid, "marker": r.marker, "state": r.state, "guid": r.guid}
            for eid, r in sorted(latest_per_element(rows).items()) if r.marker is not None]
