"""The Quart extension: ``SpiffMessages(app)`` or ``ext.init_app(app)``.

Configuration comes from ``app.config`` (``SPIFF_MESSAGES_*``); the state of each app lives in
``app.extensions["spiff_messages"]``. The catalog is built and the database opened and migrated before the app
serves, and both are released when it stops.

Blueprints: the API under the URL prefix; ``/metrics``; and the health probes ``/livez`` and ``/readyz`` (outside
the prefix and the access checks: probes carry no credentials).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from quart import Quart, current_app
from quart_schema import QuartSchema

from . import events as signals
from .api import create_blueprint, create_health_blueprint, create_metrics_blueprint
from .api.console import create_console_blueprint
from .api.openapi import ExtensionDocument, ProblemAwareProvider
from .api.state import EXTENSION_KEY, Authorize, Identify
from .api.ui import create_ui_blueprint
from .catalog import Catalog, CatalogError
from .clock import Clock, ManualClock
from .config import Settings
from .engine import Engine, HumanTask
from .events import Event
from .logs import quiet_healthy_service_waits
from .outcomes import Outcome
from .queued import Wake
from .runtime import Runtime
from .scripts import current_caller
from .services import DEFAULT_KEY, Handler, Services, load_handlers
from .store import MessageRecord, Store
from .timers import Alarm

log = logging.getLogger("quart_spiff_messages")
F = TypeVar("F", bound=Callable[..., Any])
# Queued messages routed per turn of the routing loop (then it looks at the queue again at once).
QUEUE_ROUND = 1000
# How soon the routing loop looks at the queue again after a round that routed something (a read; backs off to the
# timer interval while the queue stays empty): another process's accepts reach a routing process this late at most.
QUEUE_POLL_BUSY_SECONDS = 0.01

__all__ = ["EXTENSION_KEY", "Authorize", "Reloaded", "SpiffMessages"]


@dataclass
class _AppState:
    """Everything one app's extension owns. ``runtime`` and ``store`` exist while the app serves."""

    settings: Settings
    clock: Clock
    authorize: Authorize
    identify: Identify | None = None
    _runtime: Runtime | None = None
    _store: Store | None = None
    services: Services | None = None  # calls the host's service handlers (while the app serves)
    sweeper: asyncio.Task[None] | None = None
    work_loop: asyncio.Task[None] | None = None  # timers and service calls
    route_loop: asyncio.Task[None] | None = None  # messages accepted asynchronously
    alarm: Alarm | None = None
    generation: int = 0  # the catalog generation this process has loaded
    extension: SpiffMessages | None = None  # the one that mounted it: its functions and handlers, for check --app
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("quart-spiff-messages is not started: run inside the app (before_serving)")
        return self._runtime

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("quart-spiff-messages is not started: run inside the app (before_serving)")
        return self._store

    async def reload(self, following: int | None = None) -> Reloaded:
        """Load the BPMN folder again and swap the catalog; a folder that does not load changes nothing.

        A reload asked of this process bumps the catalog generation in the database, so every other worker (and
        host) follows; one ``following`` a generation another process asked for loads that generation.
        """
        async with self.reload_lock:
            catalog = await asyncio.to_thread(Catalog.load, self.settings.bpmn_dir)  # raises CatalogError
            await _save_specs(self.store, self.runtime.engine, catalog)
            generation = following if following is not None else \
                await self.store.write(lambda tx: tx.bump_catalog_generation())
            runtime = self.runtime.with_catalog(catalog)
            self._runtime, self.generation = runtime, generation
            await runtime.timers.schedule_starts()
        started = await runtime.upkeep.start_buffered()
        log.info("catalog generation %d loaded: %d processes, %d messages; %d buffered messages started",
                 generation, len(catalog.processes), len(catalog.messages), started)
        return Reloaded(generation, len(catalog.processes), len(catalog.messages), started)

    async def follow_reloads(self) -> None:
        """Reload when another process asked for it (SIGHUP to serve, ``spiff-messages reload``, another worker)."""
        generation = await self.store.read(lambda tx: tx.catalog_generation())
        if generation != self.generation:
            try:
                await self.reload(following=generation)
            except CatalogError as exc:
                self.generation = generation  # reported once; the next reload request tries again
                log.error("catalog reload %d refused, the old catalog stays: %s", generation, exc)


