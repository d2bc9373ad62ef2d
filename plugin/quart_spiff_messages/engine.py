"""The engine: the only module that touches SpiffWorkflow workflow objects.

It makes instances (by process id or through a Message Start Event), hands a message to the one waiting task the
index chose (never ``send_event``, which gives it to every task that catches it, nor ``catch``, which silently
re-queues what nothing consumed), runs to the next wait, drains thrown messages and lists what an instance waits
for, with the correlation values each wait expects (see :meth:`Engine._seed_correlations` for where they come from).
State is serialized without the spec: specs live in memory (and once per version in the database), so an instance
is a few KB and always resumes on the spec it started with.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from uuid import UUID, uuid5

from SpiffWorkflow.bpmn import BpmnEvent, BpmnWorkflow
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.serializer.default.workflow import BpmnWorkflowConverter, WorkflowConverter
from SpiffWorkflow.bpmn.specs.event_definitions import MessageEventDefinition, MultipleEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions import timer as spiff_timer
from SpiffWorkflow.bpmn.specs.event_definitions.timer import (
    CycleTimerEventDefinition,
    DurationTimerEventDefinition,
    TimerEventDefinition,
)
from SpiffWorkflow.bpmn.specs.mixins import EventBasedGatewayMixin, StartEventMixin
from SpiffWorkflow.bpmn.specs.mixins.events.event_types import CatchingEvent
from SpiffWorkflow.bpmn.specs.mixins.multiinstance_task import LoopTask
from SpiffWorkflow.exceptions import TaskNotFoundException
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.util.task import TaskState

from .catalog import ProcessEntry, StartPoint, message_definitions
from .correlation import KeyValue, evaluate, expected_key_value
from .element_states import ElementState, element_states
from .errors import SpiffMessagesError
from .scripts import RunInfo, ScriptEngine
from .warm import Warm

# -- one clock ------------------------------------------------------------------------------------------------
# SpiffWorkflow computes and compares due times with ``datetime.now(timezone.utc)``. While the core applies an
# action it sets the time it decided with (:meth:`Engine.at`), and SpiffWorkflow's timer module reads that instead,
# so "is this timer due" has one answer: the extension's (injectable) clock's. Outside an action: the wall clock.
_NOW: ContextVar[float | None] = ContextVar("spiff_messages_now", default=None)
# SpiffWorkflow fires a cycle when ``next < now``; a cycle due exactly now is due for us, so it sees a hair later.
_HAIR = 1e-6


class _ClockDatetime(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> Any:
        at = _NOW.get()
        if at is None:
            return datetime.now(tz)
        moment = datetime.fromtimestamp(at, timezone.utc)
        return moment.astimezone(tz) if tz is not None else moment.replace(tzinfo=None)


spiff_timer.datetime = _ClockDatetime


class _SpeclessWorkflowConverter(BpmnWorkflowConverter):  # type: ignore[misc]
    """Serialize a workflow without its spec; the caller hands the spec back when restoring."""

    def to_dict(self, workflow: Any) -> dict[str, Any]:
        dct: dict[str, Any] = WorkflowConverter.to_dict(self, workflow)
        dct["spec"] = workflow.spec.name
        dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
        dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
        return dct

    def from_dict(self, dct: dict[str, Any], spec: Any = None, subprocess_specs: Any = None) -> Any:
        dct.pop("spec", None)
        dct.pop("subprocess_specs", None)
        workflow = self.target_class(spec, subprocess_specs, deserializing=True)
        workflow.tasks = self.mapping_from_dict(dct["tasks"], UUID, workflow=workflow)
        workflow.task_tree = workflow.tasks.get(UUID(dct["root"]))
        self.set_default_attributes(workflow, dct)
        self.subprocesses_from_dict(dct["subprocesses"], workflow)
        workflow.bpmn_events = self.registry.restore(dct.pop("bpmn_events", []))
        return workflow


@dataclass(frozen=True)
class Wait:
    """One message an instance waits for, and the correlation values it expects."""

    task_id: str
    element_id: str
    message_name: str
    expected: tuple[KeyValue, ...]  # empty + accept_any: any message of that name
    accept_any: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "message_name": self.message_name,
            "element_id": self.element_id,
            "correlation_keys": {kv.key: dict(kv.values) for kv in self.expected},
            "accepts_any": self.accept_any,
            "kind": "message",
        }


@dataclass(frozen=True)
class TimerWait:
    """A timer an instance waits at, and when it is due (seconds since the epoch)."""

    task_id: str
    element_id: str
    due_at: float
    timer_type: str  # duration | date | cycle

    def as_json(self) -> dict[str, Any]:
        return {"kind": "timer", "element_id": self.element_id, "timer_type": self.timer_type,
                "due_at_in_seconds": self.due_at}


@dataclass(frozen=True)
class StartSchedule:
    """When a timer start event starts instances: first due time, how many (-1: for ever), how far apart."""

    first_due: float | None  # None: never (a date in the past with no repetition)
    cycles: int
    interval_seconds: float


@dataclass(frozen=True)
class Thrown:
    message_name: str
    payload: Any
    correlations: dict[str, Any]


@dataclass(frozen=True)
class ProcessFailure:
    """A script or expression failed while the instance ran (or a service task's handler gave up); the instance
    stops in ``error``. ``details`` says more for a service task: its operator, attempts and last error."""

    task: str | None
    task_name: str | None
    error_type: str
    message: str
    details: Mapping[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {"task": self.task, "task_name": self.task_name, "error_type": self.error_type,
                "message": self.message, **(self.details or {})}


# A service task's record in its task's internal data: operator, evaluated parameters, attempts, last error. While
# the task waits for its result the PENDING key is there too (start-up recovery looks for it in saved states).
SERVICE = "spiff_messages_service"
PENDING = "spiff_messages_service_pending"
_RESULT = "spiff_messages_service_result"


class ServicePending(Exception):
    """Raised inside SpiffWorkflow by a service task that has no result yet: :meth:`Engine.run` parks it."""

    def __init__(self, task: Any) -> None:
        super().__init__(f"service task {task.task_spec.bpmn_id} waits for its result")
        self.task = task


def _service_call(task: Any, operator: str, params: Mapping[str, Any]) -> str:
    """The script engine's ``call_service``: the result, once the host gave one; else the task waits for it."""
    data = task.internal_data
    if _RESULT in data:
        return json.dumps(data.pop(_RESULT))
    values = {k: v.get("value") if isinstance(v, Mapping) else v for k, v in params.items()}
    data[SERVICE] = {"operator": operator, "params": _json_value(values), "attempts": 0, "last_error": None,
                     "status": "waiting"}
    data[PENDING] = True
    raise ServicePending(task)


@dataclass(frozen=True)
class ServiceWait:
    """A service task: what it calls, with which parameters, and how its attempts went."""

    task_id: str
    element_id: str
    name: str | None
    operator: str
    params: dict[str, Any]
    attempts: int
    last_error: str | None
    status: str  # waiting | completed | failed

    def as_json(self) -> dict[str, Any]:
        return {"type": "service_task", "task_guid": self.task_id,
                "element_id": self.element_id, "name": self.name, "operator": self.operator, "params": self.params,
                "attempts": self.attempts, "last_error": self.last_error, "status": self.status}


class Instance:
    """A live workflow plus the catalog entry it runs on; ``run_info`` tells host functions where they run."""

    def __init__(self, workflow: Any, entry: ProcessEntry) -> None:
        self.workflow = workflow
        self.entry = entry
        self.failure: ProcessFailure | None = None
        self.run_info: RunInfo | None = None
        # whether a service task was ever called (its record is in the state): the waiting-only scan is skipped
        # for the instances that never call one, which are most
        self.called_services = False


class Engine:
    """SpiffWorkflow behind a small surface: make or load an instance, act on it, run it, read what it waits for.

    Acting and running are separate steps (the transaction core runs an instance once after each action).
    ``correlate_from_data``: a catch whose workflows have no value yet for its correlation key takes the expected
    value from the instance's data, evaluated with the catch's own retrieval expressions.
    """

    def __init__(self, correlate_from_data: bool = True,
                 script_functions: Mapping[str, Callable[..., Any]] | None = None, warm_instances: int = 0) -> None:
        config = dict(SPIFF_CONFIG)
        config[BpmnWorkflow] = _SpeclessWorkflowConverter
        self._serializer = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(config))
        self._spec_serializer = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(dict(SPIFF_CONFIG)))
        self.script_engine = ScriptEngine(script_functions, on_service=_service_call)
        self.correlate_from_data = correlate_from_data
        self.warm: Warm[Instance] = Warm(warm_instances)  # workflows kept between their transactions

    # -- specs -------------------------------------------------------------------------------------------------
    def dump_spec(self, entry: ProcessEntry) -> str:
        registry = self._spec_serializer.registry
        return json.dumps({
            "spec": registry.convert(entry.spec),
            "subprocess_specs": {k: registry.convert(v) for k, v in entry.subprocess_specs.items()},
        })

    def load_spec(self, entry_like: ProcessEntry, spec_json: str) -> ProcessEntry:
        """A catalog entry for an older spec version, restored from the database."""
        registry = self._spec_serializer.registry
        dct = json.loads(spec_json)
        spec = registry.restore(dct["spec"])
        subs = {k: registry.restore(v) for k, v in dct["subprocess_specs"].items()}
        return ProcessEntry(entry_like.key, entry_like.process_id, entry_like.group, entry_like.file,
                            entry_like.spec_version, spec, subs, entry_like.interrupting_starts,
                            entry_like.one_per_key_starts)

    # -- making instances (not run yet) ------------------------------------------------------------------------
    def new_instance(self, entry: ProcessEntry, data: Mapping[str, Any]) -> Instance:
        """An instance at its none start event with ``data`` as the initial task data."""
        _wire_loops(entry)
        wf = BpmnWorkflow(entry.spec, entry.subprocess_specs, script_engine=self.script_engine)
        for task in wf.get_tasks(state=TaskState.READY):
            task.data.update(data)
        return Instance(wf, entry)

    def start_by_message(self, entry: ProcessEntry, start: StartPoint, payload: Mapping[str, Any]) -> Instance | None:
        """A new instance that caught ``start``'s message; None if the payload cannot be caught there."""
        _wire_loops(entry)
        wf = BpmnWorkflow(entry.spec, entry.subprocess_specs, script_engine=self.script_engine)
        for task in wf.get_tasks(spec_class=StartEventMixin):
            if task.task_spec.bpmn_id != start.element_id:
                task.cancel()  # otherwise a none start event would run the process at once
        wf.do_engine_steps()
        task = next((t for t in wf.get_tasks(state=TaskState.WAITING)
                     if t.task_spec.bpmn_id == start.element_id), None)
        inst = Instance(wf, entry)
        if task is None:
            return None
        caught = False
        with self.guard(inst):
            caught = self._catch(task, start.message_name, payload)
        return inst if caught or inst.failure is not None else None

    # -- acting on an instance ---------------------------------------------------------------------------------
    def deliver(self, inst: Instance, task_id: str, message_name: str, payload: Mapping[str, Any]) -> bool:
        """Hand the message to the one waiting task ``task_id``; True if it caught it. Never to any other task:
        SpiffWorkflow's ``send_event`` would give it to every task of the instance that catches it."""
        try:
            task = inst.workflow.get_task_from_id(UUID(task_id))
        except ValueError:
            return False
        except TaskNotFoundException:
            task = None
        if task is None:
            trigger = next((t for t in self._event_subprocess_triggers(inst) if t.wait_id == task_id), None)
            return trigger is not None and self._trigger(inst, trigger, message_name, payload)
        if task.state != TaskState.WAITING or not isinstance(task.task_spec, CatchingEvent):
            return False
        return self._catch(task, message_name, payload)

    def _event_subprocess_triggers(self, inst: Instance) -> list[_Trigger]:
        """The message start events of the process's event subprocesses that can start one now.

        SpiffWorkflow 3.2 makes no task for them until a message comes (and then takes any message of the name,
        whatever its correlation), so they are waits without a task: a stable id stands for each. None while an
        interrupting one runs, or once the process ended.
        """
        wf = inst.workflow
        if inst.failure is not None or wf.completed:
            return []
        running = {sp.spec.name for sp in wf.subprocesses.values() if not sp.completed}
        out = []
        for name in getattr(wf.spec.start, "trigger_specs", ()):
            sp_spec = wf.subprocess_specs.get(name)
            for ts in getattr(sp_spec, "bpmn_start_events", ()):
                interrupting = ts.bpmn_id in inst.entry.interrupting_starts
                if interrupting and name in running:
                    return []  # the process is interrupted
                wait_id = str(uuid5(wf.task_tree.id, f"{name}/{ts.bpmn_id}"))
                out.append(_Trigger(wait_id, name, ts, interrupting))
        return out

    def _trigger(self, inst: Instance, trigger: _Trigger, message_name: str, payload: Mapping[str, Any]) -> bool:
        """Start the event subprocess with the message, if it correlates; an interrupting one cancels the rest."""
        wf = inst.workflow
        md = next((d for d in message_definitions(trigger.start.event_definition) if d.name == message_name), None)
        if md is None:
            return False
        try:
            correlations = md.calculate_correlations(wf.script_engine, md.correlation_properties, payload)
        except Exception:
            return False
        expected = {k: wf.correlations[k] for k in correlations if k in wf.correlations}
        if expected and not any(correlations[k] == v for k, v in expected.items()):
            return False  # checked before anything changes: a refused message leaves the instance as it was
        child_id = wf.spec.start.trigger_wf(wf.task_tree, trigger.spec_name)
        sub = wf.subprocesses[child_id]
        sub.correlations.update(wf.correlations)
        start = next(t for t in sub.get_tasks(state=TaskState.WAITING) if t.task_spec.bpmn_id == trigger.start.bpmn_id)
        if not self._catch(start, message_name, payload):
            raise RuntimeError(f"the event subprocess {trigger.spec_name!r} did not take {message_name!r}")
        if trigger.interrupting:
            keep = _ancestors(wf.get_task_from_id(child_id))
            for task in wf.get_tasks(state=TaskState.NOT_FINISHED_MASK):
                if task.workflow is wf and task.id not in keep and not (_ancestors(task) & {child_id}):
                    task.cancel()
        return True

    def _catch(self, task: Any, message_name: str, payload: Mapping[str, Any]) -> bool:
        md = next((d for d in message_definitions(task.task_spec.event_definition) if d.name == message_name), None)
        if md is None:
            return False
        self._seed_correlations(task)
        try:
            correlations = md.calculate_correlations(task.workflow.script_engine, md.correlation_properties, payload)
        except Exception:
            return False  # the payload lacks what this catch's retrieval expressions read
        event = BpmnEvent(md, dict(payload), correlations)
        if not task.task_spec.catches(task, event):
            return False
        task.task_spec.catch(task, event)
        outer = task.task_spec.event_definition
        if isinstance(outer, MultipleEventDefinition) and not outer.parallel:
            task.task_spec._update(task)
            # An event-based gateway takes one branch: SpiffWorkflow 3.2's ``has_fired`` adds every overdue timer
            # to the gateway's events next to the message, and the gateway would run each (the core fires due
            # timers before a message is offered, so a message that got here came first).
            task.internal_data["seen_events"] = [event]
            return True
        if isinstance(outer, MultipleEventDefinition) and outer.parallel:
            # A parallel multiple event keeps waiting for its other messages: what the first one said must key that
            # wait, and its payload must not be lost (SpiffWorkflow 3.2 merges neither for such an event).
            task.workflow.correlations.update(correlations)
            if getattr(md, "message_var", None):
                task.data[md.message_var] = dict(payload)
        task.task_spec._update(task)
        return True

    def complete_task(self, inst: Instance, task_ref: str, data: Mapping[str, Any]) -> str:
        """Complete a READY human task (user, manual or plain task) with ``data`` merged into its data.

        ``task_ref`` is the task's guid, or its element id when exactly one such task is READY. Returns
        ``completed``, ``not_ready`` (it exists but is not a READY human task), ``ambiguous`` (an element id with
        several READY tasks: give the guid) or ``not_found``.
        """
        task = self._find_task(inst, task_ref)
        if task is _AMBIGUOUS:
            return "ambiguous"
        if task is None:
            return "not_found"
        if task.state != TaskState.READY or not task.task_spec.manual:
            return "not_ready"
        task.data.update(data)
        task.run()
        return "completed"

    def _find_task(self, inst: Instance, task_ref: str) -> Any | None:
        try:
            return inst.workflow.get_task_from_id(UUID(task_ref))
        except TaskNotFoundException:
            return None
        except ValueError:  # not a guid: an element id
            found = [t for t in inst.workflow.get_tasks() if t.task_spec.bpmn_id == task_ref]
            ready = [t for t in found if t.state == TaskState.READY and t.task_spec.manual]
            if len(ready) > 1:
                return _AMBIGUOUS
            return ready[0] if ready else (found[-1] if found else None)

    def human_tasks(self, inst: Instance) -> list[HumanTask]:
        """The READY user, manual and plain tasks of the instance: what a person (or the host) completes."""
        if inst.failure is not None:
            return []
        return [_human_task(t) for t in inst.workflow.get_tasks(state=TaskState.READY, manual=True)]

    def task(self, inst: Instance, task_ref: str) -> HumanTask | None:
        """One task of the instance, whatever its state (by guid, or by element id)."""
        task = self._find_task(inst, task_ref)
        return _human_task(task) if task is not None and task is not _AMBIGUOUS else None

    @contextlib.contextmanager
    def guard(self, inst: Instance) -> Iterator[None]:
        """The one rule for what SpiffWorkflow raises while an action changes an instance (a task's run, a catch,
        a timer, a data input or output that is missing): the instance stops in ``error`` naming the task, and the
        block ends there. The extension's own errors (a client's wrong task name, ...) pass through unchanged."""
        try:
            yield
        except SpiffMessagesError:
            raise
        except Exception as exc:
            self.fail(inst, exc)

    def fail(self, inst: Instance, exc: Exception) -> None:
        """Stop the instance in ``error`` for ``exc``; the task it names is ERROR (SpiffWorkflow leaves a task
        whose completion raised COMPLETED, with nothing after it): :meth:`retry` runs it again."""
        inst.failure = _failure(exc)
        task = getattr(exc, "task", None)
        if task is not None and getattr(task, "workflow", None) is not None and task.state != TaskState.ERROR:
            task._set_state(TaskState.ERROR)

    def run(self, inst: Instance) -> None:
        """Run to the next wait; a script or expression that fails stops the instance in ``error`` (see
        :meth:`guard`); an instance in ``error`` does not run.

        A service task without its result stays STARTED: the instance waits for the host (see :mod:`.services`).
        """
        if inst.failure is not None:
            return
        inst.workflow._spiff_messages_run = inst.run_info  # what host functions are told (not serialized)
        while True:
            try:
                inst.workflow.do_engine_steps()
            except ServicePending as pending:  # SpiffWorkflow marked it ERROR on the way out
                pending.task._set_state(TaskState.STARTED)
                inst.called_services = True
                continue
            except Exception as exc:  # a script raising anything is a process error, not a server error
                self.fail(inst, exc)
                return
            break
        inst.workflow.is_completed()  # an interrupted process has no End task left: done when nothing is open

    # -- service tasks -----------------------------------------------------------------------------------------
    def service_tasks(self, inst: Instance, waiting_only: bool = False) -> list[ServiceWait]:
        """The instance's service tasks that were called (with attempts and outcome); ``waiting_only``: those
        that wait for their result now."""
        out: list[ServiceWait] = []
        if waiting_only and not inst.called_services:
            return out
        # a task that waits for its result is STARTED: the hot path (``waiting_only``) looks at those alone
        tasks = inst.workflow.get_tasks(state=TaskState.STARTED) if waiting_only else inst.workflow.get_tasks()
        for task in tasks:
            record = task.internal_data.get(SERVICE)
            if not isinstance(record, Mapping):
                continue
            waiting = bool(task.internal_data.get(PENDING)) and task.state == TaskState.STARTED
            if waiting_only and not waiting:
                continue
            status = "waiting" if waiting else "failed" if task.state == TaskState.ERROR else str(record["status"])
            spec = task.task_spec
            out.append(ServiceWait(str(task.id), str(spec.bpmn_id), getattr(spec, "bpmn_name", None),
                                   str(record["operator"]), dict(record["params"]), int(record["attempts"]),
                                   record.get("last_error"), status))
        return out

    def _waiting_service_task(self, inst: Instance, task_ref: str) -> tuple[str, Any]:
        task = self._find_task(inst, task_ref)
        if task is None or task is _AMBIGUOUS:
            return ("not_found" if task is None else "ambiguous"), None
        if task.state != TaskState.STARTED or not task.internal_data.get(PENDING):
            return "not_waiting", task
        return "waiting", task

    def complete_service(self, inst: Instance, task_ref: str, result: Any) -> str:
        """Give a waiting service task its result: it runs again and sets its result variable (when the instance
        runs). ``completed``, ``not_waiting`` (it exists but waits for no result), ``not_found``, ``ambiguous``."""
        found, task = self._waiting_service_task(inst, task_ref)
        if found != "waiting":
            return found
        task.internal_data.pop(PENDING)
        task.internal_data[_RESULT] = _json_value(result)
        task.internal_data[SERVICE] = {**task.internal_data[SERVICE], "status": "completed"}
        task._set_state(TaskState.READY)
        return "completed"

    def service_failed(self, inst: Instance, task_ref: str, error: str, give_up: bool) -> bool:
        """Count a failed attempt of a waiting service task; ``give_up``: the instance stops in ``error`` with an
        incident naming the operator, the attempts and the last error. False if the task waits for nothing."""
        found, task = self._waiting_service_task(inst, task_ref)
        if found != "waiting":
            return False
        record = dict(task.internal_data[SERVICE])
        record.update(attempts=int(record["attempts"]) + 1, last_error=error)
        task.internal_data[SERVICE] = record
        if give_up:
            task.internal_data.pop(PENDING)
            record["status"] = "failed"
            task._set_state(TaskState.ERROR)
            inst.failure = ProcessFailure(
                task=str(task.task_spec.bpmn_id), task_name=getattr(task.task_spec, "bpmn_name", None),
                error_type="ServiceTaskFailed",
                message=f"service task {task.task_spec.bpmn_id!r} ({record['operator']}) failed "
                        f"{record['attempts']} times; last error: {error}",
                details={"operator": record["operator"], "attempts": record["attempts"], "last_error": error,
                         "task_guid": str(task.id)})
        return True

    def retry(self, inst: Instance) -> bool:
        """Make the failed tasks of an instance in ``error`` READY again (a service task calls its handler anew,
        a script runs again; a catch that failed on a message WAITING again); False if none failed."""
        failed = inst.workflow.get_tasks(state=TaskState.ERROR)
        for task in failed:
            record = task.internal_data.get(SERVICE)
            if isinstance(record, Mapping):
                task.internal_data.pop(SERVICE)
            if isinstance(task.task_spec, CatchingEvent) and not task._get_internal_data("event_fired"):
                task._set_state(TaskState.WAITING)  # a catch that failed on its message waits for another one
            else:
                task._set_state(TaskState.READY)
        return bool(failed)

    # -- what an instance waits for ----------------------------------------------------------------------------
    @staticmethod
    def _waiting_catches(wf: Any) -> list[Any]:
        """Waiting catch tasks, outer workflows first: waits that begin in one step are indexed in this order, and
        the first indexed wins, so a boundary event takes a message before a catch inside its activity."""
        out = []
        for task in wf.get_tasks(state=TaskState.WAITING):
            if not isinstance(task.task_spec, CatchingEvent):
                continue
            if isinstance(task.task_spec, StartEventMixin) and task.workflow is wf and not _seen_events(task):
                continue  # a top-level start that caught nothing is not a wait of a running instance
            out.append(task)
        return sorted(out, key=lambda t: t.workflow.depth)

    def _seed_correlations(self, task: Any) -> None:
        """Give the task's workflow the values its catch's keys expect, where it has none yet: from the nearest
        enclosing workflow that has them, else (``correlate_from_data``) from the instance's data."""
        wf = task.workflow
        for md in message_definitions(task.task_spec.event_definition):
            by_key: dict[str, list[Any]] = {}
            for prop in md.correlation_properties:
                for key in prop.correlation_keys or ():
                    by_key.setdefault(key, []).append(prop)
            for key, props in by_key.items():
                if key in wf.correlations:
                    continue
                outer = wf.parent_workflow
                while outer is not None and key not in outer.correlations:
                    outer = outer.parent_workflow
                if outer is not None:
                    wf.correlations[key] = dict(outer.correlations[key])
                elif self.correlate_from_data:
                    values = _evaluate_all(props, task.data)
                    if values is not None:
                        wf.correlations[key] = values

    def waits(self, inst: Instance) -> list[Wait]:
        """What the instance waits for: message name and the correlation values each catch expects."""
        if inst.failure is not None:
            return []
        out = []
        for task in self._waiting_catches(inst.workflow):
            self._seed_correlations(task)
            correlations = task.workflow.correlations
            seen = [ev.event_definition for ev in _seen_events(task)]
            for md in message_definitions(task.task_spec.event_definition):
                if md in seen:
                    continue  # a parallel multiple event that has this message already
                out.append(_wait(str(task.id), task.task_spec.bpmn_id, md, correlations))
        for trigger in self._event_subprocess_triggers(inst):
            for md in message_definitions(trigger.start.event_definition):
                out.append(_wait(trigger.wait_id, trigger.start.bpmn_id, md, inst.workflow.correlations))
        return out

    # -- timers ------------------------------------------------------------------------------------------------
    @staticmethod
    @contextlib.contextmanager
    def at(now: float) -> Iterator[None]:
        """Let SpiffWorkflow's timers read ``now`` (the time the core decides with) while the block runs."""
        token = _NOW.set(now)
        try:
            yield
        finally:
            _NOW.reset(token)

    def timers(self, inst: Instance) -> list[TimerWait]:
        """The timers the instance waits at, each with its due time (outer workflow first)."""
        if inst.failure is not None or inst.workflow.completed:
            return []
        out = []
        waiting = [t for t in inst.workflow.event_manager.tasks.values() if t.state == TaskState.WAITING]
        for task in sorted(waiting, key=lambda t: (t.workflow.depth, str(t.id))):
            ed = task.task_spec.event_definition
            defs = ed.event_definitions if isinstance(ed, MultipleEventDefinition) else [ed]
            gateway = isinstance(task.task_spec, EventBasedGatewayMixin)
            for i, d in enumerate(defs):
                if isinstance(d, TimerEventDefinition):
                    due = _due_at(task, d)
                    # a gateway holds its events' definitions: name the timer event it leads to
                    element = task.task_spec.outputs[i].bpmn_id if gateway else task.task_spec.bpmn_id
                    if due is not None:
                        out.append(TimerWait(str(task.id), element, due, _timer_type(d)))
        return out

    def fire_due(self, inst: Instance, now: float) -> list[TimerWait]:
        """Fire every timer of the instance due at ``now`` (the caller runs the instance next); returns them."""
        due = [t for t in self.timers(inst) if t.due_at <= now]
        if due:
            for timer in due:
                if timer.timer_type != "cycle":  # fired, whatever SpiffWorkflow's own comparison says
                    inst.workflow.get_task_from_id(UUID(timer.task_id))._set_internal_data(event_fired=True)
            with self.at(now + _HAIR):
                inst.workflow.refresh_timers()
        return due

    def start_by_timer(self, entry: ProcessEntry, element_id: str) -> Instance | None:
        """A new instance whose timer start event ``element_id`` fired (its due time is the scheduler's)."""
        _wire_loops(entry)
        wf = BpmnWorkflow(entry.spec, entry.subprocess_specs, script_engine=self.script_engine)
        for task in wf.get_tasks(spec_class=StartEventMixin):
            if task.task_spec.bpmn_id != element_id:
                task.cancel()
        wf.do_engine_steps()
        task = next((t for t in wf.get_tasks(state=TaskState.WAITING) if t.task_spec.bpmn_id == element_id), None)
        if task is None:
            return None
        task._set_internal_data(event_fired=True)
        inst = Instance(wf, entry)
        with self.guard(inst):
            task.task_spec._update(task)
        return inst

    def start_schedule(self, entry: ProcessEntry, element_id: str, now: float) -> StartSchedule:
        """When the timer start event ``element_id`` starts instances, counted from ``now``.

        A cycle (``R3/PT10M``) starts ``cycles`` instances ``interval`` apart, the first one interval from now; a
        duration starts one after it; a date starts one then (at once if it has passed). ValueError when the
        expression does not evaluate to one of these.
        """
        ts = next((t for t in entry.spec.task_specs.values() if getattr(t, "bpmn_id", None) == element_id), None)
        ed = getattr(ts, "event_definition", None)
        if not isinstance(ed, TimerEventDefinition):
            raise ValueError(f"{element_id!r} is not a timer start event of {entry.key!r}")
        try:
            value = self.script_engine.environment.evaluate(ed.expression, {})
            with self.at(now):
                if isinstance(ed, CycleTimerEventDefinition):
                    cycles, start, duration = TimerEventDefinition.parse_iso_recurring_interval(value)
                    return StartSchedule(start.timestamp(), int(cycles), duration.total_seconds())
                if isinstance(ed, DurationTimerEventDefinition):
                    delta = TimerEventDefinition.get_timedelta_from_start(
                        TimerEventDefinition.parse_iso_duration(value), datetime.fromtimestamp(now, timezone.utc))
                    return StartSchedule(now + delta.total_seconds(), 1, 0.0)
                when = TimerEventDefinition.parse_time_or_duration(value)
        except Exception as exc:
            raise ValueError(f"timer start event {element_id!r} of {entry.key!r}: {ed.expression!r} is not an ISO "
                             f"8601 date, duration or cycle ({exc})") from exc
        if not isinstance(when, datetime):
            raise ValueError(f"timer start event {element_id!r} of {entry.key!r}: {value!r} is not a date")
        return StartSchedule(when.timestamp(), 1, 0.0)

    def drain(self, inst: Instance) -> list[Thrown]:
        """Messages the instance threw that nothing inside it caught (clears SpiffWorkflow's queue)."""
        return [
            Thrown(ev.event_definition.name, ev.payload, dict(ev.correlations or {}))
            for ev in inst.workflow.get_events()
            if isinstance(ev.event_definition, MessageEventDefinition)
        ]

    def status(self, inst: Instance) -> str:
        wf = inst.workflow
        if inst.failure is not None:
            return "error"
        if wf.completed:
            return "complete"
        if wf.get_tasks(state=TaskState.READY, manual=True):
            return "user_input_required"
        return "waiting"

    def task_data(self, inst: Instance) -> dict[str, Any]:
        """Data of the most recently completed task (what Spiff Arena answers as ``task_data``)."""
        wf = inst.workflow
        last = wf.last_task
        if last is None:
            completed = wf.get_tasks(state=TaskState.COMPLETED)
            last = max(completed, key=lambda t: t.last_state_change) if completed else None
        if last is None:
            return dict(wf.data or {})
        return _json_data(last.data)

    def element_states(self, inst: Instance, failed_element: str | None = None) -> list[ElementState]:
        """Every reached task of the instance with its state: what each view of where it stands reads.

        ``failed_element``: the element the saved failure names (an instance in ``error``).
        """
        waiting = [s.task_id for s in self.service_tasks(inst, waiting_only=True)]
        return element_states(inst.workflow, failed_element, waiting)

    def correlations(self, inst: Instance) -> dict[str, Any]:
        return dict(inst.workflow.correlations)

    def keep(self, instance_id: int, state: str, inst: Instance) -> None:
        """Keep ``inst``, committed as ``state``, for the next :meth:`load` of that instance (a failed one never)."""
        if inst.failure is None and not inst.workflow.completed:
            self.warm.keep(instance_id, state, inst)

    def dump(self, inst: Instance) -> str:
        return str(self._serializer.serialize_json(inst.workflow))

    def load(self, state: str, entry: ProcessEntry, instance_id: int | None = None) -> Instance:
        """The instance saved as ``state``; with ``instance_id``, the one :meth:`keep` kept for it when it was kept
        with exactly this state and entry (see :mod:`.warm`), else a fresh one."""
        if instance_id is not None:
            warm = self.warm.take(instance_id, state)
            if warm is not None and warm.entry is entry and warm.failure is None:
                warm.run_info = None
                warm.called_services = SERVICE in state
                return warm
        _wire_loops(entry)
        dct = json.loads(state)
        self._serializer.migrate(dct)
        wf = self._serializer.from_dict(dct, spec=entry.spec, subprocess_specs=entry.subprocess_specs)
        wf.script_engine = self.script_engine  # the script engine is not serialized
        inst = Instance(wf, entry)
        inst.called_services = SERVICE in state
        return inst


