"""Spiff Arena's instance page, process models and groups, and Home, read-only: the calls its frontend makes one
click away from the messages list (``shared/reference/arena-instance-pages.md``).

Where an instance stands is read from :meth:`Reads.element_states` (the one reading every view of states uses);
models and groups come from the catalog. Nothing here writes: completing a task from Arena's form pages, starting
or managing instances are not served (``permissions-check`` says so, :mod:`.arena_paths`).
"""

from __future__ import annotations

from typing import Any

from quart import Response
from quart_schema import document_querystring, document_response

from .. import errors as e
from ..engine import ElementState
from ..names import parse_modified_name, parse_process_id
from ..store import InstanceRecord
from . import arena_schemas as schemas
from . import arena_views as views
from . import json_guard
from . import views as api_views
from .access import route
from .arena_paths import READ_INSTANCE, READ_MODELS, READ_TASK
from .openapi import problems
from .parsing import instance_number, query
from .state import state


def _ok(payload: Any) -> Response:
    return Response(json_guard.dumps(payload), content_type="application/json")


async def _instance_of(modified_model: str, instance_id: str) -> tuple[InstanceRecord, list[ElementState]]:
    """The instance at Arena's path (the process, colons for slashes, and the id) and where it stands."""
    scoped = parse_process_id(modified_model, field="modified_process_model_identifier")
    row, states = await state().runtime.reads.element_states(instance_number(instance_id))
    if row.process_key != scoped.key:
        raise e.InstanceNotFound(f"process instance {row.id} is not of process {scoped.key!r}")
    return row, states


# -- the instance page -------------------------------------------------------------------------------------------
async def _show(modified_process_model_identifier: str, instance_id: str) -> Response:
    q = query(schemas.ShowQuery)
    st = state()
    reads = st.runtime.reads
    catalog = st.runtime.catalog
    _, states = await _instance_of(modified_process_model_identifier, instance_id)
    view = await reads.instance_view(instance_number(instance_id))
    row = view.instance
    drawn = views.diagram(catalog, row, q.process_identifier or None)
    if drawn is None:
        raise e.ProcessNotFound(f"no BPMN file defines process {q.process_identifier!r}",
                                field="process_identifier")
    return _ok({**api_views.instance_view_json(view),
                **views.instance_header(row, reads.display_name(row.process_key, row.process_id),
                                        views.started_by(catalog, row, states)),
                "bpmn_xml_file_contents": drawn.xml,
                "bpmn_xml_file_contents_retrieval_error": drawn.error,
                "process_model_with_diagram_identifier": drawn.model})


@route("GET", "/process-instances/<modified_process_model_identifier>/<instance_id>", READ_INSTANCE,
       path_error=(e.InstanceNotFound, "instance_id"))
@document_querystring(schemas.ShowQuery)
@document_response(schemas.ArenaInstanceShowOut, 200)
@problems(400, 404)
async def show_instance_of_model(modified_process_model_identifier: str, instance_id: str) -> Response:
    """An instance by Spiff Arena's path (the process, colons for slashes, and the id), not wrapped, with what
    its instance page shows: the BPMN file of its process (`bpmn_xml_file_contents`; with `process_identifier`,
    the file that defines that process: a call activity's drill-down), when it started and changed, the spec
    version. `404 process_instance_not_found` when the instance is not of that process."""
    return await _show(modified_process_model_identifier, instance_id)


@route("GET", "/process-instances/for-me/<modified_process_model_identifier>/<instance_id>", READ_INSTANCE,
       path_error=(e.InstanceNotFound, "instance_id"))
@document_querystring(schemas.ShowQuery)
@document_response(schemas.ArenaInstanceShowOut, 200)
@problems(400, 404)
async def show_instance_for_me(modified_process_model_identifier: str, instance_id: str) -> Response:
    """The same as the show above (Arena's "for me" variant: there are no users here)."""
    return await _show(modified_process_model_identifier, instance_id)


