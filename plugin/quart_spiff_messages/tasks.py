"""Human steps: list, show and complete the READY user, manual and plain tasks of an instance.

Completing a task is one action of the transaction core (:class:`~.core.CompleteTask`): the instance is locked,
the task completed with the data, the instance run to its next wait and settled, in one transaction; what it threw
is routed after the commit, as after a delivery. Assignment, forms and lanes stay with the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .core import Applied, CompleteTask, Core
from .engine import HumanTask
from .errors import InstanceNotFound, TaskNotFound, TaskNotReady
from .outcomes import Outcome
from .router import Router
from .store import Store, Tx


class Tasks:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.core: Core = router.core
        self.store: Store = router.store

    async def list_tasks(self, instance_id: int) -> list[HumanTask]:
        """The instance's READY human tasks."""
        return await self.store.read(lambda tx: self.core.view(tx, self._instance(tx, instance_id)).tasks)

    async def task(self, instance_id: int, task_ref: str) -> HumanTask:
        """One task of the instance, by guid (or by element id), whatever its state."""

        def read(tx: Tx) -> HumanTask:
            found = self.core.task(tx, self._instance(tx, instance_id), task_ref)
            if found is None:
                raise TaskNotFound(f"process instance {instance_id} has no task {task_ref!r}", task=task_ref)
            return found

        return await self.store.read(read)

    async def complete_task(self, instance_id: int, task_ref: str, data: Mapping[str, Any]) -> Outcome:
        """Complete a READY human task with ``data`` merged into its data; the instance runs on to its next wait."""

        def attempt(tx: Tx) -> Applied:
            applied = self.core.apply(tx, CompleteTask(task_ref, dict(data)), instance_id)
            if applied is None:  # the instance is gone or finished
                row = self._instance(tx, instance_id)
                raise TaskNotReady(f"process instance {instance_id} is {row.status}: it has no task to complete",
                                   task=task_ref)
            return applied

        try:
            done = await self.router.transact(attempt)
        except (TaskNotFound, TaskNotReady) as exc:
            raise await self._naming_ready_tasks(exc, instance_id) from None
        await self.router.flush(done.outbox)
        return Outcome.of("task_completed", done.value)

    async def _naming_ready_tasks(self, exc: TaskNotFound | TaskNotReady, instance_id: int) -> Exception:
        """The refusal again, saying which tasks can be completed now (``ready_tasks``: element id, name, guid)."""
        try:
            ready = await self.list_tasks(instance_id)
        except InstanceNotFound as gone:
            return gone
        listed = [{"element_id": t.element_id, "name": t.name, "task_guid": t.id} for t in ready]
        names = ", ".join(f"{t.element_id!r}" + (f" ({t.name})" if t.name else "") for t in ready)
        hint = f"; READY tasks: {names}" if ready else "; it has no READY task"
        return type(exc)(exc.message + hint, headers=exc.headers, **{**exc.extra, "ready_tasks": listed})

    @staticmethod
    def _instance(tx: Tx, instance_id: int) -> Any:
        row = tx.instance(instance_id)
        if row is None:
            raise InstanceNotFound(f"no process instance {instance_id}")
        return row
