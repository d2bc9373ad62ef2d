"""An instance's life: made at its none start event, run to its next wait, stopped in ``error`` by the one rule for
what SpiffWorkflow raises (:meth:`Lifecycle.guard`), retried, and read as a status and its latest task data."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.specs.mixins.events.event_types import CatchingEvent
from SpiffWorkflow.util.task import TaskState

from ..catalog import ProcessEntry
from ..errors import SpiffMessagesError
from ..scripts import ScriptEngine
from .instance import Instance, ProcessFailure, json_data, wire_loops
from .services import SERVICE, ServicePending


class Lifecycle:
    """The engine's instance lifecycle (a mixin of :class:`~quart_spiff_messages.engine.Engine`; the other
    concerns that start instances build on it)."""

    script_engine: ScriptEngine

    def new_instance(self, entry: ProcessEntry, data: Mapping[str, Any]) -> Instance:
        """An instance at its none start event with ``data`` as the initial task data."""
        wire_loops(entry)
        wf = BpmnWorkflow(entry.spec, entry.subprocess_specs, script_engine=self.script_engine)
        for task in wf.get_tasks(state=TaskState.READY):
            task.data.update(data)
        return Instance(wf, entry)

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

        A service task without its result stays STARTED: the instance waits for the host (see
        :mod:`quart_spiff_messages.services`).
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
        return json_data(last.data)


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