@dataclass(frozen=True)
class Reloaded:
    generation: int
    processes: int
    messages: int
    buffered_started: int


async def _save_specs(store: Store, engine: Engine, catalog: Catalog) -> None:
    """Store each spec version once, so instances resume on the spec they started with after a change."""
    missing = await store.missing_specs((p.key, p.spec_version) for p in catalog.processes.values())
    if missing:
        await store.save_specs((p.key, p.spec_version, engine.dump_spec(p))
                               for p in catalog.processes.values() if (p.key, p.spec_version) in missing)


class SpiffMessages:
    """Mount message routing on a Quart app."""

    def __init__(self, app: Quart | None = None, *, clock: Clock | None = None,
                 authorize: Authorize | None = None, identify: Identify | None = None,
                 script_functions: Mapping[str, Callable[..., Any]] | None = None,
                 service_handlers: Mapping[str, Handler] | None = None,
                 default_service_handler: Handler | None = None) -> None:
        """``authorize(request, action)`` (optional, may be async) lets the host app allow or refuse (403) each
        request; actions: send_message, cancel_message, list_messages, read_message_models,
        start_process, read_process_instance, list_process_instances, read_task, complete_task, read_events,
        reload_catalog, read_metrics, check_permissions (``POST /permissions-check``, which then asks the hook about
        the action of each URI it is given); ``GET /status`` asks it about list_messages; the console's pages and
        buttons ask for the action of the operation each stands for. Signals
        (``quart_spiff_messages.events``) go out after each commit, with the app as sender.

        ``clock`` (a test's :class:`~quart_spiff_messages.clock.ManualClock`) decides every time alone; without one
        the time of each transaction is the database's on PostgreSQL (one clock for every host) and ``time.time``
        on SQLite.

        ``script_functions`` (or the :meth:`script_function` decorator) are functions BPMN scripts and expressions
        can call; one with a ``context`` parameter gets a :class:`~quart_spiff_messages.scripts.ScriptContext`
        (instance, process, task, and ``caller``: what ``identify(request)`` returned, or the mapping ``authorize``
        returned, for the request that caused the run).

        ``service_handlers`` (operator id -> handler, or the :meth:`service_handler` decorator) do the work of
        service tasks: ``async def handler(call: ServiceCall) -> result``, called after the commit that made the
        instance wait, retried with backoff when it raises; ``default_service_handler`` takes every operator without
        one of its own. A service task with no handler waits for ``PUT /tasks/{instance}/{task}/callback``.
        More actions for ``authorize``: complete_service_task (the callback), retry_process_instance,
        read_process_models (Spiff Arena's process models and groups), and read_openapi (the OpenAPI document and
        its UI, with ``SPIFF_MESSAGES_OPENAPI_AUTHORIZE``)."""
        self.app = app
        self.clock: Clock = clock or time.time
        self.authorize = authorize
        self.identify = identify
        self.script_functions: dict[str, Callable[..., Any]] = dict(script_functions or {})
        self.service_handlers: dict[str, Handler] = dict(service_handlers or {})
        self.default_service_handler = default_service_handler
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Quart) -> None:
        quiet_healthy_service_waits()
        settings = Settings.from_mapping(app.config)
        state = _AppState(settings=settings, clock=lambda: self.clock(),
                          authorize=lambda request, action: self.authorize(request, action)
                          if self.authorize is not None else True,
                          identify=lambda request: self.identify(request) if self.identify is not None else None,
                          extension=self)
        app.extensions[EXTENSION_KEY] = state
        if settings.service_handlers:  # handlers named in the configuration; those given here win
            named = load_handlers(settings.service_handlers)
            if self.default_service_handler is None and DEFAULT_KEY in named:
                self.default_service_handler = named[DEFAULT_KEY]
            self.service_handlers = {**{k: v for k, v in named.items() if k != DEFAULT_KEY}, **self.service_handlers}
        app.register_blueprint(create_blueprint(settings), url_prefix=settings.url_prefix or None)
        _answer_refusals_in_host_views(app)
        app.register_blueprint(create_console_blueprint(settings), url_prefix=settings.url_prefix or None)
        if settings.metrics_path:
            app.register_blueprint(create_metrics_blueprint(settings))
        if settings.liveness_path or settings.readiness_path:
            app.register_blueprint(create_health_blueprint(settings))
        if settings.body_timeout_seconds is not None:  # app-wide in Quart: only when asked for
            app.config["BODY_TIMEOUT"] = settings.body_timeout_seconds
        if settings.openapi:
            if "QUART_SCHEMA" not in app.extensions:  # the document is built with Quart-Schema's settings
                QuartSchema(app, openapi_path=None, swagger_ui_path=None, redoc_ui_path=None, scalar_ui_path=None,
                            openapi_provider_class=ProblemAwareProvider)
            # the extension's own document (its operations, its title), whatever document the host serves
            document = ExtensionDocument(app, settings.url_prefix, _description(settings), _version())
            app.register_blueprint(create_ui_blueprint(settings, document))

        @app.before_serving
        async def _start() -> None:
            await self._start(app)

        @app.after_serving
        async def _stop() -> None:
            await self._stop(app)

        from .cli import app_group

        app.cli.add_command(app_group)

    async def _start(self, app: Quart) -> None:
        state: _AppState = app.extensions[EXTENSION_KEY]
        catalog = Catalog.load(state.settings.bpmn_dir)
        # no clock given (the host's): on PostgreSQL the database's clock decides; a test's clock decides alone
        store = Store(state.settings.database_url, state.clock, state.settings.lock_timeout_seconds,
                      state.settings.database_retry_seconds, database_clock=self.clock is time.time)
        try:
            await store.upgrade()
            engine = Engine(correlate_from_data=state.settings.correlate_from_data,
                            script_functions=self.script_functions, warm_instances=state.settings.warm_instances)
            await _save_specs(store, engine, catalog)
            state.generation = await store.read(lambda tx: tx.catalog_generation())
            state.reload_lock = asyncio.Lock()  # this serving loop's own
        except BaseException:
            await store.dispose()
            raise
        services = Services(lambda: state.runtime, self.service_handlers, lambda: self.default_service_handler,
                            state.settings.service_attempts, state.settings.service_backoff_seconds,
                            state.settings.service_lease_seconds)
        store.on_commit = lambda events: signals.send(app, events)
        state._store, state.services = store, services
        state._runtime = Runtime.create(catalog, engine, store, state.settings.max_ttl_seconds)
        recovered = await state._runtime.upkeep.recover()
        if recovered:
            log.info("re-offered %d thrown messages left ready by an earlier run", recovered)
        await state._runtime.timers.schedule_starts()
        loop = asyncio.get_running_loop()
        state.sweeper = loop.create_task(self._sweep_forever(state))
        alarm = state.alarm = Alarm(store.estimated_now, state.settings.timer_interval_seconds or 1.0)
        store.on_due = alarm.due
        if isinstance(self.clock, ManualClock):
            self.clock.listeners.append(alarm.ring)
        state.work_loop = loop.create_task(self._work_forever(state, services, alarm))
        if state.settings.route_queued:
            wake = Wake()
            state._runtime.router.on_queued = wake.ring
            state.route_loop = loop.create_task(self._route_forever(state, wake))

    async def _route_forever(self, state: _AppState, wake: Wake) -> None:
        """Route the messages accepted asynchronously while the app serves: at once when this worker queues one,
        and at least every timer interval (what other workers queued or left behind). Other processes' accepts
        wake nothing here, so after a round that found messages the queue is looked at again soon
        (:data:`QUEUE_POLL_BUSY_SECONDS`), then less and less often, up to the interval, while it stays empty."""
        interval = state.settings.timer_interval_seconds or 1.0
        pause = interval
        while True:
            routed = 0
            try:
                routed = await state.runtime.queued.route_all(state.settings.queue_batch, QUEUE_ROUND)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("routing queued messages failed; retrying")
            pause = min(QUEUE_POLL_BUSY_SECONDS, interval) if routed else min(pause * 2, interval)
            await wake.sleep(pause)

    async def _work_forever(self, state: _AppState, services: Services, alarm: Alarm) -> None:
        """Fire due timers and call due service handlers while the app serves: at each nearest due time, at once
        when this worker commits something due sooner, and at least every interval (what other workers wrote)."""
        timers = state.settings.timer_interval_seconds > 0  # 0: this worker fires no timers
        while True:
            next_due = None
            try:
                if timers:
                    await state.runtime.timers.fire_due()
                await services.dispatch_due()
                due = [await services.next_due()]
                if timers:
                    due.append(await state.store.read(lambda tx: tx.next_timer_due()))
                next_due = min((d for d in due if d is not None), default=None)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("firing timers or calling service handlers failed; retrying")
            await alarm.sleep(next_due)

    async def _sweep_forever(self, state: _AppState) -> None:
        """Expire buffered messages and purge old ones while the app serves (bounded batches, no delivery waits)."""
        settings = state.settings
        retention = settings.retention_days * 86400 if settings.retention_days is not None else None
        while True:
            try:
                await state.follow_reloads()
                await state.runtime.upkeep.sweep(retention_seconds=retention)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("message sweep failed; retrying")
            await asyncio.sleep(settings.sweep_interval_seconds)

    async def _stop(self, app: Quart) -> None:
        state: _AppState = app.extensions[EXTENSION_KEY]
        for task in (state.sweeper, state.work_loop, state.route_loop):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        state.sweeper = state.work_loop = state.route_loop = None
        if state.alarm is not None and isinstance(self.clock, ManualClock) \
                and state.alarm.ring in self.clock.listeners:
            self.clock.listeners.remove(state.alarm.ring)
        state.alarm = None
        if state.services is not None:
            await state.services.stop()
            state.services = None
        if state._store is not None:
            await state._store.dispose()
        state._store = None
        state._runtime = None

    # -- host functions -----------------------------------------------------------------------------------------
    @overload
    def script_function(self, fn: F, /) -> F: ...

    @overload
    def script_function(self, name: str | None = None, /) -> Callable[[F], F]: ...

    def script_function(self, arg: Any = None, /) -> Any:
        """Decorator: make a function callable from BPMN scripts, under its own name or ``name``.

        For example::

            @messages.script_function
            def current_user(context): return context.caller["user"]
        """
        def register(fn: F, name: str | None = None) -> F:
            self.script_functions[name or fn.__name__] = fn
            return fn

        if callable(arg):
            return register(arg)
        return lambda fn: register(fn, arg)

    def service_handler(self, operator: str | None = None) -> Callable[[F], F]:
        """Decorator: the handler of service tasks with this operator id (None: of every operator without one).

        For example::

            @messages.service_handler("http/GetRequestV2")
            async def get(call: ServiceCall) -> dict: ...
        """
        def register(fn: F) -> F:
            if operator is None:
                self.default_service_handler = fn
            else:
                self.service_handlers[operator] = fn
            return fn

        return register

    # -- Python API ---------------------------------------------------------------------------------------------
    @property
    def services(self) -> Services:
        """The service dispatcher (while the app serves)."""
        services = self._state().services
        if services is None:
            raise RuntimeError("quart-spiff-messages is not started: run inside the app (before_serving)")
        return services

    async def complete_service_task(self, instance_id: int, task: str, result: Any, *, caller: Any = None) -> Outcome:
        """Complete a waiting service task with ``result`` (what a remote worker's callback does).

        ``caller`` (here and in every method that runs an instance) is who the scripts of that run see as
        ``context.caller``, as over HTTP they see what the ``identify`` hook returned."""
        with _as_caller(caller):
            return await self.services.complete(instance_id, task, result)

    async def retry(self, instance_id: int, *, caller: Any = None) -> Outcome:
        """Run the failed task of an instance in ``error`` again, on the current spec of its process (reload a fixed
        folder first, or fix the handler); ``InstanceNotInError`` (409) for an instance that is not in error."""
        with _as_caller(caller):
            return await self.services.retry(instance_id)

    async def settle_services(self) -> None:
        """Wait until no service handler call is under way (their results applied)."""
        await self.services.settle()

    def _state(self) -> _AppState:
        app = self.app if self.app is not None else current_app
        state: _AppState = app.extensions[EXTENSION_KEY]
        return state

    @property
    def runtime(self) -> Runtime:
        """The working set of the loaded catalog: ``router``, ``upkeep``, ``reads`` (replaced on reload)."""
        return self._state().runtime

    @property
    def catalog(self) -> Catalog:
        return self.runtime.catalog

    async def send_message(self, name: str, payload: Mapping[str, Any], *, ttl: int = 0,
                           message_instance_uuid: str | None = None, asynchronous: bool = False,
                           caller: Any = None) -> Outcome:
        """Send message ``name`` (``group:name`` scopes it) with ``payload``; the same decision as the HTTP API.

        ``ttl`` > 0 keeps a message nobody takes now for that many seconds (``message_instance_uuid`` required);
        a ``message_instance_uuid`` sent again returns the stored outcome. ``asynchronous``: the message is
        written and the outcome is ``accepted`` (status ``running``), or ``reserved`` with the ``not_started``
        instance reserved for a message that will start one; a routing loop routes it right after.
        ``caller``: who script functions see as ``context.caller`` (over HTTP, what the ``identify`` hook
        returned); None: nobody.
        """
        with _as_caller(caller):
            return await self.runtime.router.send_message(name, payload, ttl=ttl,
                                                          message_instance_uuid=message_instance_uuid,
                                                          asynchronous=asynchronous)

    async def reload(self) -> Reloaded:
        """Reload the BPMN folder in this process and ask every other worker to follow (CatalogError if broken)."""
        return await self._state().reload()

    async def cancel_message(self, message_instance_uuid: str) -> MessageRecord:
        """Cancel a buffered message."""
        return await self.runtime.router.cancel_message(message_instance_uuid)

    async def start_process(self, process_id: str, data: Mapping[str, Any] | None = None, *,
                            caller: Any = None) -> Outcome:
        """Start ``process_id`` (``group:process_id`` in a group) through its plain start event; ``caller`` as for
        :meth:`send_message`."""
        with _as_caller(caller):
            return await self.runtime.router.start_process(process_id, data or {})

    async def events(self, after: int = 0, limit: int = 100) -> list[Event]:
        """The durable event feed after the event id ``after`` (keep the last id you handled), oldest first."""
        return await self.runtime.reads.events(after, limit)

    async def fire_timers(self) -> int:
        """Fire the timers (and start the timer start events) due now, and wait for those another transaction is
        firing; returns how many instances this call fired or started. The app's timer loop does this by itself;
        call it when the loop is off (``SPIFF_MESSAGES_TIMER_INTERVAL_SECONDS = 0``) or after moving a test clock.
        """
        return await self.runtime.timers.fire_all_due()

    async def list_tasks(self, instance_id: int) -> list[HumanTask]:
        """The READY user, manual and plain tasks of an instance."""
        return await self.runtime.tasks.list_tasks(instance_id)

    async def complete_task(self, instance_id: int, task: str, data: Mapping[str, Any] | None = None, *,
                            caller: Any = None) -> Outcome:
        """Complete a READY human task (``task``: its guid, or its element id when one such task is READY) with
        ``data`` merged into its data; the instance runs on to its next wait, as after a delivery. ``caller`` as
        for :meth:`send_message` (the person who completed it)."""
        with _as_caller(caller):
            return await self.runtime.tasks.complete_task(instance_id, task, data or {})


