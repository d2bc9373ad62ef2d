"""HTTP routes: parse, hand to the router, answer. No decisions are taken here.

Each view is declared at module level with :func:`.access.route`, which names the action the host app's
``authorize(request, action)`` hook is asked about; :func:`create_blueprint` registers them for one app.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import quart_cors
from quart import Blueprint, Response, request
from quart_schema import (
    document_querystring,
    document_request,
    document_response,
    hide,
)

from .. import errors as e
from .. import metrics as metrics_text
from ..catalog import CatalogError
from ..config import Settings
from ..names import parse_modified_name, parse_process_id
from ..outcomes import Outcome
from ..store import MessageFilter
from . import errors, json_guard, schemas, shell, views
from .access import ROUTES, Route, action_of, check_access, check_request_bytes, per_app, route
from .openapi import problems
from .parsing import body, instance_number, json_object, message_filter, query
from .state import services, state


def _ok(payload: Mapping[str, Any], status: int = 200) -> Response:
    return Response(json_guard.dumps(payload), status=status, content_type="application/json")


def _outcome(outcome: Outcome) -> Response:
    msg = views.message_json(outcome.message) if outcome.message is not None else None
    if outcome.kind in ("buffered", "accepted") and outcome.message is not None:
        return _ok({"message_instance": views.message_summary(outcome.message)}, 202)
    if outcome.kind in ("delivered", "started", "reserved", "task_completed", "retried") \
            and outcome.instance is not None:
        return _ok({"task_data": outcome.task_data or {},
                    "process_instance": views.instance_json(outcome.instance),
                    "message_instance": msg})
    if outcome.kind == "process_error" and outcome.instance is not None:
        error = outcome.error or {}
        raise e.ProcessFailed(
            f"process instance {outcome.instance.id} failed in task {error.get('task')!r}: {error.get('message')}",
            task=error.get("task"), task_name=error.get("task_name"), error_type=error.get("error_type"),
            process_instance=views.instance_json(outcome.instance), message_instance=msg)
    raise e.MessageNotAccepted(outcome.reason or "message not accepted", message_instance=msg,
                               **({"reason": outcome.refusal} if outcome.refusal is not None else {}))


# -- messages ----------------------------------------------------------------------------------------------------
@route("POST", "/messages/<modified_message_name>", "send_message",
       path_error=(e.InvalidName, "modified_message_name"))
@document_request(schemas.Payload)
@document_response(schemas.DeliveredOut, 200)
@document_response(schemas.BufferedOut, 202)
@problems(400, 409, 413, 503)
async def send_message(modified_message_name: str) -> Response:
    """Send a message: to the waiting instance that correlates, else to a Message Start Event.

    Colons in the name stand for slashes: `orders:payment_failed` is message `payment_failed` in group
    `orders` and its sub-groups. With `time_to_live_in_seconds` > 0 a message nobody takes now is kept
    (`202`) until an instance comes to wait for it; otherwise it is answered `400 message_not_accepted`, whose
    `reason` says why. Sending again with the same `message_instance_uuid` returns the stored outcome.

    With `execution_mode=asynchronous` the message is stored and routed right after, by a worker: a message that
    will start a process (no waiting instance correlates, a Message Start Event takes it) is answered `200` with
    the instance reserved for it (`status: not_started`, `task_data: {}`), which that worker then starts; any
    other message `202` with the message (`status: running`).
    """
    parse_modified_name(modified_message_name, field="modified_message_name")
    options = query(schemas.SendQuery)
    payload = await json_object("message payload", "payload")
    return _outcome(await state().runtime.router.send_message(
        modified_message_name, payload, ttl=options.time_to_live_in_seconds,
        message_instance_uuid=options.message_instance_uuid or None,
        asynchronous=options.execution_mode == "asynchronous"))


@route("GET", "/messages/<message_ref>", "list_messages",
       path_error=(e.MessageNotFound, "message_ref"))
@document_response(schemas.BufferedOut, 200)
@problems(404)
async def show_message(message_ref: str) -> Response:
    """One message, by its id or its `message_instance_uuid`: how far it got (a message sent with
    `execution_mode=asynchronous` is `running` until a worker has routed it)."""
    msg = await state().runtime.reads.message(message_ref)
    return _ok({"message_instance": views.message_json(msg)})


@route("DELETE", "/messages/<message_instance_uuid>", "cancel_message",
       path_error=(e.InvalidMessageInstanceUuid, "message_instance_uuid"))
@document_response(schemas.BufferedOut, 200)
@problems(400, 404, 409, 503)
async def cancel_message(message_instance_uuid: str) -> Response:
    """Cancel a buffered message (status `cancelled`, failure cause `cancelled by request`)."""
    msg = await state().runtime.router.cancel_message(message_instance_uuid)
    return _ok({"message_instance": views.message_json(msg)})


async def _message_page(flt: MessageFilter, page: int, per_page: int) -> Response:
    reads = state().runtime.reads
    result = await reads.list_messages(flt, page, per_page)
    rows = [views.message_json(r.message, r.process_key, reads.display_name(r.process_key, r.process_id))
            for r in result.rows]
    return _ok(views.page_json(result, rows))


@route("GET", "/messages", "list_messages")
@document_querystring(schemas.MessageListQuery)
@document_response(schemas.MessageListOut, 200)
@problems(400)
async def list_messages() -> Response:
    """Messages, newest first, and the receivers waiting now (`receive` rows with status `ready` and the
    correlation keys they wait for). `status` and `message_type` take comma-separated values."""
    q = query(schemas.MessageListQuery)
    return await _message_page(message_filter(q), q.page, q.per_page)


@route("POST", "/messages", "list_messages")
@document_request(schemas.MessageSearch)
@document_querystring(schemas.SearchQuery)
@document_response(schemas.MessageListOut, 200)
@problems(400, 413)
async def search_messages() -> Response:
    """Messages matching the filters in the body (what Spiff Arena's UI calls), newest first, waiting receivers
    included. `process_instance_id` may come in the query string (the Messages tab of an instance) or the body;
    given in both, they must agree."""
    q = query(schemas.SearchQuery)
    f = await body(schemas.MessageSearch, "search filter")
    if None not in (q.process_instance_id, f.process_instance_id) and q.process_instance_id != f.process_instance_id:
        raise e.InvalidQueryParameter("process_instance_id: the query string and the body name different instances",
                                      field="process_instance_id")
    flt = MessageFilter(name=f.name, statuses=f.status, message_types=f.message_type,
                        process_instance_id=q.process_instance_id or f.process_instance_id,
                        created_after=f.created_after, created_before=f.created_before,
                        process_model_identifier=f.process_model_identifier)
    return await _message_page(flt, q.page, q.per_page)


# -- message models ----------------------------------------------------------------------------------------------
@route("GET", "/message-models", "read_message_models")
@document_response(schemas.MessageModelsOut, 200)
@problems(400)
async def message_models() -> Response:
    """The catalog: every message, its correlation properties, the processes it starts and where it is caught."""
    return _ok(views.catalog_json(state().runtime.catalog))


@route("GET", "/all-message-models", "read_message_models")
@document_response(schemas.MessageModelsOut, 200)
@problems(400)
async def all_message_models() -> Response:
    """Every message of the catalog (Spiff Arena's path for the whole list; the same as `/message-models`)."""
    return _ok(views.catalog_json(state().runtime.catalog))


@route("GET", "/message-models/<path:relative_location>", "read_message_models")
@document_response(schemas.MessageModelsOut, 200)
@problems(400)
async def message_models_at(relative_location: str) -> Response:
    """The messages a process group can use: those of that group and of the groups above it. The location is
    a group path; colons stand for slashes (`orders:eu` is `orders/eu`)."""
    location = relative_location.replace(":", "/").strip("/")
    return _ok(views.catalog_json(state().runtime.catalog, location))


@route("GET", "/messages/<modified_message_name>/process-model", "read_message_models",
       path_error=(e.InvalidName, "modified_message_name"))
@document_response(schemas.ProcessModelOfMessageOut, 200)
@problems(400)
async def process_model_of_message(modified_message_name: str) -> Response:
    """The process a message starts (its nearest Message Start Event in scope) and the file it is in. `400
    message_triggerable_process_model_not_found` when none does, `400
    multiple_message_triggerable_process_models_found` when several equally near do."""
    scoped = parse_modified_name(modified_message_name, field="modified_message_name")
    catalog = state().runtime.catalog
    starts = catalog.nearest_starts(scoped)
    if not starts:
        raise e.MessageTriggerableProcessModelNotFound(
            f"no process starts on message {modified_message_name!r}", message_name=scoped.name)
    if len(starts) > 1:
        keys = [s.process_key for s in starts]
        raise e.MultipleMessageTriggerableProcessModelsFound(
            f"message {modified_message_name!r} starts several processes ({', '.join(keys)}): send it with a "
            "group prefix to choose one", process_model_identifiers=keys)
    entry = catalog.processes[starts[0].process_key]
    return _ok({"process_model_identifier": entry.key, "file_name": Path(entry.file).name})


@route("POST", "/catalog/reload", "reload_catalog")
@document_response(schemas.ReloadOut, 200)
@problems(400, 422)
async def reload_catalog() -> Response:
    """Load the BPMN folder again; every worker follows within a second. Running instances keep the spec they
    started with; buffered messages that a new Message Start Event takes start it. A folder that does not load
    is answered `422 catalog_load_error` with the file and line, and the old catalog stays."""
    try:
        done = await state().reload()
    except CatalogError as exc:
        raise e.CatalogLoadError(str(exc), file=exc.file, line=exc.line, element_id=exc.element_id) from exc
    return _ok({"generation": done.generation, "processes": done.processes, "messages": done.messages,
                "buffered_messages_started": done.buffered_started})


# -- process instances -------------------------------------------------------------------------------------------
@route("POST", "/process-instances/<modified_process_id>", "start_process",
       path_error=(e.InvalidProcessId, "modified_process_id"))
@document_request(schemas.Payload)
@document_response(schemas.DeliveredOut, 201)
@problems(400, 404, 413, 503)
async def start_process(modified_process_id: str) -> Response:
    """Start a process through its plain start event; the body is its initial data."""
    parse_process_id(modified_process_id, field="modified_process_id")
    data = await json_object("initial data", "data", required=False)
    outcome = await state().runtime.router.start_process(modified_process_id, data)
    if outcome.kind == "process_error":
        return _outcome(outcome)
    assert outcome.instance is not None
    return _ok({"task_data": outcome.task_data or {},
                "process_instance": views.instance_json(outcome.instance)}, 201)


@route("GET", "/process-instances/<instance_id>", "read_process_instance",
       path_error=(e.InstanceNotFound, "instance_id"))
@document_response(schemas.InstanceOut, 200)
@problems(400, 404)
async def show_instance(instance_id: str) -> Response:
    """An instance: status, current data, and the messages it waits for with their correlation values."""
    view = await state().runtime.reads.instance_view(instance_number(instance_id))
    return _ok({"process_instance": views.instance_view_json(view)})


@route("GET", "/process-instances", "list_process_instances")
@document_querystring(schemas.InstanceListQuery)
@document_response(schemas.InstanceListOut, 200)
@problems(400)
async def list_instances() -> Response:
    """Process instances, newest first."""
    q = query(schemas.InstanceListQuery)
    key = parse_process_id(q.process_id, field="process_id").key if q.process_id else None
    page = await state().runtime.reads.list_instances(status=q.status, process_key=key, page=q.page,
                                                      per_page=q.per_page)
    return _ok(views.page_json(page, [views.instance_json(r) for r in page.rows]))


# -- tasks and events --------------------------------------------------------------------------------------------
@route("GET", "/tasks/<process_instance_id>/<task_guid>", "read_task", path_error=(e.TaskNotFound, "task_guid"))
@document_response(schemas.TaskOut, 200)
@problems(400, 404)
async def read_task(process_instance_id: str, task_guid: str) -> Response:
    """A task of an instance (Spiff Arena's task view): element id, name, type, state, data, its extension
    properties and form references. `task_guid` is the task's guid, or its element id."""
    task = await state().runtime.tasks.task(instance_number(process_instance_id), task_guid)
    return _ok(task.as_json())


@route("PUT", "/tasks/<process_instance_id>/<task_guid>", "complete_task",
       path_error=(e.TaskNotFound, "task_guid"))
@document_request(schemas.Payload)
@document_response(schemas.DeliveredOut, 200)
@problems(400, 404, 409, 413, 503)
async def complete_task(process_instance_id: str, task_guid: str) -> Response:
    """Complete a READY user, manual or plain task; the body (a JSON object) is merged into its data and the
    instance runs on to its next wait. `409 task_not_ready` when the task is not READY (a second completion)."""
    number = instance_number(process_instance_id)
    data = await json_object("task data", "data", required=False)
    return _outcome(await state().runtime.tasks.complete_task(number, task_guid, data))


@route("PUT", "/tasks/<process_instance_id>/<task_guid>/callback", "complete_service_task",
       path_error=(e.TaskNotFound, "task_guid"))
@document_request(schemas.Payload)
@document_response(schemas.DeliveredOut, 200)
@problems(400, 404, 409, 413, 503)
async def service_callback(process_instance_id: str, task_guid: str) -> Response:
    """Complete a waiting service task with its result (Spiff Arena's callback for long-running work): the body
    (a JSON object) goes to the task's result variable and the instance runs on. `409 service_task_not_waiting`
    when the task waits for no result (a second callback); `404` for an unknown instance or task."""
    number = instance_number(process_instance_id)
    result = await json_object("service result", "result", required=False)
    return _outcome(await services().complete(number, task_guid, result))


@route("POST", "/process-instances/<instance_id>/retry", "retry_process_instance",
       path_error=(e.InstanceNotFound, "instance_id"))
@document_response(schemas.DeliveredOut, 200)
@problems(400, 404, 409, 503)
async def retry_instance(instance_id: str) -> Response:
    """Run the failed task of an instance in `error` again, on the current spec of its process (reload a fixed
    folder first, or fix the service handler). `409 process_instance_not_in_error` otherwise."""
    return _outcome(await services().retry(instance_number(instance_id)))


@route("GET", "/events", "read_events")
@document_querystring(schemas.EventQuery)
@document_response(schemas.EventListOut, 200)
@problems(400)
async def read_events() -> Response:
    """The durable event feed, oldest first: instances started, waiting, completed, errored; messages delivered,
    buffered, not accepted, expired, cancelled; tasks ready. Each event is written in the transaction of its
    change; an event that commits late is shown late, never skipped (see Guarantees). Keep the last id you
    handled and ask for those `after` it (at least once). Purged with the messages (`SPIFF_MESSAGES_RETENTION_DAYS`)."""
    q = query(schemas.EventQuery)
    found = await state().runtime.reads.events(q.after, q.limit)
    return _ok({"results": [ev.as_json() for ev in found], "next_after": found[-1].id if found else q.after})


# -- the blueprints ----------------------------------------------------------------------------------------------
async def _access() -> None:
    """Before every view of the blueprint: the API key and the route's declared action, then the request's bytes.

    A CORS preflight (``OPTIONS``) carries no credentials by design and is answered without them.
    """
    if request.method == "OPTIONS":
        return
    view = request_view()
    action = action_of(view)
    if action is not None:
        await check_access(action)
    check_request_bytes(view)


def request_view() -> Callable[..., Any] | None:
    from quart import current_app

    return current_app.view_functions.get(request.endpoint or "")


def create_blueprint(settings: Settings) -> Blueprint:
    """The API blueprint of one app: every declared route, the Arena shell, problem+json for what is not a route."""
    bp = Blueprint("spiff_messages", __name__, template_folder=str(Path(__file__).parent.parent / "templates"))
    bp.before_request(_access)
    for found in [*ROUTES, *shell.ROUTES]:
        view = per_app(found)
        if found.view is send_message:  # the query string documented with this app's TTL maximum
            view = document_querystring(schemas.send_query_model(settings.max_ttl_seconds))(view)
        bp.add_url_rule(found.rule, endpoint=found.view.__name__, view_func=view, methods=[found.method])
    if settings.url_prefix:  # at the root the host app's own paths would be caught
        shell.add_unknown_routes(bp)
    if settings.cors_origins:
        quart_cors.cors(bp, allow_origin=list(settings.cors_origins),
                        allow_credentials="*" not in settings.cors_origins,
                        allow_headers=list(settings.cors_headers),
                        expose_headers=["Retry-After", "WWW-Authenticate"], max_age=600)
    errors.register_error_handlers(bp)
    return bp


def create_metrics_blueprint(settings: Settings) -> Blueprint:
    """``GET /metrics`` (the path is ``SPIFF_MESSAGES_METRICS_PATH``), outside the API prefix as Prometheus expects."""
    bp = Blueprint("spiff_messages_metrics", __name__)
    bp.before_request(_access)
    view = per_app(Route(settings.metrics_path, "GET", metrics, "read_metrics"))
    bp.add_url_rule(settings.metrics_path, endpoint="metrics", view_func=view, methods=["GET"])
    errors.register_error_handlers(bp)
    return bp


@hide
async def metrics() -> Response:
    return Response(await state().runtime.reads.metrics(), content_type=metrics_text.CONTENT_TYPE)
