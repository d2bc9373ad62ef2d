"""JSON shapes of rows on the wire (Spiff Arena's field names; fields may be added, never removed)."""

from __future__ import annotations

import hashlib
import math
from typing import Any

from ..catalog import Catalog
from ..clock import iso_time
from ..core import InstanceView
from ..names import in_scope, modified
from ..store import InstanceRecord, MessageRecord, Page


def _secs(value: float | None) -> int | None:
    return None if value is None else int(value)


def message_json(row: MessageRecord, process_key: str | None = None,
                 display_name: str | None = None) -> dict[str, Any]:
    """A message row; ``process_key`` and ``display_name`` are the process of its instance, if it has one."""
    return {
        "id": row.id,
        "name": row.name,
        "process_group": row.scope,
        "message_type": row.message_type,
        "status": row.status,
        "payload": row.payload,
        "correlation_keys": row.correlation_keys,
        "process_instance_id": row.process_instance_id,
        "counterpart_id": row.counterpart_id,
        "message_instance_uuid": row.message_instance_uuid,
        # why a row was cancelled is no failure (Arena marks every row with a failure_cause as an error)
        "failure_cause": None if row.status == "cancelled" else row.failure_cause,
        "cancellation_reason": row.failure_cause if row.status == "cancelled" else None,
        "expires_at_in_seconds": None if row.expires_at is None else math.ceil(row.expires_at),
        "created_at_in_seconds": _secs(row.created_at),
        "updated_at_in_seconds": _secs(row.updated_at),
        "process_model_identifier": process_key,
        "process_model_display_name": display_name,
    }


def message_summary(row: MessageRecord) -> dict[str, Any]:
    """The short form Spiff Arena answers with a buffered message."""
    full = message_json(row)
    keys = ("id", "name", "message_type", "status", "message_instance_uuid", "expires_at_in_seconds",
            "counterpart_id", "failure_cause", "cancellation_reason")
    return {k: full[k] for k in keys}


def instance_json(row: InstanceRecord) -> dict[str, Any]:
    return {
        "id": row.id,
        "process_id": row.process_id,
        "process_group": row.process_group,
        "process_model_identifier": row.process_key,
        "modified_process_id": modified(row.process_group, row.process_id),
        "spec_version": row.spec_version,
        "status": row.status,
        "correlations": row.correlations,
        "error": row.error,
        "created_at_in_seconds": _secs(row.created_at),
        "updated_at_in_seconds": _secs(row.updated_at),
    }


def instance_view_json(view: InstanceView) -> dict[str, Any]:
    """An instance with its current data and what it waits for."""
    return {**instance_json(view.instance), "data": view.data, "waiting_for": with_due_times(view.waiting_for),
            "tasks": [t.as_json() for t in view.tasks], "service_tasks": [s.as_json() for s in view.services]}


def with_due_times(waits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each timer's due time also as people read it (``due_at``, ISO 8601 UTC) beside ``due_at_in_seconds``."""
    return [{**w, "due_at": iso_time(w["due_at_in_seconds"])} if w.get("due_at_in_seconds") is not None else w
            for w in waits]


def page_json(page: Page[Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"results": rows, "pagination": {"count": len(rows), "total": page.total, "pages": page.pages}}


def time_left(expires_at: float | None, status: str, now: float) -> str:
    """How long a buffered message is kept still (``1 min 5 s``, ``expired``); empty for any other message."""
    if expires_at is None or status != "ready":
        return ""
    left = math.ceil(expires_at - now)
    if left <= 0:
        return "expired"
    minutes, seconds = divmod(left, 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def message_model_id(name: str) -> int:
    """A stable number for a message name: the same on every worker and after every reload (below 2**48)."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:12], 16)


def catalog_json(catalog: Catalog, location: str | None = None) -> dict[str, Any]:
    """The catalog's messages; with ``location``, those used in that group or a group above it (Spiff Arena's
    search upward from a process group)."""

    def props(properties: Any) -> list[dict[str, Any]]:
        return [{"identifier": p.name, "retrieval_expression": p.expression, "correlation_keys": list(p.keys)}
                for p in properties]

    def point(p: Any) -> dict[str, Any]:
        return {"process_model_identifier": p.process_key, "process_id": p.process_id, "process_group": p.group,
                "element_id": p.element_id, "message_variable": p.message_variable}

    starts, catches = catalog.starts, catalog.catches
    out = []
    for name in sorted(catalog.messages):
        groups = sorted(catalog.messages[name])
        if location is not None and not any(in_scope(g, location) for g in groups):
            continue
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for p in [*starts.get(name, ()), *catches.get(name, ())]:
            for d in props(p.properties):
                seen.setdefault((d["identifier"], d["retrieval_expression"]), d)
        processes = sorted({p.process_key for p in [*starts.get(name, ()), *catches.get(name, ())]})
        out.append({
            "id": message_model_id(name),
            "identifier": name,
            "location": groups[0] if len(groups) == 1 else "",
            "schema": {},
            "process_groups": groups,
            "correlation_properties": list(seen.values()),
            "process_model_identifiers": processes,
            "start_events": [{**point(s), "one_instance_per_correlation_key": s.one_per_key}
                             for s in starts.get(name, ())],
            "catch_points": [{**point(c), "kind": c.kind, "interrupting": c.interrupting,
                              "correlation_properties": props(c.properties)} for c in catches.get(name, ())],
        })
    return {"messages": out}
