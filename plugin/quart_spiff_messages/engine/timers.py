"""Timers: when each timer an instance waits at is due, firing the due ones, and timer start events (a new
instance when one fires, and the schedule it starts instances on). Due times are read on the core's clock
(:mod:`.clock`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.specs.event_definitions import MultipleEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.timer import (
    CycleTimerEventDefinition,
    DurationTimerEventDefinition,
    TimerEventDefinition,
)
from SpiffWorkflow.bpmn.specs.mixins import EventBasedGatewayMixin, StartEventMixin
from SpiffWorkflow.util.task import TaskState

from ..catalog import ProcessEntry
from .clock import HAIR
from .clock import at as clock_at
from .instance import Instance, wire_loops
from .lifecycle import Lifecycle


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


class Timers(Lifecycle):
    """The engine's timers (a mixin of :class:`~quart_spiff_messages.engine.Engine`)."""

    at = staticmethod(clock_at)

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
            with self.at(now + HAIR):
                inst.workflow.refresh_timers()
        return due

    def start_by_timer(self, entry: ProcessEntry, element_id: str) -> Instance | None:
        """A new instance whose timer start event ``element_id`` fired (its due time is the scheduler's)."""
        wire_loops(entry)
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
