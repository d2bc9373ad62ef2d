"""Service tasks as external work: the instance waits at a service task; the host's handler does the work.

A service task never runs inside a message's transaction. When an instance comes to a service task it waits
there (``waiting_for`` lists the task, its operator id and its evaluated parameters) and the transaction commits;
the commit's ``service_task_waiting`` event reaches :meth:`Services.on_events`, which calls the host's handler for
that operator (or the default one) in an asyncio task of its own, so a slow handler delays no request. Its result
completes the task through the core, in a transaction of its own (:class:`~.core.CompleteService`). A handler that
raises is retried with exponential backoff; after the last attempt the instance stops in ``error`` with an incident
naming the operator, the attempts and the last error (:class:`~.core.FailService`). An operator without a handler
waits for a remote worker: ``PUT /v1.0/tasks/{instance}/{task}/callback`` with the result.

At least once: a worker that dies between the commit and the handler's result leaves the task waiting; at start-up
:meth:`Services.recover` calls the handlers of every waiting service task again (several workers starting together
may each call one). A result for a task that no longer waits is refused (409 over HTTP; logged here).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from .core import Applied, CompleteService, FailService, Retry
from .engine import PENDING
from .errors import InstanceNotFound, InstanceNotInError, ServiceTaskNotWaiting, SpiffMessagesError, TaskNotFound
from .events import Event
from .outcomes import Outcome
from .store import Tx

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("quart_spiff_messages")


@dataclass(frozen=True)
class ServiceCall:
    """What a handler is given: the operator id, the evaluated parameters and where the call comes from."""

    operator: str
    params: dict[str, Any]
    process_instance_id: int
    task_guid: str
    element_id: str
    attempt: int  # 1 for the first call


Handler = Callable[[ServiceCall], Any]  # async (or plain) function; returns the result (JSON data)


class Services:
    """Calls the host's service handlers after the commit, retries them, and applies their results."""

    def __init__(self, runtime: Callable[[], Runtime], handlers: Mapping[str, Handler],
                 default: Callable[[], Handler | None], attempts: int = 3, backoff_seconds: float = 1.0) -> None:
        self._runtime = runtime  # the current one: a reload replaces it
        self.handlers = handlers
        self._default = default
        self.attempts = max(1, attempts)
        self.backoff_seconds = backoff_seconds
        self._running: dict[tuple[int, str], asyncio.Task[None]] = {}

    def handler_for(self, operator: str) -> Handler | None:
        return self.handlers.get(operator) or self._default()

    # -- after each commit ------------------------------------------------------------------------------------
    async def on_events(self, events: Iterable[Event]) -> None:
        """Start the handler of each service task a committed change made wait (the store's on-commit hook)."""
        for event in events:
            if event.kind == "service_task_waiting" and event.process_instance_id is not None:
                self.dispatch(event.process_instance_id, event.data)

    def dispatch(self, instance_id: int, service: Mapping[str, Any]) -> bool:
        """Call the handler of one waiting service task in a task of its own; False without a handler (a remote
        worker completes it) or when it is being called already."""
        key = (instance_id, str(service["task_guid"]))
        handler = self.handler_for(str(service["operator"]))
        if handler is None or key in self._running:
            return False
        task = asyncio.get_running_loop().create_task(self._call(handler, instance_id, service))
        self._running[key] = task
        task.add_done_callback(lambda _: self._running.pop(key, None))
        return True

    async def _call(self, handler: Handler, instance_id: int, service: Mapping[str, Any]) -> None:
        task_guid, operator = str(service["task_guid"]), str(service["operator"])
        attempt = int(service.get("attempts") or 0) + 1
        while True:
            call = ServiceCall(operator, dict(service.get("params") or {}), instance_id, task_guid,
                               str(service.get("element_id", "")), attempt)
            try:
                # a plain function runs in a thread: a blocking handler must not stall the worker's requests
                result = handler(call) if inspect.iscoroutinefunction(handler) else \
                    await asyncio.to_thread(handler, call)
                if inspect.isawaitable(result):
                    result = await result
                json.dumps(result, allow_nan=False)  # what is not JSON is the handler's failure
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                give_up = attempt >= self.attempts
                error = f"{type(exc).__name__}: {exc}"
                log.warning("service %s for instance %s failed (attempt %d of %d): %s", operator, instance_id,
                            attempt, self.attempts, error)
                if not await self._apply(instance_id, FailService(task_guid, error, give_up)) or give_up:
                    return
                await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
                attempt += 1
                continue
            try:
                await self.complete(instance_id, task_guid, result)
            except SpiffMessagesError as exc:  # completed meanwhile (a callback), or the instance is gone
                log.info("result of service %s for instance %s not applied: %s", operator, instance_id, exc.message)
            except Exception:
                log.exception("result of service %s for instance %s not applied; it is called again at the next "
                              "start-up", operator, instance_id)
            return

    async def _apply(self, instance_id: int, action: FailService) -> bool:
        try:
            done = await self._runtime().core.advance(action, instance_id)
        except Exception:
            log.exception("could not record a failed attempt of instance %s's service task", instance_id)
            return False
        await self._runtime().router.flush(done.outbox)
        return done.value is not None

    # -- the Python API and the routes --------------------------------------------------------------------------
    async def complete(self, instance_id: int, task_guid: str, result: Any) -> Outcome:
        """Complete a waiting service task with ``result`` (its result variable gets it); the instance runs on."""
        runtime = self._runtime()

        def attempt(tx: Tx) -> Applied:
            applied = runtime.core.apply(tx, CompleteService(task_guid, result), instance_id)
            if applied is None:  # the instance is finished or failed
                row = _instance(tx, instance_id)
                if runtime.core.task(tx, row, task_guid) is None:
                    raise TaskNotFound(f"process instance {instance_id} has no task {task_guid!r}", task=task_guid)
                raise ServiceTaskNotWaiting(f"process instance {instance_id} is {row.status}: its task "
                                            f"{task_guid!r} waits for no service result", task=task_guid)
            return applied

        done = await runtime.router.transact(attempt)
        await runtime.router.flush(done.outbox)
        return Outcome.of("task_completed", done.value)

    async def retry(self, instance_id: int) -> Outcome:
        """Run the failed task of an instance in ``error`` again (on the current spec of its process)."""
        runtime = self._runtime()

        def attempt(tx: Tx) -> Applied:
            row = _instance(tx, instance_id)
            if row.status != "error":
                raise InstanceNotInError(f"process instance {instance_id} is {row.status}, not error: there is "
                                         "nothing to retry", status_of_instance=row.status)
            applied = runtime.core.apply(tx, Retry(), instance_id)
            if applied is None:
                raise InstanceNotInError(f"process instance {instance_id} has no failed task to run again",
                                         status_of_instance=row.status)
            return applied

        done = await runtime.router.transact(attempt)
        await runtime.router.flush(done.outbox)
        return Outcome.of("retried", done.value)

    # -- start-up and shutdown --------------------------------------------------------------------------------
    async def recover(self) -> int:
        """Call the handlers of every service task that waits (a crash may have cut the last call short)."""
        runtime = self._runtime()
        started, after = 0, 0
        while True:
            batch = await runtime.store.read(partial(_pending_after, after=after))
            if not batch:
                return started
            for instance_id in batch:
                try:
                    view = await runtime.reads.instance_view(instance_id)
                except InstanceNotFound:
                    continue
                for service in view.services:
                    if service.status == "waiting":
                        started += self.dispatch(instance_id, service.as_json())
            after = batch[-1]

    async def settle(self) -> None:
        """Until no handler call is under way (what a test waits for)."""
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*list(self._running.values()), return_exceptions=True)


DEFAULT_KEY = "*"  # in a handler mapping: the handler of every operator without one of its own


def load_handlers(path: str) -> dict[str, Handler]:
    """The handler mapping a ``module:name`` path names (``SPIFF_MESSAGES_SERVICE_HANDLERS``)."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"service handlers {path!r}: expected module:name")
    found = getattr(importlib.import_module(module_name), attr)
    if not isinstance(found, Mapping):
        raise ValueError(f"service handlers {path!r} is a {type(found).__name__}, not a mapping of operator ids")
    return dict(found)


def _pending_after(tx: Tx, after: int) -> list[int]:
    return tx.instances_with_state_marker(PENDING, after)


def _instance(tx: Tx, instance_id: int) -> Any:
    row = tx.instance(instance_id)
    if row is None:
        raise InstanceNotFound(f"no process instance {instance_id}")
    return row
