"""Spiff Arena's shapes of what its instance, model, group and Home pages read
(``shared/reference/arena-instance-pages.md``): pure mappings from our records, the catalog and
:class:`~..element_states.ElementState` rows. Nothing here reads the database or SpiffWorkflow objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..catalog import Catalog, ProcessEntry
from ..engine import ElementState
from ..store import InstanceRecord

# The element's marker (the one reading of where it stands) is the state Arena's diagram colours: a waiting
# service task is WAITING, the element a failure names is ERROR, whatever SpiffWorkflow's own state says.
ARENA_STATE = {"completed": "COMPLETED", "ready": "READY", "waiting": "WAITING", "active": "STARTED",
               "error": "ERROR", "cancelled": "CANCELLED"}
VERSION_TYPE = "spec_version"  # what "revision: <identifier> (<type>)" says: the hash of the group's files


def arena_state(row: ElementState) -> str:
    return ARENA_STATE[row.marker] if row.marker is not None else row.state


def task_row(row: ElementState) -> dict[str, Any]:
    """One row of ``task-info``: what the diagram matches (``bpmn_identifier``, ``bpmn_id``, the process id) and
    colours (``state``); objects the page dereferences are never null."""
    return {
        "guid": row.guid,
        "state": arena_state(row),
        "bpmn_identifier": row.spec_name,
        "bpmn_name": row.name,
        "typename": row.typename,
        "task_definition_properties_json": {"bpmn_id": row.element_id, "spec": row.called_process,
                                            "typename": row.typename, "description": row.description,
                                            "manual": row.manual},
        "bpmn_process_definition_identifier": row.process_id,
        "bpmn_process_definition_name": row.process_id,
        "bpmn_process_guid": row.process_guid,
        "properties_json": {"last_state_change": row.last_state_change, "parent": row.parent_guid,
                            "state": row.state},
        "runtime_info": row.runtime_info,
        "start_in_seconds": None,
        "end_in_seconds": None,
    }


def _repeated(row: ElementState) -> bool:
    """A multi-instance or loop child: Arena keeps every one of them, never only the latest."""
    return "iteration" in row.runtime_info or "instance" in row.runtime_info


def most_recent(rows: Sequence[ElementState]) -> list[ElementState]:
    """One row per (process, element), the one that changed last; repeated children all kept."""
    latest: dict[tuple[str | None, str], ElementState] = {}
    kept: list[ElementState] = []
    for row in rows:
        if _repeated(row):
            kept.append(row)
            continue
        key = (row.process_guid, row.spec_name)
        if key not in latest or row.last_state_change >= latest[key].last_state_change:
            latest[key] = row
    chosen = {id(r) for r in [*latest.values(), *kept]}
    return [r for r in rows if id(r) in chosen]


def within(rows: Sequence[ElementState], process_guid: str) -> list[ElementState] | None:
    """The rows of the (sub)process spawned by task ``process_guid`` and of those it spawned in turn (None when
    no such process ran: Arena's ``bpmn_process_not_found``)."""
    spawned_in = {r.guid: r.process_guid for r in rows}

    def under(guid: str | None) -> bool:
        seen = set()
        while guid is not None and guid not in seen:
            if guid == process_guid:
                return True
            seen.add(guid)
            guid = spawned_in.get(guid)
        return False

    if not any(r.process_guid == process_guid for r in rows):
        return None
    return [r for r in rows if under(r.process_guid)]


def next_task(status: str, rows: Sequence[ElementState]) -> ElementState | None:
    """The task the instance page's banner is about, as Arena picks it: the main process's last end event once
    complete; else a task to complete; else the first thing waited for; else the latest failure."""
    by_time = sorted(rows, key=lambda r: r.last_state_change)
    if status == "complete":
        ends = [r for r in by_time if r.process_guid is None and r.typename == "EndEvent" and r.state == "COMPLETED"]
        return ends[-1] if ends else None
    for marker, pick in (("ready", 0), ("waiting", 0), ("error", -1)):
        found = [r for r in by_time if r.marker == marker]
        if found:
            return found[pick]
    return None


def instruction(row: ElementState | None, instance: InstanceRecord) -> dict[str, Any]:
    """``/tasks/{id}/instruction``: the next task with the objects the banner destructures (never completable
    here: forms belong to the host app)."""
    if row is None:
        return {"task": None}
    error = instance.error or {}
    return {"task": {
        "id": row.guid, "guid": row.guid, "name": row.spec_name, "title": row.name or row.spec_name,
        "type": row.description, "typename": row.typename, "state": arena_state(row), "can_complete": False,
        "process_instance_id": instance.id, "process_instance_status": instance.status,
        "error_message": error.get("message") if row.marker == "error" else None,
        "potential_owner_usernames": "", "assigned_user_group_identifier": None,
        "properties": {"instructionsForEndUser": ""}, "extensions": {},
    }}


def task_instances(rows: Sequence[ElementState], guid: str) -> list[dict[str, Any]] | None:
    """Every run of the clicked task's element in its process, oldest first (None: no task of that guid)."""
    clicked = next((r for r in rows if r.guid == guid), None)
    if clicked is None:
        return None
    same = [r for r in rows if r.spec_name == clicked.spec_name and r.process_guid == clicked.process_guid]
    return [task_row(r) for r in sorted(same, key=lambda r: r.last_state_change)]


# -- instances ---------------------------------------------------------------------------------------------------
def started_by(catalog: Catalog, instance: InstanceRecord, rows: Iterable[ElementState]) -> str:
    """"Started by": the message or timer whose start event began the instance, else a call of the API."""
    begun = next((r for r in rows if r.process_guid is None and r.typename == "StartEvent" and r.element_id), None)
    if begun is not None:
        for start in (s for starts in catalog.starts.values() for s in starts):
            if start.process_key == instance.process_key and start.element_id == begun.element_id:
                return f"message {start.message_name}"
        if "Timer" in begun.description:
            return "timer"
    return "API"


@dataclass(frozen=True)
class Diagram:
    """The BPMN file a page draws, and the model that holds it when it is not the instance's own (a drill-down)."""

    xml: str | None
    error: str | None
    model: str | None


def diagram(catalog: Catalog, instance: InstanceRecord, process_identifier: str | None) -> Diagram | None:
    """The file that defines the instance's process, or ``process_identifier``'s (a call activity's drill-down);
    None when no file of the catalog defines ``process_identifier``."""
    if process_identifier is None:
        entry = catalog.process(instance.process_key)
        if entry is None or not entry.file:
            return Diagram(None, f"process {instance.process_key!r} is no longer in the BPMN folder", None)
        return _read(entry.file, None)
    file = catalog.defining_file(process_identifier, instance.process_group)
    if file is None:
        return None
    holder = next((e.key for e in catalog.processes.values() if e.process_id == process_identifier
                   and e.file == file), None)
    holder = holder or next((e.key for e in catalog.processes.values() if e.file == file), instance.process_key)
    return _read(file, holder)


def _read(file: str, model: str | None) -> Diagram:
    try:
        return Diagram(Path(file).read_text(encoding="utf-8"), None, model)
    except (OSError, UnicodeDecodeError) as exc:
        return Diagram(None, f"the BPMN file cannot be read: {exc}", model)


def process_metadata(instance: InstanceRecord) -> list[dict[str, Any]]:
    """The instance's correlation values, one line each, for the header's right column."""
    out = []
    for key, values in sorted(instance.correlations.items()):
        if isinstance(values, dict):
            out += [{"key": f"{key}.{prop}", "value": value} for prop, value in sorted(values.items())]
        else:
            out.append({"key": str(key), "value": values})
    return out


def instance_header(instance: InstanceRecord, display_name: str | None, initiator: str) -> dict[str, Any]:
    """The fields of the instance page's header Arena reads besides ``id`` and ``status``."""
    return {
        "process_model_display_name": display_name,
        "process_initiator_username": initiator,
        # a reserved instance (not_started) has not started; one whose start did not take ended (terminated)
        "start_in_seconds": None if instance.status == "not_started" else int(instance.created_at),
        "task_updated_at_in_seconds": int(instance.updated_at),
        "end_in_seconds": int(instance.updated_at) if instance.status in ("complete", "terminated") else None,
        "bpmn_version_control_identifier": instance.spec_version,
        "bpmn_version_control_type": VERSION_TYPE,
        "process_metadata": process_metadata(instance),
    }


# -- process models and groups -----------------------------------------------------------------------------------
def group_ids(catalog: Catalog) -> list[str]:
    """Every group that holds a process, with the groups above it (the root, where Arena has none, left out)."""
    found: set[str] = set()
    for entry in catalog.processes.values():
        parts = entry.group.split("/") if entry.group else []
        found.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(found)


def _group_stub(group: str) -> dict[str, Any]:
    return {"id": group, "display_name": group.rsplit("/", 1)[-1], "description": "", "process_models": [],
            "process_groups": []}


def parent_groups(group: str) -> list[dict[str, Any]]:
    """A group's path from the top down, as Arena's ``parent_groups`` (the group itself included)."""
    parts = group.split("/") if group else []
    return [_group_stub("/".join(parts[:i])) for i in range(1, len(parts) + 1)]


def model_json(entry: ProcessEntry, with_parents: bool = True) -> dict[str, Any]:
    """A process as Arena's process model: its id is the ``process_model_identifier`` its instances carry."""
    name = Path(entry.file).name if entry.file else f"{entry.process_id}.bpmn"
    return {
        "id": entry.key,
        "display_name": entry.display_name,
        "description": "",
        "primary_file_name": name,
        "primary_process_id": entry.process_id,
        "is_executable": True,
        "process_group": entry.group,
        "files": [{"name": name, "type": "bpmn", "content_type": "application/xml", "references": [],
                   "process_model_id": entry.key}],
        "parent_groups": parent_groups(entry.group) if with_parents else None,
        "bpmn_version_control_identifier": entry.spec_version,
        "fault_or_suspend_on_exception": "fault",
        "exception_notification_addresses": [],
        "metadata_extraction_paths": None,
        "display_order": 0,
        "actions": {"read": {"path": f"/process-models/{entry.key.replace('/', ':')}", "method": "GET"}},
    }


def group_json(catalog: Catalog, group: str, with_children: bool) -> dict[str, Any]:
    """A group as Arena's process group: with its whole subtree (the list), or without it (one group)."""
    out = {**_group_stub(group), "messages": {}, "correlation_keys": [], "correlation_properties": [],
           "data_store_specifications": {}, "display_order": 0, "admin": False,
           "parent_groups": parent_groups(group)[:-1] if not with_children else None}
    if with_children:
        out["process_models"] = [model_json(e, with_parents=False) for e in sorted(
            catalog.processes.values(), key=lambda e: e.key) if e.group == group]
        out["process_groups"] = [group_json(catalog, g, True) for g in group_ids(catalog)
                                 if g.rsplit("/", 1)[0] == group and g != group and "/" in g]
    return out


def top_groups(catalog: Catalog, under: str | None) -> list[str]:
    """The groups ``/process-groups`` lists: the top ones, or the children of ``under``."""
    if under is None:
        return [g for g in group_ids(catalog) if "/" not in g]
    return [g for g in group_ids(catalog) if "/" in g and g.rsplit("/", 1)[0] == under]


def empty_page() -> dict[str, Any]:
    return {"results": [], "pagination": {"count": 0, "total": 0, "pages": 0}}


def paged(rows: list[Any], page: int, per_page: int) -> dict[str, Any]:
    chosen = rows[(page - 1) * per_page: page * per_page]
    return {"results": chosen, "pagination": {"count": len(chosen), "total": len(rows),
                                              "pages": -(-len(rows) // per_page)}}