async def _task_info(modified_process_model_identifier: str, instance_id: str) -> Response:
    q = query(schemas.TaskInfoQuery)
    if q.to_task_guid:
        raise e.InvalidQueryParameter("to_task_guid: the instance as it was at a task is not served",
                                      field="to_task_guid")
    _, rows = await _instance_of(modified_process_model_identifier, instance_id)
    if q.bpmn_process_guid:
        found = views.within(rows, q.bpmn_process_guid)
        if found is None:
            raise e.BpmnProcessNotFound(f"no process of instance {instance_id} was spawned by task "
                                        f"{q.bpmn_process_guid!r}", bpmn_process_guid=q.bpmn_process_guid)
        rows = found
    if q.most_recent_tasks_only:
        rows = views.most_recent(rows)
    return _ok([views.task_row(r) for r in rows])


@route("GET", "/process-instances/<modified_process_model_identifier>/<instance_id>/task-info", READ_INSTANCE,
       path_error=(e.InstanceNotFound, "instance_id"))
@document_querystring(schemas.TaskInfoQuery)
@document_response(schemas.TaskInfoOut, 200)
@problems(400, 404)
async def task_info(modified_process_model_identifier: str, instance_id: str) -> Response:
    """Where the instance stands, element by element (what colours Spiff Arena's diagram): a bare array of task
    rows, `state` one of COMPLETED, READY (a task to complete), WAITING (a message, timer or service result it
    waits for), STARTED (a running call activity or subprocess), ERROR, CANCELLED, or FUTURE. Rows of embedded
    subprocesses and call activities are included; `bpmn_process_guid` keeps those of one of them."""
    return await _task_info(modified_process_model_identifier, instance_id)


@route("GET", "/process-instances/for-me/<modified_process_model_identifier>/<instance_id>/task-info",
       READ_INSTANCE, path_error=(e.InstanceNotFound, "instance_id"))
@document_querystring(schemas.TaskInfoQuery)
@document_response(schemas.TaskInfoOut, 200)
@problems(400, 404)
async def task_info_for_me(modified_process_model_identifier: str, instance_id: str) -> Response:
    """The same as `task-info` above (Arena's "for me" variant)."""
    return await _task_info(modified_process_model_identifier, instance_id)


# -- tasks -------------------------------------------------------------------------------------------------------
@route("GET", "/tasks", READ_TASK)
@document_querystring(schemas.TaskListQuery)
@document_response(schemas.ArenaListOut, 200)
@problems(400, 404)
async def list_tasks() -> Response:
    """An instance's tasks to complete (READY user, manual and plain tasks), as Arena's task table lists them.
    Without `process_instance_id` (Arena's Home: the user's own tasks) the list is empty: there are no users."""
    q = query(schemas.TaskListQuery)
    if q.process_instance_id is None:
        return _ok(views.empty_page())
    reads = state().runtime.reads
    view = await reads.instance_view(q.process_instance_id)
    row = view.instance
    display = reads.display_name(row.process_key, row.process_id)
    rows = [{"id": t.id, "task_id": t.id, "task_guid": t.id, "task_name": t.element_id,
             "task_title": t.name or t.element_id, "task_type": t.type, "task_status": t.state,
             "process_instance_id": row.id, "process_instance_status": row.status,
             "process_model_identifier": row.process_key, "process_model_display_name": display,
             "process_initiator_username": None, "potential_owner_usernames": "",
             "assigned_user_group_identifier": None, "completed": False, "last_milestone_bpmn_name": None,
             "created_at_in_seconds": int(row.created_at), "updated_at_in_seconds": int(row.updated_at)}
            for t in view.tasks]
    return _ok(views.paged(rows, q.page, q.per_page))


@route("GET", "/tasks/<process_instance_id>/instruction", READ_TASK,
       path_error=(e.InstanceNotFound, "process_instance_id"))
@document_response(schemas.InstructionOut, 200)
@problems(400, 404)
async def task_instruction(process_instance_id: str) -> Response:
    """The task the instance page's banner is about: the last end event once complete, else a task to complete,
    else the first thing waited for, else the failed task; `{"task": null}` when there is none."""
    row, rows = await state().runtime.reads.element_states(instance_number(process_instance_id))
    return _ok(views.instruction(views.next_task(row.status, rows), row))


@route("GET", "/tasks/<process_instance_id>/<task_guid>/task-instances", READ_TASK,
       path_error=(e.TaskNotFound, "task_guid"))
