"""JSON shapes of rows on the wire (Spiff Arena's field names; fields may be added, never removed)."""

from __future__ import annotations

import math
from typing import Any

from ..names import modified
from ..store import MessageInstance, Page, ProcessInstance


def _secs(value: float | None) -> int | None:
    return None if value is None else int(value)


def message_json(row: MessageInstance) -> dict[str, Any]:
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
        "failure_cause": row.failure_cause,
        "expires_at_in_seconds": None if row.expires_at is None else math.ceil(row.expires_at),
        "created_at_in_seconds": _secs(row.created_at),
        "updated_at_in_seconds": _secs(row.updated_at),
    }


def message_summary(row: MessageInstance) -> dict[str, Any]:
    """The short form Spiff Arena answers with a buffered message."""
    full = message_json(row)
    keys = ("id", "name", "message_type", "status", "message_instance_uuid", "expires_at_in_seconds",
            "counterpart_id", "failure_cause")
    return {k: full[k] for k in keys}


def instance_json(row: ProcessInstance) -> dict[str, Any]:
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


def page_json(page: Page, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"results": rows, "pagination": {"count": len(rows), "total": page.total, "pages": page.pages}}
