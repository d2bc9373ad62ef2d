"""The operator console under ``{prefix}/console/``: messages, instances (each drawn as its BPMN diagram with where it
stands), processes. Server-rendered pages plus bpmn-js and a small script of ours, all served from the package
(nothing is loaded from elsewhere, so it works offline).

Every page and every button declares its action (:class:`.access.Route`), asked of the host app's
``authorize(request, action)`` hook as the API's routes are. A browser cannot add the API key to a link, so the
sign-in form puts the key in an HttpOnly, SameSite=Strict cookie that only these routes read. Buttons are forms
posted to this blueprint, which call the same router, task and service functions as the JSON API (no second write
path) and answer with a redirect to the page, saying what happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from lxml import etree
from quart import Blueprint, Response, render_template, request
from quart_schema import hide

from .. import errors as e
from ..config import Settings
from ..store import MESSAGE_STATUSES, MessageFilter
from ..store.models import INSTANCE_STATUSES
from . import console_views as cv
from .access import CONSOLE_COOKIE, Route, action_of, check_access, check_request_bytes, is_a_key, key_is_valid, per_app
from .errors import problem, register_error_handlers
from .json_guard import dumps_text
from .parsing import instance_number, json_object_from, message_filter, query
from .routes import request_view
from .schemas import InstanceListQuery, MessageListQuery
from .state import services, state

STATIC = Path(__file__).resolve().parent.parent / "static" / "console"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
_CACHE = {"Cache-Control": "public, max-age=3600"}
BPMN = "http://www.omg.org/spec/BPMN/20100524/MODEL"
BPMNDI = "http://www.omg.org/spec/BPMN/20100524/DI"


def redirect(location: str, status: int = 303) -> Response:
    return Response("", status=status, headers={"Location": location})


def _base() -> str:
    return f"{state().settings.url_prefix}/console"


def _back(page: str, **notice: str) -> Response:
    """A redirect to one of the console's pages (never elsewhere), its filters kept, with what happened added to
    its query string."""
    parts = urlsplit(page)
    path = parts.path if parts.path.startswith(_base() + "/") and "//" not in parts.path else f"{_base()}/instances"
    kept = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("done", "error")]
    query_string = urlencode(kept + [(k, v) for k, v in notice.items() if v])
    return redirect(f"{path}?{query_string}" if query_string else path, 303)


# -- sign-in ---------------------------------------------------------------------------------------------------------
async def login_page() -> str:
    return await render_template("spiff_messages/console/login.html", base=_base(),
                                 next=request.args.get("next", ""), failed=request.args.get("failed") == "1")


async def login() -> Response:
    form = await request.form
    key, target = form.get("key", ""), form.get("next", "")
    if not target.startswith(_base() + "/"):
        target = f"{_base()}/instances"
    if not is_a_key(key):
        return redirect(f"{_base()}/login?{urlencode({'next': target, 'failed': '1'})}", 303)
    response = redirect(target, 303)
    response.set_cookie(CONSOLE_COOKIE, key, httponly=True, samesite="Strict", path=_base(),
                        secure=request.scheme == "https")
    return response


async def logout() -> Response:
    response = redirect(f"{_base()}/login", 303)
    response.delete_cookie(CONSOLE_COOKIE, path=_base())
    return response


# -- pages -----------------------------------------------------------------------------------------------------------
async def index() -> Response:
    return redirect(f"{_base()}/instances", 303)


async def messages_page_moved() -> Response:
    """The messages page moved to the console; old links keep their filters."""
    target = f"{_base()}/messages"
    return redirect(f"{target}?{request.query_string.decode()}" if request.query_string else target, 301)


def _page_url(number: int) -> str:
    return "?" + urlencode({**{k: v for k, v in request.args.items() if v and k not in ("done", "error")},
                            "page": number})


def _pager(page: int, pages: int) -> dict[str, Any]:
    return {"page": page, "pages": pages, "newer_url": _page_url(page - 1) if page > 1 else None,
            "older_url": _page_url(page + 1) if page < pages else None}


def _notice() -> dict[str, str]:
    return {"done": request.args.get("done", ""), "error": request.args.get("error", "")}


async def messages() -> str:
    q = query(MessageListQuery, blank_is_absent=True)
    st = state()
    reads = st.runtime.reads
    result = await reads.list_messages(message_filter(q), q.page, q.per_page)
    counterparts = [r.message.counterpart_id for r in result.rows
                    if r.message.process_instance_id is None and r.message.counterpart_id is not None]
    reached = await reads.instances_of_messages(counterparts)
    now = st.runtime.store.estimated_now()  # the clock the times were written with
    rows = [cv.message_row(r.message, now, r.message.process_instance_id if r.message.process_instance_id is not None
                           else reached.get(r.message.counterpart_id or 0)) for r in result.rows]
    processes = sorted(st.runtime.catalog.processes)
    return await render_template(
        "spiff_messages/console/messages.html", base=_base(), section="messages", rows=rows,
        statuses=MESSAGE_STATUSES, q=q, processes=processes, total=result.total, here=request.full_path,
        **_pager(q.page, result.pages), **_notice())


async def instances() -> str:
    q = query(InstanceListQuery, blank_is_absent=True)
    st = state()
    reads = st.runtime.reads
    key = q.process_id.replace(":", "/") if q.process_id else None
    result = await reads.list_instances(status=q.status, process_key=key, page=q.page, per_page=q.per_page)
    waits = await reads.waits_of([r.id for r in result.rows])
    rows = [{"id": r.id, "status": r.status, "process": r.process_key,
             "name": reads.display_name(r.process_key, r.process_id), "created": cv.iso(r.created_at),
             "updated": cv.iso(r.updated_at), "waits": waits.get(r.id, []),
             "error": (r.error or {}).get("message")} for r in result.rows]
    return await render_template(
        "spiff_messages/console/instances.html", base=_base(), section="instances", rows=rows, q=q,
        statuses=INSTANCE_STATUSES, processes=sorted(st.runtime.catalog.processes), total=result.total,
        **_pager(q.page, result.pages))


async def instance(instance_id: str) -> str:
    number = instance_number(instance_id)
    st = state()
    reads = st.runtime.reads
    row, states = await reads.element_states(number)
    view = await reads.instance_view(number)
    workflow = request.args.get("workflow") or None
    spawner = next((r for r in states if r.guid == workflow), None) if workflow else None
    if workflow is not None and (spawner is None or spawner.called_process is None):
        raise e.TaskNotFound(f"process instance {number} has no called process {workflow!r}")
    shown = cv.rows_of_workflow(states, workflow)
    drawn = spawner.called_process if spawner is not None and spawner.called_process else row.process_id
    listed = await reads.list_messages(MessageFilter(process_instance_id=number), 1, 100)
    events = await reads.instance_events(number, 50)
    now = st.runtime.store.estimated_now()  # the clock the times were written with
    return await render_template(
        "spiff_messages/console/instance.html", base=_base(), section="instances", row=row, view=view,
        name=reads.display_name(row.process_key, row.process_id), data=dumps_text(view.data, indent=2),
        marks=cv.diagram_marks(shown), drawn=drawn, spawner=spawner,
        diagram_url=f"{_base()}/diagram/{row.process_key}?{urlencode({'process': drawn})}",
        calls=[{"guid": c.guid, "element_id": c.element_id, "name": c.name or c.element_id, "called": c.called_process,
                "marker": c.marker} for c in cv.called_workflows(shown)],
        legend=LEGEND, waits=[w for w in view.waiting_for if w.get("kind") == "message"],
        timers=[{"element_id": t.element_id, "type": t.timer_type, "due": cv.iso(t.due_at),
                 "relative": cv.relative(t.due_at, now)} for t in view.timers],
        tasks=[{"guid": t.id, "element_id": t.element_id, "name": t.name or t.element_id, "type": t.type,
                "data": cv.json_cell(t.data)} for t in view.tasks],
        services=view.services, failure=row.error,
        messages=[cv.message_row(m.message, now, number) for m in listed.rows],
        events=[{"id": ev.id, "kind": ev.kind, "at": cv.iso(ev.created_at), "ago": cv.relative(ev.created_at, now),
                 "message": ev.message_instance_id, "data": cv.json_cell(dict(ev.data)) if ev.data else None}
                for ev in events],
        started=cv.iso(row.created_at), here=f"{_base()}/instances/{number}", **_notice())


LEGEND = [("completed", "ran to its end"), ("active", "a call activity or subprocess that runs now"),
          ("waiting", "waits for a message, a timer or a service result"), ("ready", "a human task to complete"),
          ("error", "where the instance failed"), ("cancelled", "cancelled (another path won)")]


async def processes() -> str:
    st = state()
    catalog = st.runtime.catalog
    groups: dict[str, list[dict[str, Any]]] = {}
    for key in sorted(catalog.processes):
        entry = catalog.processes[key]
        groups.setdefault(entry.group, []).append({
            "key": key, "process_id": entry.process_id, "name": entry.display_name, "file": Path(entry.file).name,
            "plain_start": entry.has_plain_start, "timer_starts": [t.element_id for t in entry.timer_starts],
            "message_starts": sorted({n for n, ps in catalog.starts.items() for p in ps if p.process_key == key}),
            "catches": sorted({n for n, ps in catalog.catches.items() for p in ps if p.process_key == key}),
            "throws": sorted({n for n, ps in catalog.throws.items() for p in ps if p.process_key == key}),
            "diagram_url": f"{_base()}/diagram/{key}?{urlencode({'process': entry.process_id})}",
            "instances_url": f"{_base()}/instances?{urlencode({'process_id': key.replace('/', ':')})}"})
    shown = request.args.get("process")
    if shown not in catalog.processes:  # none asked for (or gone after a reload): the first one
        shown = next(iter(sorted(catalog.processes)), None)
    return await render_template("spiff_messages/console/processes.html", base=_base(), section="processes",
                                 groups=sorted(groups.items()), shown=shown, legend=[])


async def diagram(process_key: str) -> Response:
    """The BPMN file that draws ``process`` (the process itself or one it calls), as the catalog has it now.

    When the file has no diagram interchange for that process, the process is moved first among the file's
    processes, so the browser's automatic layout (which lays out the first process) draws it.
    """
    entry = state().runtime.catalog.process(process_key)
    if entry is None:
        raise e.ProcessNotFound(f"no process {process_key!r}")
    wanted = request.args.get("process") or entry.process_id
    spec = entry.spec if wanted == entry.process_id else entry.subprocess_specs.get(wanted)
    file = getattr(spec, "file", None) if spec is not None else None
    if not file:
        raise e.ProcessNotFound(f"process {process_key!r} draws no process {wanted!r}")
    return Response(_drawable(await asyncio.to_thread(Path(file).read_bytes), wanted), content_type="application/xml",
                    headers={"Cache-Control": "no-store"})


def _drawable(source: bytes, process_id: str) -> bytes:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=False)
    root = etree.fromstring(source, parser)
    drawn = {p.get("bpmnElement") for p in root.iter(f"{{{BPMNDI}}}BPMNPlane")}
    drawn |= {s.get("bpmnElement") for s in root.iter(f"{{{BPMNDI}}}BPMNShape")}
    participants = {p.get("id"): p.get("processRef") for p in root.iter(f"{{{BPMN}}}participant")}
    if process_id in drawn or any(ref == process_id and pid in drawn for pid, ref in participants.items()):
        return source
    processes = [p for p in root.findall(f"{{{BPMN}}}process")]
    target = next((p for p in processes if p.get("id") == process_id), None)
    if target is None:  # an embedded subprocess: its file is drawn as a whole
        return source
    first = processes[0]
    if target is not first:
        first.addprevious(target)
    for diagram in root.findall(f"{{{BPMNDI}}}BPMNDiagram"):  # a diagram of another process would be shown first
        root.remove(diagram)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


async def static_file(name: str) -> Response:
    path = (STATIC / name).resolve()
    if STATIC not in path.parents or not path.is_file() or path.suffix not in _TYPES:
        return problem(404, "route_not_found", f"the console has no file {name!r}")
    return Response(path.read_bytes(), content_type=_TYPES[path.suffix], headers=_CACHE)


# -- buttons ---------------------------------------------------------------------------------------------------------
async def _act(back: str, act: Callable[[], Any], done: str) -> Response:
    try:
        await act()
    except e.SpiffMessagesError as exc:
        if exc.status >= 500:
            raise
        return _back(back, error=exc.message)
    return _back(back, done=done)


async def retry(instance_id: str) -> Response:
    number = instance_number(instance_id)

    async def act() -> None:
        outcome = await services().retry(number)
        if outcome.kind == "process_error":
            raise e.ProcessFailed(f"the retried task failed again: {(outcome.error or {}).get('message')}")

    return await _act(f"{_base()}/instances/{number}", act, f"process instance {number} retried")


async def complete_task(instance_id: str, task_guid: str) -> Response:
    number = instance_number(instance_id)
    form = await request.form
    back = f"{_base()}/instances/{number}"

    async def act() -> None:
        data = json_object_from(form.get("data", "").encode(), "task data", "data", required=False)
        outcome = await state().runtime.tasks.complete_task(number, task_guid, data)
        if outcome.kind == "process_error":
            raise e.ProcessFailed(f"the task was completed; then the instance failed: "
                                  f"{(outcome.error or {}).get('message')}")

    return await _act(back, act, f"task {task_guid} completed")


async def cancel_message(message_instance_uuid: str) -> Response:
    form = await request.form
    back = form.get("back", "") or f"{_base()}/messages"
    return await _act(back, lambda: state().runtime.router.cancel_message(message_instance_uuid),
                      f"message {message_instance_uuid} cancelled")


ROUTES = [
    Route("/console", "GET", index, "list_process_instances"),
    Route("/console/login", "GET", login_page, None),
    Route("/console/login", "POST", login, None),
    Route("/console/logout", "POST", logout, None),
    Route("/console/static/<path:name>", "GET", static_file, None),  # bpmn-js and our script: nothing secret
    Route("/messages-page", "GET", messages_page_moved, None),  # a redirect only: the page it leads to checks
    Route("/console/messages", "GET", messages, "list_messages"),
    Route("/console/messages/<message_instance_uuid>/cancel", "POST", cancel_message, "cancel_message",
          (e.InvalidMessageInstanceUuid, "message_instance_uuid")),
    Route("/console/instances", "GET", instances, "list_process_instances"),
    Route("/console/instances/<instance_id>", "GET", instance, "read_process_instance",
          (e.InstanceNotFound, "instance_id")),
    Route("/console/instances/<instance_id>/retry", "POST", retry, "retry_process_instance",
          (e.InstanceNotFound, "instance_id")),
    Route("/console/instances/<instance_id>/tasks/<task_guid>", "POST", complete_task, "complete_task",
          (e.TaskNotFound, "task_guid")),
    Route("/console/processes", "GET", processes, "read_message_models"),
    Route("/console/diagram/<path:process_key>", "GET", diagram, "read_message_models"),
]


async def _access() -> Response | None:
    """The API's checks, with the sign-in cookie as a key; a page asked for without a key goes to the sign-in
    form. A button's form must come from this origin (a cross-site form carries no SameSite=Strict cookie, but a
    host app that authorizes by its own cookie would otherwise be open to it)."""
    view = request_view()
    action = action_of(view)
    if action is not None:
        if request.method == "GET" and not key_is_valid(console=True):
            return redirect(f"{_base()}/login?{urlencode({'next': request.full_path.rstrip('?')})}", 303)
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc != request.host:
                raise e.Forbidden("a console form must be sent from the console's own pages")
        await check_access(action, console=True)
    check_request_bytes(view)
    return None


def create_console_blueprint(settings: Settings) -> Blueprint:
    bp = Blueprint("spiff_messages_console", __name__,
                   template_folder=str(Path(__file__).parent.parent / "templates"))
    bp.before_request(_access)
    for found in ROUTES:
        bp.add_url_rule(found.rule, endpoint=f"{found.view.__name__}_{found.method.lower()}",
                        view_func=hide(per_app(found)), methods=[found.method])
    register_error_handlers(bp)
    return bp