@document_response(schemas.TaskInfoOut, 200)
@problems(400, 404)
async def task_instances(process_instance_id: str, task_guid: str) -> Response:
    """Every run of the element of a task (a clicked diagram element) in its process, oldest first."""
    _, rows = await state().runtime.reads.element_states(instance_number(process_instance_id))
    found = views.task_instances(rows, task_guid)
    if found is None:
        raise e.TaskNotFound(f"process instance {process_instance_id} has no task {task_guid!r}")
    return _ok(found)


@route("GET", "/onboarding", READ_TASK)
@document_response(schemas.OnboardingOut, 200)
@problems(400)
async def onboarding() -> Response:
    """Arena's Home asks what to onboard a user with: nothing here (`{}`)."""
    return _ok({})


# -- process models and groups -----------------------------------------------------------------------------------
def _group_of(modified: str) -> str:
    return modified.replace(":", "/").strip("/")


@route("GET", "/process-models", READ_MODELS)
@document_querystring(schemas.ModelListQuery)
@document_response(schemas.ProcessModelListOut, 200)
@problems(400)
async def list_process_models() -> Response:
    """The catalog's processes as Spiff Arena's process models: `id` is the `process_model_identifier` their
    instances and messages carry (`group/process_id`). `per_page` up to 2,000."""
    q = query(schemas.ModelListQuery)
    group = _group_of(q.process_group_identifier) if q.process_group_identifier else ""
    found = [e for e in sorted(state().runtime.catalog.processes.values(), key=lambda e: e.key)
             if e.group == group or (q.recursive and (not group or e.group.startswith(group + "/")))]
    if q.search:
        needle = q.search.lower()
        found = [e for e in found if needle in e.key.lower() or needle in e.display_name.lower()]
    rows = [views.model_json(e, with_parents=q.include_parent_groups) for e in found]
    return _ok(views.paged(rows, q.page, q.per_page))


@route("GET", "/process-models/stats", READ_MODELS)
@document_response(schemas.ProcessModelStatsOut, 200)
@problems(400)
async def process_model_stats() -> Response:
    """Per process model: how many instances it has and when the latest started (`{}` when none ran)."""
    stats = await state().runtime.reads.process_stats()
    return _ok({key: {"instance_count": count, "last_run_in_seconds": int(last)}
                for key, (count, last) in sorted(stats.items())})


@route("GET", "/process-models/<modified_process_model_identifier>", READ_MODELS,
       path_error=(e.ProcessNotFound, "modified_process_model_identifier"))
@document_response(schemas.ProcessModelOut, 200)
@problems(400, 404)
async def show_process_model(modified_process_model_identifier: str) -> Response:
    """A process as Spiff Arena's process model: its file, its groups from the top down, its spec version."""
    scoped = parse_modified_name(modified_process_model_identifier, e.InvalidProcessId,
                                 "modified_process_model_identifier")
    entry = state().runtime.catalog.process(scoped.key)
    if entry is None:
        raise e.ProcessNotFound(f"no process {scoped.key!r} in the catalog")
    return _ok(views.model_json(entry))


@route("GET", "/process-groups", READ_MODELS)
@document_querystring(schemas.GroupListQuery)
@document_response(schemas.ProcessGroupListOut, 200)
@problems(400)
async def list_process_groups() -> Response:
    """The folders of the BPMN folder as Spiff Arena's process groups, the top ones (or the children of
    `process_group_identifier`) each with its whole subtree. Processes at the root belong to no group."""
    q = query(schemas.GroupListQuery)
    catalog = state().runtime.catalog
    under = _group_of(q.process_group_identifier) if q.process_group_identifier else None
    rows = [views.group_json(catalog, g, True) for g in views.top_groups(catalog, under)]
    return _ok(views.paged(rows, q.page, q.per_page))


@route("GET", "/process-groups/<modified_process_group_id>", READ_MODELS,
       path_error=(e.ProcessGroupNotFound, "modified_process_group_id"))
@document_response(schemas.ProcessGroupOut, 200)
@problems(400, 404)
async def show_process_group(modified_process_group_id: str) -> Response:
    """One process group without its children (colons for slashes: `orders:eu`), with the groups above it."""
    catalog = state().runtime.catalog
    group = _group_of(modified_process_group_id)
    if group not in views.group_ids(catalog):
        raise e.ProcessGroupNotFound(f"no process group {group!r}: no folder holds a process by that path")
    return _ok(views.group_json(catalog, group, False))