_AMBIGUOUS = object()  # an element id that names several READY tasks


@dataclass(frozen=True)
class HumanTask:
    """A task as Spiff Arena's task view shows it."""

    id: str
    element_id: str
    name: str | None
    type: str
    state: str
    data: dict[str, Any]
    properties: dict[str, Any]
    form: dict[str, str | None]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "task_guid": self.id, "element_id": self.element_id, "bpmn_identifier": self.element_id,
                "name": self.name, "bpmn_name": self.name, "type": self.type, "typename": self.type,
                "state": self.state, "data": self.data, "properties": self.properties, "form": self.form}


def _human_task(task: Any) -> HumanTask:
    extensions = getattr(task.task_spec, "extensions", None) or {}
    properties = dict(extensions.get("properties") or {})
    return HumanTask(
        id=str(task.id), element_id=str(task.task_spec.bpmn_id), name=getattr(task.task_spec, "bpmn_name", None),
        type=type(task.task_spec).__name__, state=TaskState.get_name(task.state), data=_json_data(task.data),
        properties=properties,
        form={"json_schema": properties.get("formJsonSchemaFilename"),
              "ui_schema": properties.get("formUiSchemaFilename")})


@dataclass(frozen=True)
class _Trigger:
    wait_id: str
    spec_name: str
    start: Any  # the event subprocess's start event spec
    interrupting: bool


