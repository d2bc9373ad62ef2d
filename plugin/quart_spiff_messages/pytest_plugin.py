"""A pytest plugin for testing BPMN diagrams without writing a server.

Installed with the package (entry point ``pytest11``), it adds fixtures that run the diagrams of a BPMN folder in
a Quart app on a temporary SQLite database, and a harness that sends messages, starts processes and checks what
the instances did::

    import pytest

    pytestmark = pytest.mark.spiff_bpmn("../bpmn")  # or, once for all tests: spiff_messages_bpmn_dir in the ini


    async def test_order_is_paid(spiff):
        order = await spiff.send_message("order_received", {"order_id": "A-1"})
        await spiff.assert_waiting_for(order, "payment_received", correlation={"order_id": "A-1"})
        await spiff.send_message("payment_received", {"order_id": "A-1", "amount": 42})
        await spiff.assert_status(order, "complete")
        await spiff.assert_data(order, paid_amount=42)

The BPMN folder comes from the ``@pytest.mark.spiff_bpmn(path)`` marker (a relative path is read from the test
file's folder), else from the ``spiff_messages_bpmn_dir`` ini option (relative to the ini file's folder).

Fixtures: ``spiff`` (a :class:`BpmnHarness`), ``spiff_script_functions`` (host functions for the scripts) and
``spiff_service_results`` (mocked service results per operator id: a value or a callable),
``spiff_app`` (the started Quart app), ``spiff_client`` (its test
client), ``spiff_extension`` (its :class:`~quart_spiff_messages.SpiffMessages`), ``spiff_clock`` (a
:class:`ManualClock`: ``advance`` it to expire buffered messages), and the ones a project overrides to change the
set-up: ``spiff_bpmn_dir``, ``spiff_database_url`` (e.g. to use PostgreSQL) and ``spiff_config`` (extra
``app.config`` keys). The async fixtures are ``pytest_asyncio`` fixtures: pytest-asyncio must be installed; in its
strict mode mark the tests ``@pytest.mark.asyncio``.

Nothing heavy is imported until a test asks for one of these fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

from .clock import Clock, ManualClock, iso_time

if TYPE_CHECKING:
    from quart import Quart
    from quart.typing import TestClientProtocol

    from .extension import SpiffMessages
    from .outcomes import Outcome

__all__ = ["BpmnHarness", "InstanceView", "ManualClock", "Wait", "make_spiff_app"]

INI_OPTION = "spiff_messages_bpmn_dir"
INVARIANTS_OPTION = "spiff_messages_check_invariants"
MARKER = "spiff_bpmn"
_HOW_TO_CHOOSE = (f"choose the BPMN folder with the marker @pytest.mark.{MARKER}(path) (relative to the test "
                  f"file's folder) or the ini option {INI_OPTION} = path (relative to the ini file's folder)")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _async_fixture(fn: F) -> F:
    """A pytest-asyncio fixture (works in its strict and auto modes), or one that says pytest-asyncio is missing."""
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - pytest-asyncio is a test dependency of the package
        def missing() -> None:
            pytest.fail(f"the fixture {fn.__name__!r} of quart-spiff-messages needs pytest-asyncio: "
                        f"pip install pytest-asyncio", pytrace=False)

        missing.__doc__ = fn.__doc__
        return cast(F, pytest.fixture(name=fn.__name__)(missing))
    return cast(F, pytest_asyncio.fixture(fn))


# -- pytest hooks -----------------------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(INI_OPTION, help="quart-spiff-messages: the folder of BPMN files the spiff fixtures serve "
                                   "(relative to the ini file's folder)", default="")
    parser.addini(INVARIANTS_OPTION, type="bool", default=True,
                  help="quart-spiff-messages: after each test that started spiff_app, fail it if an instance waits "
                       "with nothing to wait for, a message is left running or a delivery lacks its receive row")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(path): quart-spiff-messages fixtures serve this BPMN folder (relative to the test "
                   f"file's folder); overrides the {INI_OPTION} ini option")


# -- what an instance looks like ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Wait:
    """One message an instance waits for; ``correlation`` has the values it expects, by correlation property."""

    message_name: str
    element_id: str
    correlation: dict[str, Any]
    correlation_keys: dict[str, dict[str, Any]]
    accepts_any: bool

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Wait:
        keys: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (raw.get("correlation_keys") or {}).items()}
        merged: dict[str, Any] = {}
        for values in keys.values():
            merged.update(values)
        return cls(str(raw["message_name"]), str(raw.get("element_id", "")), merged, keys,
                   bool(raw.get("accepts_any")))

    def __str__(self) -> str:
        values = ", ".join(f"{k}={v!r}" for k, v in sorted(self.correlation.items()))
        if self.accepts_any:
            values = f"{values}, or any" if values else "any"
        return f"{self.message_name} ({values}) at {self.element_id}" if values else \
            f"{self.message_name} at {self.element_id}"


@dataclass(frozen=True)
class InstanceView:
    """A process instance as it is in the database now."""

    id: int
    process_key: str
    status: str  # waiting | complete | error | user_input_required (not_started | terminated: an async reservation)
    data: dict[str, Any]
    waiting_for: list[Wait] = field(default_factory=list)
    error: dict[str, Any] | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)  # READY human tasks (element_id, id, name, ...)
    # timers it waits at: element_id, timer_type, due_at_in_seconds and due_at (ISO 8601, UTC)
    timers: list[dict[str, Any]] = field(default_factory=list)
    # service tasks called so far: operator, params, attempts, last_error, status (waiting, completed, failed)
    service_tasks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def waiting_for_names(self) -> list[str]:
        return [w.message_name for w in self.waiting_for]

    def describe(self) -> str:
        """Several lines that say what the instance is doing: for assertion messages."""
        lines = [f"process instance {self.id} of {self.process_key!r}: status {self.status!r}"]
        lines.append("  waiting for: " + ("; ".join(str(w) for w in self.waiting_for) or "nothing"))
        if self.timers:
            lines.append("  timers: " + ", ".join(
                f"{t['element_id']} due at {iso_time(t['due_at_in_seconds'])} ({t['due_at_in_seconds']})"
                for t in self.timers))
        if self.service_tasks:
            lines.append("  service tasks: " + ", ".join(
                f"{s['element_id']} ({s['operator']}, {s['status']}, {s['attempts']} failed attempts)"
                for s in self.service_tasks))
        if self.tasks:
            lines.append("  ready tasks: " + ", ".join(f"{t['element_id']} ({t['type']})" for t in self.tasks))
        if self.error:
            lines.append(f"  error: {self.error}")
        lines.append(f"  data: {_short(self.data)}")
        return "\n".join(lines)


def _short(value: Any, limit: int = 2000) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "... (cut)"


_MISSING = object()


# -- the harness ----------------------------------------------------------------------------------------------------
class BpmnHarness:
    """Send messages, start processes and check instances of a started app (the ``spiff`` fixture).

    Wherever an instance is expected, give its id, the :class:`~quart_spiff_messages.Outcome` of the send or start
    that reached it, or an :class:`InstanceView`.
    """

    def __init__(self, extension: SpiffMessages, clock: ManualClock) -> None:
        if extension.app is None:
            raise ValueError("BpmnHarness needs an extension bound to its app: SpiffMessages(app)")
        self.extension = extension
        self.app: Quart = extension.app
        self.clock = clock
        self._timers_seen_at: float | None = None  # the clock's time when due timers last fired

    async def fire_timers(self) -> int:
        """Fire every timer due at the clock's time now (``clock.advance`` moves it); returns how many instances
        fired or started. The harness does this itself before it acts or looks, whenever the clock moved."""
        self._timers_seen_at = self.clock.now
        return await self.extension.fire_timers()

    async def _catch_up(self) -> None:
        if self._timers_seen_at != self.clock.now:
            await self.fire_timers()

    # -- acting ----------------------------------------------------------------------------------------------------
    async def send_message(self, name: str, payload: Mapping[str, Any], *, ttl: int = 0,
                           message_instance_uuid: str | None = None, caller: Any = None) -> Outcome:
        """Send a message as the HTTP API would; ``ttl`` > 0 (with a ``message_instance_uuid``) buffers it.
        ``caller`` is what script functions see as ``context.caller`` (the ``identify`` hook's user over HTTP)."""
        __tracebackhide__ = True  # a refusal points at the test's line, not here
        await self._catch_up()
        return await _refused_here(self.extension.send_message(name, payload, ttl=ttl,
                                                               message_instance_uuid=message_instance_uuid,
                                                               caller=caller))

    async def start_process(self, process_id: str, data: Mapping[str, Any] | None = None, *,
                            caller: Any = None) -> Outcome:
        """Start a process through its plain start event (``group:process_id`` in a group)."""
        __tracebackhide__ = True  # a refusal points at the test's line, not here
        await self._catch_up()
        return await _refused_here(self.extension.start_process(process_id, data, caller=caller))

    async def complete_task(self, instance: int | Outcome | InstanceView, task: str,
                            data: Mapping[str, Any] | None = None, *, caller: Any = None) -> Outcome:
        """Complete a READY user, manual or plain task (by element id, or guid) with ``data``, as a person would."""
        __tracebackhide__ = True  # a refusal points at the test's line, not here
        await self._catch_up()
        return await _refused_here(self.extension.complete_task(_instance_id(instance), task, data, caller=caller))

    async def cancel_message(self, message_instance_uuid: str) -> Any:
        """Cancel a buffered message."""
        __tracebackhide__ = True  # a refusal points at the test's line, not here
        return await _refused_here(self.extension.cancel_message(message_instance_uuid))

    async def settle(self) -> None:
        """Wait until the service handlers called so far have returned and their results are applied (every look
        at an instance does this first)."""
        await self.extension.settle_services()

    async def complete_service_task(self, instance: int | Outcome | InstanceView, task: str, result: Any) -> Outcome:
        """Complete a waiting service task (by element id, or guid) with ``result``, as a remote worker would."""
        __tracebackhide__ = True  # a refusal points at the test's line, not here
        return await _refused_here(self.extension.complete_service_task(_instance_id(instance), task, result))

    async def retry(self, instance: int | Outcome | InstanceView) -> Outcome:
        """Run the failed task of an instance in ``error`` again."""
        __tracebackhide__ = True  # a refusal points at the test's line, not here
        return await _refused_here(self.extension.retry(_instance_id(instance)))

    async def sweep(self) -> int:
        """Mark the buffered messages whose time ran out (see ``clock.advance``) as expired now; returns how many.

        A message past its time is never delivered even before a sweep; this only makes its status show it.
        """
        expired, _ = await self.extension.runtime.upkeep.sweep()
        return expired

    # -- looking -----------------------------------------------------------------------------------------------------
    async def instance(self, instance: int | Outcome | InstanceView) -> InstanceView:
        """The instance as it is now: status, data, the messages it waits for, its error."""
        __tracebackhide__ = True  # a failure points at the test's line, not here
        instance_id = _instance_id(instance)
        await self.settle()
        await self._catch_up()
        view = await self.extension.runtime.reads.instance_view(instance_id)
        row = view.instance
        return InstanceView(id=row.id, process_key=row.process_key, status=row.status, data=view.data,
                            waiting_for=[Wait.from_json(w) for w in view.waiting_for if w.get("kind") == "message"],
                            timers=[{**w, "due_at": iso_time(w["due_at_in_seconds"])}
                                    for w in view.waiting_for if w.get("kind") == "timer"], error=row.error,
                            tasks=[t.as_json() for t in view.tasks], service_tasks=[s.as_json() for s in view.services])

    async def instances(self, process: str | None = None, *, status: str | None = None) -> list[InstanceView]:
        """The instances of ``process`` (``group:process_id``; None: of every process), oldest first, with this
        ``status`` if given: how a test finds the instances a conversation started (a provider started by the
        message a requester threw, a process a timer start event started)."""
        __tracebackhide__ = True  # a failure points at the test's line, not here
        key = None
        if process is not None:
            from .errors import ProcessNotFound
            from .hints import did_you_mean, processes_meant
            from .names import parse_process_id

            key = parse_process_id(process).key
            if self.extension.catalog.process(key) is None:
                meant = processes_meant(self.extension.catalog, key)
                raise ProcessNotFound(f"no process {key!r} in the BPMN folder{did_you_mean(meant)}",
                                      did_you_mean=meant).with_traceback(None)
        await self.settle()
        await self._catch_up()
        ids: list[int] = []
        page_number = 1
        while True:
            page = await self.extension.runtime.reads.list_instances(status=status, process_key=key,
                                                                     page=page_number, per_page=500)
            ids += [row.id for row in page.rows]
            if page_number >= page.pages:
                break
            page_number += 1
        return [await self.instance(instance_id) for instance_id in sorted(ids)]

    # -- checking ----------------------------------------------------------------------------------------------------
    async def assert_invariants(self) -> None:
        """No instance waits with nothing to wait for, no message is left ``running``, every delivery has exactly
        one receive row (also checked after every test that started ``spiff_app``)."""
        __tracebackhide__ = True  # a failure points at the test's line, not here
        broken = await self.extension.runtime.reads.invariant_violations()
        if broken:
            raise AssertionError("invariants broken:\n  " + "\n  ".join(broken))

    async def assert_status(self, instance: int | Outcome | InstanceView, status: str) -> InstanceView:
        """The instance has this status (waiting, complete, error, user_input_required)."""
        __tracebackhide__ = True  # a failure points at the test's line, not here
        view = await self.instance(instance)
        if view.status != status:
            raise AssertionError(f"expected status {status!r}, but {view.describe()}")
        return view

    async def assert_waiting_for(self, instance: int | Outcome | InstanceView, message_name: str, *,
                                 correlation: Mapping[str, Any] | None = None) -> InstanceView:
        """The instance waits for ``message_name``; with ``correlation``, for one whose expected correlation
        property values include these (``{"order_id": "A-1"}``)."""
        __tracebackhide__ = True  # a failure points at the test's line, not here
        view = await self.instance(instance)
        for wait in view.waiting_for:
            if wait.message_name != message_name:
                continue
            if correlation is None or all(wait.correlation.get(k, _MISSING) == v for k, v in correlation.items()):
                return view
        wanted = message_name if correlation is None else \
            f"{message_name} with {', '.join(f'{k}={v!r}' for k, v in correlation.items())}"
        raise AssertionError(f"expected the instance to wait for {wanted}, but {view.describe()}")

    async def assert_task_ready(self, instance: int | Outcome | InstanceView, task: str) -> InstanceView:
        """The instance has a READY human task with this element id (or guid)."""
        __tracebackhide__ = True  # a failure points at the test's line, not here
        view = await self.instance(instance)
        if not any(task in (t["element_id"], t["id"]) for t in view.tasks):
            raise AssertionError(f"expected a READY task {task!r}, but {view.describe()}")
        return view

    async def assert_timer_waiting(self, instance: int | Outcome | InstanceView, element_id: str) -> InstanceView:
        """The instance waits at the timer event ``element_id`` (its due time is in ``view.timers``)."""
        __tracebackhide__ = True  # a failure points at the test's line, not here
        view = await self.instance(instance)
        if not any(t["element_id"] == element_id for t in view.timers):
            raise AssertionError(f"expected a timer at {element_id!r} to be waiting, but {view.describe()}")
        return view

    async def assert_completed(self, instance: int | Outcome | InstanceView, element_id: str) -> None:
        """The element ``element_id`` ran to completion in the instance: the path taken went through it."""
        __tracebackhide__ = True  # a failure points at the test's line, not here
        instance_id = _instance_id(instance)
        await self._catch_up()
        task = await self.extension.runtime.tasks.task(instance_id, element_id)
        if task.state != "COMPLETED":
            view = await self.instance(instance_id)
            raise AssertionError(f"expected {element_id!r} to have completed, but it is {task.state}; "
                                 f"{view.describe()}")

    async def assert_data(self, instance: int | Outcome | InstanceView, expected: Mapping[str, Any] | None = None,
                          /, **fields: Any) -> InstanceView:
        """The instance's data holds these fields with these values (others may be there too)."""
        __tracebackhide__ = True  # a failure points at the test's line, not here
        wanted = {**(expected or {}), **fields}
        view = await self.instance(instance)
        wrong = [f"  {k}: expected {v!r}, " + ("missing" if k not in view.data else f"got {view.data[k]!r}")
                 for k, v in wanted.items() if view.data.get(k, _MISSING) != v]
        if wrong:
            raise AssertionError("the instance's data differs:\n" + "\n".join(wrong) + "\n" + view.describe())
        return view


async def _refused_here(action: Awaitable[T]) -> T:
    """The action's result; a refusal (a 4xx over HTTP) is raised as if from the test's own line: its message says
    what to do, and the frames of the extension underneath would only hide it."""
    __tracebackhide__ = True
    from .errors import SpiffMessagesError

    try:
        return await action
    except SpiffMessagesError as exc:
        raise exc.with_traceback(None) from None


def _instance_id(instance: int | Outcome | InstanceView) -> int:
    __tracebackhide__ = True
    from .outcomes import Outcome

    if isinstance(instance, InstanceView):
        return instance.id
    if isinstance(instance, Outcome):
        if instance.instance is None:
            why = f": {instance.reason}" if instance.reason else ""
            name = f" {instance.message.name!r}" if instance.message is not None else ""
            raise AssertionError(f"the message{name} reached no process instance (outcome {instance.kind!r}{why})")
        return instance.instance.id
    if isinstance(instance, bool) or not isinstance(instance, int):
        raise TypeError(f"expected a process instance id, an Outcome or an InstanceView, not {instance!r}")
    return instance


# -- building the app ---------------------------------------------------------------------------------------------
def make_spiff_app(bpmn_dir: str | Path, database_url: str, clock: Clock | None = None,
                   config: Mapping[str, Any] | None = None, **options: Any) -> SpiffMessages:
    """A Quart app serving ``bpmn_dir`` on ``database_url``, with the extension on it (``ext.app``); not started.

    ``options`` go to :class:`~quart_spiff_messages.SpiffMessages` (``script_functions``, ``service_handlers``,
    ``authorize``, ``identify``, ...)."""
    from quart import Quart

    from .extension import SpiffMessages

    app = Quart("spiff_messages_test")
    app.config.update(SPIFF_MESSAGES_BPMN_DIR=str(bpmn_dir), SPIFF_MESSAGES_DATABASE_URL=database_url)
    app.config.update(config or {})
    return SpiffMessages(app, clock=clock, **options)


def _resolve_bpmn_dir(request: pytest.FixtureRequest) -> Path:
    marker = request.node.get_closest_marker(MARKER)
    if marker is not None:
        if len(marker.args) != 1 and "path" not in marker.kwargs:
            pytest.fail(f"@pytest.mark.{MARKER} takes one argument, the BPMN folder", pytrace=False)
        raw = marker.kwargs.get("path", marker.args[0] if marker.args else "")
        path, source = Path(raw), f"the marker @pytest.mark.{MARKER}({str(raw)!r})"
        if not path.is_absolute():
            path = Path(request.path).parent / path
    else:
        raw = str(request.config.getini(INI_OPTION) or "").strip()
        if not raw:
            pytest.fail(f"no BPMN folder for the quart-spiff-messages fixtures: {_HOW_TO_CHOOSE}", pytrace=False)
        config = request.config
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        path, source = Path(raw), f"the ini option {INI_OPTION} = {raw}"
        if not path.is_absolute():
            path = base / path
    path = path.resolve()
    if not path.is_dir():
        pytest.fail(f"the BPMN folder {path} (from {source}) does not exist or is not a folder; "
                    f"{_HOW_TO_CHOOSE}", pytrace=False)
    return path


# -- fixtures -----------------------------------------------------------------------------------------------------
@pytest.fixture
def spiff_bpmn_dir(request: pytest.FixtureRequest) -> Path:
    """The BPMN folder the app serves: the ``spiff_bpmn`` marker's, else the ``spiff_messages_bpmn_dir`` ini's."""
    return _resolve_bpmn_dir(request)


@pytest.fixture
def spiff_database_url(tmp_path: Path) -> str:
    """A fresh SQLite database in the test's temporary folder; override it to test on another database."""
    return f"sqlite:///{tmp_path / 'spiff_messages.db'}"


@pytest.fixture
def spiff_clock() -> ManualClock:
    """The app's clock; it stands still until ``advance(seconds)`` moves it."""
    return ManualClock()


@pytest.fixture
def spiff_config() -> dict[str, Any]:
    """Extra ``app.config`` keys (``SPIFF_MESSAGES_*``) for the app; override it to set them."""
    return {}


@pytest.fixture
def spiff_script_functions() -> dict[str, Callable[..., Any]]:
    """Host functions the diagrams' scripts call (name -> function); override it to give them, like Arena's test
    runner mocks its script functions. A function with a ``context`` parameter gets the script's context."""
    return {}


@pytest.fixture
def spiff_service_results() -> dict[str, Any]:
    """Results of service tasks per operator id: a value, or a callable given the
    :class:`~quart_spiff_messages.ServiceCall` (it may raise, to test retries); override it to mock services.
    An operator not listed waits for a callback (``spiff.extension.complete_service_task``)."""
    return {}


def _mocked(result: Any) -> Callable[[Any], Any]:
    async def handler(call: Any) -> Any:
        value = result(call) if callable(result) else result
        if hasattr(value, "__await__"):
            value = await value
        return value

    return handler


@pytest.fixture
def spiff_extension(spiff_bpmn_dir: Path, spiff_database_url: str, spiff_clock: ManualClock,
                    spiff_config: dict[str, Any], spiff_script_functions: dict[str, Callable[..., Any]],
                    spiff_service_results: dict[str, Any]) -> SpiffMessages:
    """The extension of ``spiff_app`` (its ``.app``); its Python API works once ``spiff_app`` has started."""
    return make_spiff_app(spiff_bpmn_dir, spiff_database_url, spiff_clock, spiff_config,
                          script_functions=spiff_script_functions,
                          service_handlers={op: _mocked(r) for op, r in spiff_service_results.items()})


@_async_fixture
async def spiff_app(spiff_extension: SpiffMessages, request: pytest.FixtureRequest) -> AsyncIterator[Quart]:
    """The Quart app, started (catalog loaded, database migrated) for the test and stopped after it.

    Before it stops, the invariants are checked (ini option ``spiff_messages_check_invariants``, default on).
    """
    app = spiff_extension.app
    assert app is not None
    async with app.test_app():
        yield app
        if request.config.getini(INVARIANTS_OPTION) and spiff_extension._state()._runtime is not None:
            broken = await spiff_extension.runtime.reads.invariant_violations()
            if broken:
                pytest.fail("the test left the database in a state no request may leave it in:\n  "
                            + "\n  ".join(broken), pytrace=False)


@pytest.fixture
def spiff_client(spiff_app: Quart) -> TestClientProtocol:
    """A test client of ``spiff_app`` for the HTTP API (``/v1.0/messages/...``)."""
    return spiff_app.test_client()


@pytest.fixture
def spiff(spiff_app: Quart, spiff_extension: SpiffMessages, spiff_clock: ManualClock) -> BpmnHarness:
    """The harness: send messages, start processes, check instances."""
    return BpmnHarness(spiff_extension, spiff_clock)
