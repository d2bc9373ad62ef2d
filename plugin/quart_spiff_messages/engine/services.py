"""Service tasks: a call waits for the host's result (the script engine's ``call_service`` parks the task), then
the result, a failed attempt or giving up. The host's side (claiming calls, retries) is
:mod:`quart_spiff_messages.services`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from SpiffWorkflow.util.task import TaskState

from .human_tasks import AMBIGUOUS, find_task
from .instance import Instance, ProcessFailure, json_value

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


def service_call(task: Any, operator: str, params: Mapping[str, Any]) -> str:
    """The script engine's ``call_service``: the result, once the host gave one; else the task waits for it."""
    data = task.internal_data
    if _RESULT in data:
        return json.dumps(data.pop(_RESULT))
    values = {k: v.get("value") if isinstance(v, Mapping) else v for k, v in params.items()}
    data[SERVICE] = {"operator": operator, "params": json_value(values), "attempts": 0, "last_error": None,
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


class Services:
    """The engine's service tasks (a mixin of :class:`~quart_spiff_messages.engine.Engine`)."""

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
        task = find_task(inst, task_ref)
        if task is None or task is AMBIGUOUS:
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
        task.internal_data[_RESULT] = json_value(result)
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