def _wire_loops(entry: ProcessEntry) -> None:
    """Connect each loop's child spec to the loop's merge, in every process that runs the spec.

    SpiffWorkflow 3.2 connects a multi-instance (or standard loop) task's ``merge_child`` to its child's
    ``completed_event`` only when it creates a child, on the in-memory spec. A worker that loads an instance whose
    children another worker (or an earlier run) created never merges them: their outputs are lost and a parallel
    loop never completes. Done once per spec object.
    """
    if getattr(entry.spec, "_spiff_messages_loops_wired", False):
        return
    for wf_spec in (entry.spec, *entry.subprocess_specs.values()):
        for ts in list(wf_spec.task_specs.values()):
            if isinstance(ts, LoopTask):
                child = wf_spec.task_specs[ts.task_spec]
                if not child.completed_event.is_connected(ts.merge_child):
                    child.completed_event.connect(ts.merge_child)
    entry.spec._spiff_messages_loops_wired = True


def _wait(task_id: str, element_id: str, md: Any, correlations: Mapping[str, Any]) -> Wait:
    """A wait for ``md``, expecting the values ``correlations`` has for its keys (none: it accepts any)."""
    keys = sorted({k for p in md.correlation_properties for k in p.correlation_keys or ()})
    expected = tuple(expected_key_value(k, correlations[k]) for k in keys if k in correlations)
    return Wait(task_id, element_id, md.name, expected, not expected)


