"""Human tasks: the READY user, manual and plain tasks a person (or the host) completes, and finding a task by
its guid or element id."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from SpiffWorkflow.exceptions import TaskNotFoundException
from SpiffWorkflow.util.task import TaskState

from .instance import Instance, json_data

AMBIGUOUS = object()  # an element id that names several READY tasks


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


def find_task(inst: Instance, task_ref: str) -> Any | None:
    """The task ``task_ref`` names: by guid, or by element id (the READY human task, :data:`AMBIGUOUS` when there
    are several, else the last one of that element); None when there is none."""
    try:
        return inst.workflow.get_task_from_id(UUID(task_ref))
    except TaskNotFoundException:
        return None
    except ValueError:  # not a guid: an element id
        found = [t for t in inst.workflow.get_tasks() if t.task_spec.bpmn_id == task_ref]
        ready = [t for t in found if t.state == TaskState.READY and t.task_spec.manual]
        if len(ready) > 1:
            return AMBIGUOUS
        return ready[0] if ready else (found[-1] if found else None)


class HumanTasks:
    """The engine's human tasks (a mixin of :class:`~quart_spiff_messages.engine.Engine`)."""

    def complete_task(self, inst: Instance, task_ref: str, data: Mapping[str, Any]) -> str:
        """Complete a READY human task (user, manual or plain task) with ``data`` merged into its data.

        ``task_ref`` is the task's guid, or its element id when exactly one such task is READY. Returns
        ``completed``, ``not_ready`` (it exists but is not a READY human task), ``ambiguous`` (an element id with
        several READY tasks: give the guid) or ``not_found``.
        """
        task = find_task(inst, task_ref)
        if task is AMBIGUOUS:
            return "ambiguous"
        if task is None:
            return "not_found"
        if task.state != TaskState.READY or not task.task_spec.manual:
            return "not_ready"
        task.data.update(data)
        task.run()
        return "completed"

    def human_tasks(self, inst: Instance) -> list[HumanTask]:
        """The READY user, manual and plain tasks of the instance: what a person (or the host) completes."""
        if inst.failure is not None:
            return []
        return [_human_task(t) for t in inst.workflow.get_tasks(state=TaskState.READY, manual=True)]

    def task(self, inst: Instance, task_ref: str) -> HumanTask | None:
        """One task of the instance, whatever its state (by guid, or by element id)."""
        task = find_task(inst, task_ref)
        return _human_task(task) if task is not None and task is not AMBIGUOUS else None


def _human_task(task: Any) -> HumanTask:
    extensions = getattr(task.task_spec, "extensions", None) or {}
    properties = dict(extensions.get("properties") or {})
    return HumanTask(
        id=str(task.id), element_id=str(task.task_spec.bpmn_id), name=getattr(task.task_spec, "bpmn_name", None),
        type=type(task.task_spec).__name__, state=TaskState.get_name(task.state), data=json_data(task.data),
        properties=properties,
        form={"json_schema": properties.get("formJsonSchemaFilename"),
              "ui_schema": properties.get("formUiSchemaFilename")})
