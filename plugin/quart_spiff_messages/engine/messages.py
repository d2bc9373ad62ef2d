"""Messages: start an instance by message, hand a message to the one waiting task the index chose (never
``send_event``, which gives it to every task that catches it, nor ``catch``, which silently re-queues what nothing
consumed), list what an instance waits for with the correlation values each wait expects (see
:meth:`Messages._seed_correlations` for where they come from), and drain what it threw."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid5

from SpiffWorkflow.bpmn import BpmnEvent, BpmnWorkflow
from SpiffWorkflow.bpmn.specs.event_definitions import MessageEventDefinition, MultipleEventDefinition
from SpiffWorkflow.bpmn.specs.mixins import StartEventMixin
from SpiffWorkflow.bpmn.specs.mixins.events.event_types import CatchingEvent
from SpiffWorkflow.exceptions import TaskNotFoundException
from SpiffWorkflow.util.task import TaskState

from ..catalog import ProcessEntry, StartPoint, message_definitions
from ..correlation import KeyValue, evaluate, expected_key_value
from .instance import Instance, wire_loops
from .lifecycle import Lifecycle


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
class Thrown:
    message_name: str
    payload: Any
    correlations: dict[str, Any]


@dataclass(frozen=True)
class _Trigger:
    wait_id: str
    spec_name: str
    start: Any  # the event subprocess's start event spec
    interrupting: bool


class Messages(Lifecycle):
    """The engine's messages (a mixin of :class:`~quart_spiff_messages.engine.Engine`).

    ``correlate_from_data``: a catch whose workflows have no value yet for its correlation key takes the expected
    value from the instance's data, evaluated with the catch's own retrieval expressions.
    """

    correlate_from_data: bool

    def start_by_message(self, entry: ProcessEntry, start: StartPoint, payload: Mapping[str, Any]) -> Instance | None:
        """A new instance that caught ``start``'s message; None if the payload cannot be caught there."""
        wire_loops(entry)
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

    def drain(self, inst: Instance) -> list[Thrown]:
        """Messages the instance threw that nothing inside it caught (clears SpiffWorkflow's queue)."""
        return [
            Thrown(ev.event_definition.name, ev.payload, dict(ev.correlations or {}))
            for ev in inst.workflow.get_events()
            if isinstance(ev.event_definition, MessageEventDefinition)
        ]


def _wait(task_id: str, element_id: str, md: Any, correlations: Mapping[str, Any]) -> Wait:
    """A wait for ``md``, expecting the values ``correlations`` has for its keys (none: it accepts any)."""
    keys = sorted({k for p in md.correlation_properties for k in p.correlation_keys or ()})
    expected = tuple(expected_key_value(k, correlations[k]) for k in keys if k in correlations)
    return Wait(task_id, element_id, md.name, expected, not expected)


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