def _timer_type(d: Any) -> str:
    if isinstance(d, CycleTimerEventDefinition):
        return "cycle"
    return "duration" if isinstance(d, DurationTimerEventDefinition) else "date"


def _due_at(task: Any, d: Any) -> float | None:
    """When timer ``d`` of the waiting ``task`` is due, from what SpiffWorkflow computed when the wait began."""
    value = task.internal_data.get("event_value")
    try:
        if isinstance(d, CycleTimerEventDefinition):
            if not isinstance(value, dict) or value.get("cycles") == 0:
                return None
            return datetime.fromisoformat(value["next"]).timestamp()
        if not isinstance(value, str):
            return None
        when = TimerEventDefinition.get_datetime(value) if isinstance(d, DurationTimerEventDefinition) \
            else TimerEventDefinition.parse_time_or_duration(value)
    except Exception:
        return None
    return when.timestamp() if isinstance(when, datetime) else None


def _ancestors(task: Any) -> set[Any]:
    out = set()
    while task is not None:
        out.add(task.id)
        task = task.parent
    return out


def _seen_events(task: Any) -> list[Any]:
    """Events a parallel multiple event (a start that needs several messages) has caught so far."""
    ed = task.task_spec.event_definition
    if not (isinstance(ed, MultipleEventDefinition) and ed.parallel):
        return []
    return list(task.internal_data.get("seen_events", []))


def _evaluate_all(props: list[Any], data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The values of a key's properties on ``data``; None when any of them cannot be evaluated there."""
    values = {}
    for prop in props:
        try:
            values[prop.name] = evaluate(prop.retrieval_expression, data)
        except Exception:
            return None
    return values


def _json_value(value: Any) -> Any:
    """A JSON-shaped copy (what is not JSON becomes its text), as the state and the answers keep it."""
    return json.loads(json.dumps(value, default=str))


def _json_data(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(
        {k: v for k, v in data.items() if not callable(v)}, default=str))
    return out


def _failure(exc: Exception) -> ProcessFailure:
    task = getattr(exc, "task", None)
    spec = getattr(task, "task_spec", None) or getattr(exc, "task_spec", None)
    error_type = getattr(exc, "error_type", None)
    if not isinstance(error_type, str) or error_type == "unknown":
        error_type = type(exc).__name__
    return ProcessFailure(
        task=getattr(spec, "bpmn_id", None),
        task_name=getattr(spec, "bpmn_name", None),
        error_type=error_type,
        message=str(exc.args[0]) if exc.args else str(exc),
    )
