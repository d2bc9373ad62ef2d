"""Where an instance stands, element by element: the one reading every view of states uses.

The operator console colours an instance's diagram with it and Spiff Arena's ``task-info`` answers its rows from it;
both read it from the instance's saved state through :meth:`Engine.element_states`, so there is no second copy of
an instance's progress to fall behind. Like the rest of the engine package, this module touches SpiffWorkflow
task objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from SpiffWorkflow.util.task import TaskState

# SpiffWorkflow's predicted states: a path that may never run, not a place the instance has been
_PREDICTED = TaskState.MAYBE | TaskState.LIKELY


@dataclass(frozen=True)
class ElementState:
    """One task of an instance: a flow node's run (several for loops and multi-instance children) or a helper spec.

    ``marker`` is the word a view shows: ``completed``, ``waiting`` (a message, timer, event gateway or service
    task it waits at), ``ready`` (a human task to complete), ``active`` (a subprocess or call activity that runs),
    ``error``, ``cancelled``, or None (not reached yet).
    """

    guid: str
    state: str  # SpiffWorkflow's state name: COMPLETED, READY, WAITING, STARTED, ERROR, CANCELLED, FUTURE, ...
    marker: str | None
    spec_name: str  # the task spec's name: a flow node's element id, or Start, End, Root, ...
    element_id: str | None  # the BPMN element id; None for SpiffWorkflow's helper specs
    name: str | None
    typename: str
    process_id: str  # the <bpmn:process> the task belongs to, or the embedded <bpmn:subProcess>'s element id
    process_guid: str | None  # the guid of the task that spawned the (sub)workflow; None for the top one
    parent_guid: str | None
    last_state_change: float
    called_process: str | None  # for a call activity or subprocess task: the process id it runs
    runtime_info: dict[str, Any] = field(default_factory=dict)
    manual: bool = False
    description: str = ""  # what kind of element, in words: "User Task", "Message Start Event", ...


def element_states(workflow: Any, failed_element: str | None, waiting_services: Iterable[str]) -> list[ElementState]:
    """Every task of ``workflow`` and its subprocesses that has been reached (predicted paths left out).

    ``failed_element``: the element id an instance's failure names (its task shows ``error`` even where
    SpiffWorkflow left it in another state); ``waiting_services``: guids of service tasks waiting for a result.
    """
    services = set(waiting_services)
    return [_row(task, wf_guid, failed_element, services) for task, wf_guid in _tasks(workflow)
            if not task.state & _PREDICTED]


def _tasks(workflow: Any) -> Iterator[tuple[Any, str | None]]:
    for task in workflow.tasks.values():
        yield task, None
    for guid, sub in workflow.subprocesses.items():
        for task in sub.tasks.values():
            yield task, str(guid)


def _row(task: Any, wf_guid: str | None, failed_element: str | None, services: set[str]) -> ElementState:
    spec = task.task_spec
    element_id = getattr(spec, "bpmn_id", None)
    guid = str(task.id)
    called = getattr(spec, "spec", None)
    try:
        info = dict(spec.task_info(task)) if hasattr(spec, "task_info") else {}
    except Exception:  # a view never fails for what one task cannot describe
        info = {}
    return ElementState(
        guid=guid, state=TaskState.get_name(task.state),
        marker=_marker(task, guid in services, failed_element is not None and element_id == failed_element),
        spec_name=str(spec.name), element_id=str(element_id) if element_id else None,
        name=getattr(spec, "bpmn_name", None), typename=type(spec).__name__, process_id=str(task.workflow.spec.name),
        process_guid=wf_guid, parent_guid=str(task.parent.id) if task.parent is not None else None,
        last_state_change=float(task.last_state_change),
        called_process=str(called) if isinstance(called, str) else None,
        runtime_info=_jsonable(info), manual=bool(getattr(spec, "manual", False)),
        description=str(getattr(spec, "description", "") or ""))


def _marker(task: Any, service_waiting: bool, failed: bool) -> str | None:
    state = task.state
    if state == TaskState.ERROR or (failed and not state & TaskState.FINISHED_MASK):
        return "error"
    if state == TaskState.COMPLETED:
        return "completed"
    if state == TaskState.CANCELLED:
        return "cancelled"
    if state == TaskState.READY:
        return "ready" if getattr(task.task_spec, "manual", False) else "waiting"
    if state == TaskState.WAITING or service_waiting:
        return "waiting"
    if state == TaskState.STARTED:
        return "active"
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
