"""HTTP routes: parse, hand to the router, answer. No decisions are taken here."""

from __future__ import annotations

import hmac
import inspect
import json as stdjson
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel, ValidationError
from quart import Blueprint, Response, current_app, render_template, request
from quart_schema import (
    RequestSchemaValidationError,
    document_querystring,
    document_request,
    document_response,
    hide,
)
from werkzeug.exceptions import HTTPException

from .. import errors as e
from .. import metrics as metrics_text
from ..catalog import CatalogError
from ..config import Settings
from ..names import parse_modified_name
from ..outcomes import Outcome
from ..scripts import current_caller
from ..store import MESSAGE_STATUSES, MessageFilter
from . import errors, json_guard, schemas, views

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])


def _state() -> Any:
    return current_app.extensions["spiff_messages"]


def _ok(body: Mapping[str, Any], status: int = 200) -> Response:
    return Response(json_guard.dumps(body), status=status, content_type="application/json")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def _json_object(what: str, root: str, required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object: 413 beyond the size limit, 400 ``invalid_payload`` for anything else.

    Non-finite numbers, lone surrogates and NUL are refused here, with ``field`` naming where (below ``root``):
    the store, the correlation index and every later answer could not hold them.
    """
    settings: Settings = _state().settings
    limit = settings.max_payload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise e.PayloadTooLarge(f"the {what} is larger than {limit} bytes")
    body = await request.get_data()
    raw = body if isinstance(body, bytes) else body.encode()
    if len(raw) > limit:
        raise e.PayloadTooLarge(f"the {what} is larger than {limit} bytes")
    if not raw.strip():
        if required:
            raise e.InvalidPayload(f"the {what} must be a JSON object; the body is empty")
        return {}
    try:
        text = raw.decode("utf-8")
        value = stdjson.loads(text, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise e.InvalidPayload(f"the {what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise e.InvalidPayload(f"the {what} must be a JSON object, not {type(value).__name__}")
    depth, clean = json_guard.scan(value, json_guard.may_hold_bad_strings(text))
    if depth > settings.max_payload_depth:
        raise e.InvalidPayload(f"the {what} is nested deeper than {settings.max_payload_depth} levels")
    if not clean:
        field, why = json_guard.flaw(value, root) or (root, "is not clean")
        raise e.InvalidPayload(f"the {what} is refused: {field} {why}", field=field)
    return value


ACTIONS = {
    "send_message": "send_message",
    "cancel_message": "cancel_message",
    "list_messages": "list_messages",
    "messages_page": "list_messages",
    "search_messages": "list_messages",
    "message_models": "read_message_models",
    "start_process": "start_process",
    "show_instance": "read_process_instance",
    "list_instances": "list_process_instances",
    "metrics": "read_metrics",
    "reload_catalog": "reload_catalog",
    "service_callback": "complete_service_task",
    "retry_instance": "retry_process_instance",
}


def _presented_key() -> str | None:
    key = request.headers.get("SpiffWorkflow-Api-Key")
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def check_access(action: str) -> None:
    """API key first (401), then the host app's ``authorize(request, action)`` hook (403)."""
    state = _state()
    keys: tuple[str, ...] = state.settings.api_keys
    if keys:
        presented = _presented_key()
        if presented is None or not any(hmac.compare_digest(presented.encode(), k.encode()) for k in keys):
            raise e.Unauthorized("a valid API key is required (header SpiffWorkflow-Api-Key or Authorization: "
                                 "Bearer)", headers={"WWW-Authenticate": "Bearer"})
    allowed = state.authorize(request, action)
    if inspect.isawaitable(allowed):
        allowed = await allowed
    if not allowed:
        raise e.Forbidden(f"not allowed to {action.replace('_', ' ')}")
    caller = state.identify(request)
    if inspect.isawaitable(caller):
        caller = await caller
    if caller is None and isinstance(allowed, Mapping):
        caller = allowed
    current_caller.set(caller)  # host functions of the runs this request causes are told


# A path segment that was not UTF-8 reaches the view as U+FFFD; it is refused as that route refuses a bad name.
# (A query parameter that is not clean is a 400 on every route, so every route documents a 400.)
_PATH_ERRORS: dict[str, tuple[type[e.SpiffMessagesError], str]] = {
    "send_message": (e.InvalidName, "modified_message_name"),
    "start_process": (e.InvalidProcessId, "modified_process_id"),
    "cancel_message": (e.InvalidMessageInstanceUuid, "message_instance_uuid"),
    "show_instance": (e.InstanceNotFound, "instance_id"),  # any id that is not a number is a 404 there
    "read_task": (e.TaskNotFound, "task_guid"),
    "complete_task": (e.TaskNotFound, "task_guid"),
    "service_callback": (e.TaskNotFound, "task_guid"),
    "retry_instance": (e.InstanceNotFound, "instance_id"),
}


def check_request_bytes(endpoint: str) -> None:
    """Refuse a query parameter or path segment that is not valid UTF-8 or holds NUL, before any view reads it."""
    found = json_guard.query_flaw(request.query_string)
    if found is not None:
        name, why = found
        raise e.InvalidQueryParameter(f"query parameter {name!r} {why}", field=name)
    if not json_guard.path_is_utf8(request.scope.get("raw_path")):
        error, field = _PATH_ERRORS.get(endpoint, (e.InvalidRequest, "path"))
        raise error(f"{field} is not valid UTF-8 once percent-decoded", field=field)


def _problems(*statuses: int) -> Callable[[F], F]:
    """Document the problem+json answers a route gives (401 and 403 are added to every route)."""

    def document(func: F) -> F:
        for status in statuses:
            func = document_response(schemas.Problem, status)(func)
        return func

    return document


def _query(model: type[M]) -> M:
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "query"
        raise e.InvalidQueryParameter(f"{field}: {first['msg']}", field=field) from exc


def _send_options(max_ttl: int) -> tuple[int, str | None]:
    """TTL and idempotency key from the query string; range and format are the router's to check."""
    raw_ttl = request.args.get("time_to_live_in_seconds", "0").strip() or "0"
    try:
        ttl = int(raw_ttl)
    except ValueError as exc:
        raise e.InvalidTimeToLive(f"time_to_live_in_seconds must be an integer from 0 to {max_ttl}") from exc
    key = request.args.get("message_instance_uuid") or None
    execution_mode = request.args.get("execution_mode")
    if execution_mode not in (None, "synchronous", "asynchronous"):
        raise e.InvalidExecutionMode("execution_mode is synchronous or asynchronous")
    return ttl, key


def _instance_number(instance_id: str) -> int:
    """An instance id from the path; anything that cannot be one is an instance that does not exist."""
    number = int(instance_id) if instance_id.isascii() and instance_id.isdigit() else 0
    if not 1 <= number <= schemas.MAX_INT:
        raise e.InstanceNotFound(f"no process instance {instance_id!r}")
    return number


def _outcome(outcome: Outcome) -> Response:
    msg = views.message_json(outcome.message) if outcome.message is not None else None
    if outcome.kind == "buffered" and outcome.message is not None:
        return _ok({"message_instance": views.message_summary(outcome.message)}, 202)
    if outcome.kind in ("delivered", "started", "task_completed", "retried") and outcome.instance is not None:
        return _ok({"task_data": outcome.task_data or {},
                    "process_instance": views.instance_json(outcome.instance),
                    "message_instance": msg})
    if outcome.kind == "process_error" and outcome.instance is not None:
        error = outcome.error or {}
        return errors.problem(
            400, "process_error",
            f"process instance {outcome.instance.id} failed in task {error.get('task')!r}: {error.get('message')}",
            task=error.get("task"), task_name=error.get("task_name"), error_type=error.get("error_type"),
            process_instance=views.instance_json(outcome.instance), message_instance=msg)
    return errors.problem(400, "message_not_accepted", outcome.reason or "message not accepted",
                          message_instance=msg)


def create_blueprint(settings: Settings) -> Blueprint:
    bp = Blueprint("spiff_messages", __name__, template_folder=str(Path(__file__).parent.parent / "templates"))
    max_ttl = settings.max_ttl_seconds

    @bp.before_request
    async def _access() -> None:
        endpoint = (request.endpoint or "").rpartition(".")[2]
        await check_access(ACTIONS.get(endpoint, endpoint))
        check_request_bytes(endpoint)

    @bp.post("/messages/<modified_message_name>")
    @document_request(schemas.Payload)
    @document_querystring(schemas.send_query_model(max_ttl))
    @document_response(schemas.DeliveredOut, 200)
    @document_response(schemas.BufferedOut, 202)
    @_problems(400, 409, 413, 503)
    async def send_message(modified_message_name: str) -> Response:
        """Send a message: to the waiting instance that correlates, else to a Message Start Event.

        Colons in the name stand for slashes: `orders:payment_failed` is message `payment_failed` in group
        `orders` and its sub-groups. With `time_to_live_in_seconds` > 0 a message nobody takes now is kept
        (`202`) until an instance comes to wait for it; otherwise it is answered `400 message_not_accepted`.
        Sending again with the same `message_instance_uuid` returns the stored outcome.
        """
        try:
            parse_modified_name(modified_message_name)
        except e.InvalidName as exc:
            raise e.InvalidName(exc.message, field="modified_message_name") from exc
        ttl, key = _send_options(max_ttl)
        payload = await _json_object("message payload", "payload")
        return _outcome(await _state().runtime.router.send_message(modified_message_name, payload, ttl=ttl,
                                                           message_instance_uuid=key))

    @bp.delete("/messages/<message_instance_uuid>")
    @document_response(schemas.BufferedOut, 200)
    @_problems(400, 404, 409, 503)
    async def cancel_message(message_instance_uuid: str) -> Response:
        """Cancel a buffered message (status `cancelled`, failure cause `cancelled by request`)."""
        msg = await _state().runtime.router.cancel_message(message_instance_uuid)
        return _ok({"message_instance": views.message_json(msg)})

    @bp.get("/messages")
    @document_querystring(schemas.MessageListQuery)
    @document_response(schemas.MessageListOut, 200)
    @_problems(400)
    async def list_messages() -> Response:
        """Messages, newest first. `status` and `message_type` take comma-separated values."""
        q = _query(schemas.MessageListQuery)
        flt = MessageFilter(name=q.name, statuses=_csv(q.status), message_types=_csv(q.message_type),
                            process_instance_id=q.process_instance_id)
        return await _message_page(flt, q.page, q.per_page)

    @bp.post("/messages")
    @document_request(schemas.MessageSearch)
    @document_querystring(schemas.PageQuery)
    @document_response(schemas.MessageListOut, 200)
    @_problems(400, 413)
    async def search_messages() -> Response:
        """Messages matching the filters in the body (what Spiff Arena's UI calls), newest first."""
        q = _query(schemas.PageQuery)
        try:
            body = schemas.MessageSearch.model_validate(await _json_object("search filter", "", required=False))
        except ValidationError as exc:
            raise e.InvalidRequest(str(exc)) from exc
        flt = MessageFilter(name=body.name, statuses=body.status, message_types=body.message_type,
                            process_instance_id=body.process_instance_id, created_after=body.created_after,
                            created_before=body.created_before)
        return await _message_page(flt, q.page, q.per_page)

    @bp.get("/messages-page")
    @hide
    async def messages_page() -> str:
        """The messages page for operators: newest first, filters by status and name, paged."""
        q = _query(schemas.MessageListQuery)
        flt = MessageFilter(name=q.name or None, statuses=_csv(q.status), message_types=_csv(q.message_type),
                            process_instance_id=q.process_instance_id)
        state = _state()
        result = await state.runtime.reads.list_messages(flt, q.page, q.per_page)
        now = state.clock()

        def page_url(number: int) -> str:
            return "?" + urlencode({**{k: v for k, v in request.args.items() if v}, "page": number})

        return await render_template(
            "spiff_messages/messages.html",
            rows=[views.page_row(r, now, settings.url_prefix) for r in result.rows],
            statuses=MESSAGE_STATUSES, status=q.status or "", name=q.name, per_page=q.per_page,
            total=result.total, page=q.page, pages=result.pages,
            newer_url=page_url(q.page - 1) if q.page > 1 else None,
            older_url=page_url(q.page + 1) if q.page < result.pages else None)

    @bp.get("/message-models")
    @document_response(schemas.MessageModelsOut, 200)
    @_problems(400)
    async def message_models() -> Response:
        """The catalog: every message, its correlation properties, the processes it starts and where it is caught."""
        return _ok(_catalog_json(_state().runtime.catalog))

    @bp.post("/catalog/reload")
    @document_response(schemas.ReloadOut, 200)
    @_problems(400, 422)
    async def reload_catalog() -> Response:
        """Load the BPMN folder again; every worker follows within a second. Running instances keep the spec they
        started with; buffered messages that a new Message Start Event takes start it. A folder that does not load
        is answered `422 catalog_load_error` with the file and line, and the old catalog stays."""
        try:
            done = await _state().reload()
        except CatalogError as exc:
            raise e.CatalogLoadError(str(exc), file=exc.file, line=exc.line, element_id=exc.element_id) from exc
        return _ok({"generation": done.generation, "processes": done.processes, "messages": done.messages,
                    "buffered_messages_started": done.buffered_started})

    @bp.post("/process-instances/<modified_process_id>")
    @document_request(schemas.Payload)
    @document_response(schemas.DeliveredOut, 201)
    @_problems(400, 404, 413, 503)
    async def start_process(modified_process_id: str) -> Response:
        """Start a process through its plain start event; the body is its initial data."""
        try:
            parse_modified_name(modified_process_id)
        except e.InvalidName as exc:
            raise e.InvalidProcessId(exc.message, field="modified_process_id") from exc
        data = await _json_object("initial data", "data", required=False)
        outcome = await _state().runtime.router.start_process(modified_process_id, data)
        if outcome.kind == "process_error":
            return _outcome(outcome)
        assert outcome.instance is not None
        return _ok({"task_data": outcome.task_data or {},
                    "process_instance": views.instance_json(outcome.instance)}, 201)

    @bp.get("/process-instances/<instance_id>")
    @document_response(schemas.InstanceOut, 200)
    @_problems(400, 404)
    async def show_instance(instance_id: str) -> Response:
        """An instance: status, current data, and the messages it waits for with their correlation values."""
        view = await _state().runtime.reads.instance_view(_instance_number(instance_id))
        return _ok({"process_instance": views.instance_view_json(view)})

    @bp.get("/tasks/<process_instance_id>/<task_guid>")
    @document_response(schemas.TaskOut, 200)
    @_problems(400, 404)
    async def read_task(process_instance_id: str, task_guid: str) -> Response:
        """A task of an instance (Spiff Arena's task view): element id, name, type, state, data, its extension
        properties and form references. `task_guid` is the task's guid, or its element id."""
        task = await _state().runtime.tasks.task(_instance_number(process_instance_id), task_guid)
        return _ok(task.as_json())

    @bp.put("/tasks/<process_instance_id>/<task_guid>")
    @document_request(schemas.Payload)
    @document_response(schemas.DeliveredOut, 200)
    @_problems(400, 404, 409, 413, 503)
    async def complete_task(process_instance_id: str, task_guid: str) -> Response:
        """Complete a READY user, manual or plain task; the body (a JSON object) is merged into its data and the
        instance runs on to its next wait. `409 task_not_ready` when the task is not READY (a second completion)."""
        number = _instance_number(process_instance_id)
        data = await _json_object("task data", "data", required=False)
        return _outcome(await _state().runtime.tasks.complete_task(number, task_guid, data))

    @bp.put("/tasks/<process_instance_id>/<task_guid>/callback")
    @document_request(schemas.Payload)
    @document_response(schemas.DeliveredOut, 200)
    @_problems(400, 404, 409, 413, 503)
    async def service_callback(process_instance_id: str, task_guid: str) -> Response:
        """Complete a waiting service task with its result (Spiff Arena's callback for long-running work): the body
        (a JSON object) goes to the task's result variable and the instance runs on. `409 service_task_not_waiting`
        when the task waits for no result (a second callback); `404` for an unknown instance or task."""
        number = _instance_number(process_instance_id)
        result = await _json_object("service result", "result", required=False)
        return _outcome(await _state().services.complete(number, task_guid, result))

    @bp.post("/process-instances/<instance_id>/retry")
    @document_response(schemas.DeliveredOut, 200)
    @_problems(400, 404, 409, 503)
    async def retry_instance(instance_id: str) -> Response:
        """Run the failed task of an instance in `error` again, on the current spec of its process (reload a fixed
        folder first, or fix the service handler). `409 process_instance_not_in_error` otherwise."""
        return _outcome(await _state().services.retry(_instance_number(instance_id)))

    @bp.get("/events")
    @document_querystring(schemas.EventQuery)
    @document_response(schemas.EventListOut, 200)
    @_problems(400)
    async def read_events() -> Response:
        """The durable event feed, oldest first: instances started, waiting, completed, errored; messages delivered,
        buffered, not accepted, expired, cancelled; tasks ready. Each event is written in the transaction of its
        change and ids are in commit order: keep the last id you handled and ask for those `after` it (at least
        once). Purged with the messages (`SPIFF_MESSAGES_RETENTION_DAYS`)."""
        q = _query(schemas.EventQuery)
        found = await _state().runtime.reads.events(q.after, q.limit)
        return _ok({"results": [ev.as_json() for ev in found],
                    "next_after": found[-1].id if found else q.after})

    @bp.get("/process-instances")
    @document_querystring(schemas.InstanceListQuery)
    @document_response(schemas.InstanceListOut, 200)
    @_problems(400)
    async def list_instances() -> Response:
        """Process instances, newest first."""
        q = _query(schemas.InstanceListQuery)
        try:
            key = parse_modified_name(q.process_id).key if q.process_id else None
        except e.InvalidName as exc:
            raise e.InvalidQueryParameter(f"process_id: {exc.message}", field="process_id") from exc
        page = await _state().runtime.reads.list_instances(status=q.status, process_key=key, page=q.page,
                                                     per_page=q.per_page)
        return _ok(views.page_json(page, [views.instance_json(r) for r in page.rows]))

    _error_handlers(bp)
    return bp


def create_metrics_blueprint(settings: Settings) -> Blueprint:
    """``GET /metrics`` (the path is ``SPIFF_MESSAGES_METRICS_PATH``), outside the API prefix as Prometheus expects."""
    bp = Blueprint("spiff_messages_metrics", __name__)

    @bp.before_request
    async def _access() -> None:
        await check_access("read_metrics")
        check_request_bytes("metrics")

    @bp.get(settings.metrics_path)
    @hide
    async def metrics() -> Response:
        return Response(await _state().runtime.reads.metrics(), content_type=metrics_text.CONTENT_TYPE)

    _error_handlers(bp)
    return bp


def _error_handlers(bp: Blueprint) -> None:
    bp.register_error_handler(e.SpiffMessagesError, errors.on_refusal)
    bp.register_error_handler(RequestSchemaValidationError, errors.on_validation_error)
    bp.register_error_handler(HTTPException, errors.on_http_error)
    bp.register_error_handler(Exception, errors.on_unexpected)


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


async def _message_page(flt: MessageFilter, page: int, per_page: int) -> Response:
    result = await _state().runtime.reads.list_messages(flt, page, per_page)
    return _ok(views.page_json(result, [views.message_json(r) for r in result.rows]))


def _catalog_json(catalog: Any) -> dict[str, Any]:
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
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for p in [*starts.get(name, ()), *catches.get(name, ())]:
            for d in props(p.properties):
                seen.setdefault((d["identifier"], d["retrieval_expression"]), d)
        processes = sorted({p.process_key for p in [*starts.get(name, ()), *catches.get(name, ())]})
        out.append({
            "identifier": name,
            "location": groups[0] if len(groups) == 1 else "",
            "process_groups": groups,
            "correlation_properties": list(seen.values()),
            "process_model_identifiers": processes,
            "start_events": [point(s) for s in starts.get(name, ())],
            "catch_points": [{**point(c), "kind": c.kind, "interrupting": c.interrupting,
                              "correlation_properties": props(c.properties)} for c in catches.get(name, ())],
        })
    return {"messages": out}