def _answer_refusals_in_host_views(app: Quart) -> None:
    """A refusal the Python API raises in one of the host's own views (a wrong task name, an unknown process) is
    answered as the API answers it, a 4xx problem, instead of a 500 with a traceback in the log; a handler the host
    registered for these errors (before or after) is the one that answers."""
    from .api.errors import on_refusal
    from .errors import SpiffMessagesError

    if SpiffMessagesError not in app.error_handler_spec[None][None]:
        app.register_error_handler(SpiffMessagesError, on_refusal)


@contextlib.contextmanager
def _as_caller(caller: Any) -> Iterator[None]:
    """Script functions of the runs inside see ``caller`` as they see the ``identify`` hook's user over HTTP."""
    if caller is None:  # not given: whoever the surrounding code runs for (nobody, outside an API request)
        yield
        return
    token = current_caller.set(caller)
    try:
        yield
    finally:
        current_caller.reset(token)


def _description(settings: Settings) -> str:
    text = "Send BPMN messages into SpiffWorkflow process instances.\n\n" \
           f"Operators: the [messages page]({settings.url_prefix}/console/messages) lists every message with its status"
    if settings.metrics_path:
        text += f"; Prometheus metrics are at [{settings.metrics_path}]({settings.metrics_path})"
    probes = [f"{what} [{path}]({path})" for what, path in
              (("liveness", settings.liveness_path), ("readiness", settings.readiness_path)) if path]
    if probes:
        text += "; health probes (no API key): " + ", ".join(probes)
    return text + "."


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("quart-spiff-messages")
    except PackageNotFoundError:
        return "0"
