"""Service tasks as external work: the instance waits at a service task; the host's handler does the work.

A service task never runs inside a message's transaction. When an instance comes to a service task it waits
there (``waiting_for`` lists the task, its operator id and its evaluated parameters), and the core writes a row
for the call (``spiff_service_call``) in the same transaction. Each worker's work loop (the timer loop, woken by
that commit) claims due calls of operators it has a handler for, with a lease (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL: one worker per call), and calls the handler in an asyncio task of its own, so a slow handler delays no
request; the lease is renewed while it runs. Its result completes the task through the core, in a transaction of
its own (:class:`~.core.CompleteService`), which removes the row. A handler that raises is retried with exponential
backoff (the row keeps the next attempt's number and time); after the last attempt the instance stops in ``error``
with an incident naming the operator, the attempts and the last error (:class:`~.core.FailService`). An operator
without a handler waits for a remote worker: ``PUT /v1.0/tasks/{instance}/{task}/callback`` with the result.

At least once: a worker that dies while a handler runs (or pauses between attempts) stops renewing the lease; when
it runs out, any worker claims the call again and the handler is called again. A result for a task that no longer
waits is refused (409 over HTTP; logged here).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .core import Applied, CompleteService, FailService, Retry
from .errors import InstanceNotFound, InstanceNotInError, ServiceTaskNotWaiting, SpiffMessagesError, TaskNotFound
from .outcomes import Outcome
from .store import ServiceCallRecord, Tx

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
    """Claims due service calls, calls the host's handlers, retries them, and applies their results."""

    def __init__(self, runtime: Callable[[], Runtime], handlers: Mapping[str, Handler],
                 default: Callable[[], Handler | None], attempts: int = 3, backoff_seconds: float = 1.0,
                 lease_seconds: float = 30.0) -> None:
        self._runtime = runtime  # the current one: a reload replaces it
        self.handlers = handlers
        self._default = default
        self.attempts = max(1, attempts)
        self.backoff_seconds = backoff_seconds
        self.lease_seconds = lease_seconds
        self._running: dict[tuple[int, str], asyncio.Task[None]] = {}

    def handler_for(self, operator: str) -> Handler | None:
        return self.handlers.get(operator) or self._default()

    @property
    def operators(self) -> list[str] | None:
        """The operators this worker has a handler for (None: all, there is a default handler)."""
        return None if self._default() is not None else sorted(self.handlers)

    # -- the work loop ------------------------------------------------------------------------------------------
    async def dispatch_due(self) -> int:
        """Claim the due service calls this worker has handlers for and call each handler in a task of its own
        (a slow handler delays no request); returns how many were started."""
        runtime, operators = self._runtime(), self.operators
        if operators == []:
            return 0
        claimed = await runtime.store.write(lambda tx: tx.claim_service_calls(operators, self.lease_seconds))
        started = 0
        for call in claimed:
            key = (call.process_instance_id, call.task_id)
            handler = self.handler_for(call.operator)
            if handler is None or key in self._running:
                continue
            task = asyncio.get_running_loop().create_task(self._call(handler, call))
            self._running[key] = task
            task.add_done_callback(lambda _, key=key: self._running.pop(key, None))  # type: ignore[misc]
            started += 1
        return started

    async def next_due(self) -> float | None:
        """When a service call this worker could claim is next due (or its lease runs out)."""
        operators = self.operators
        return await self._runtime().store.read(lambda tx: tx.next_service_call_due(operators))

    async def _call(self, handler: Handler, claimed: ServiceCallRecord) -> None:
        """Call the handler until it returns or the attempts are spent, keeping the claim's lease alive."""
        instance_id, task_guid, operator = claimed.process_instance_id, claimed.task_id, claimed.operator
        attempt = claimed.attempt
        keep_alive = asyncio.get_running_loop().create_task(self._renew(claimed.id))
        try:
            while True:
                call = ServiceCall(operator, dict(claimed.params), instance_id, task_guid, claimed.element_id,
                                   attempt)
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
                    pause = self.backoff_seconds * 2 ** (attempt - 1)
                    if not await self._failed(instance_id, task_guid, error, give_up, attempt + 1, pause) \
                            or give_up:
                        return
                    await asyncio.sleep(pause)
                    attempt += 1
                    continue
                try:
                    await self.complete(instance_id, task_guid, result)
                except SpiffMessagesError as exc:  # completed meanwhile (a callback), or the instance is gone
                    log.info("result of service %s for instance %s not applied: %s", operator, instance_id,
                             exc.message)
                except Exception:
                    log.exception("result of service %s for instance %s not applied; its handler is called again "
                                  "once the claim's lease runs out", operator, instance_id)
                return
        finally:
            keep_alive.cancel()

    async def _renew(self, call_id: int) -> None:
        """While a handler runs, push its claim's lease on (a worker that dies stops doing so)."""
        store = self._runtime().store
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await store.write(lambda tx: tx.renew_service_calls([call_id], tx.now + self.lease_seconds))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not renew the lease of service call %s", call_id)

    async def _failed(self, instance_id: int, task_guid: str, error: str, give_up: bool, next_attempt: int,
                      pause: float) -> bool:
        """Record a failed attempt through the core; the call's row moves to the next attempt, still held by this
        worker while it pauses. False when the task waits for nothing any more."""
        runtime = self._runtime()

        def attempt(tx: Tx) -> Applied | None:
            applied = runtime.core.apply(tx, FailService(task_guid, error, give_up), instance_id)
            if applied is not None and not give_up:
                when = tx.now + pause
                tx.reschedule_service_call(instance_id, task_guid, next_attempt, when, when + self.lease_seconds)
            return applied

        try:
            done = await runtime.store.run(attempt)
        except Exception:
            log.exception("could not record a failed attempt of instance %s's service task", instance_id)
            return False
        await runtime.router.flush(done.outbox)
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

    # -- tests and shutdown ----------------------------------------------------------------------------------
    async def settle(self) -> None:
        """Until no handler call is due or under way, here or in a claim another transaction is making (what a
        test waits for)."""
        store = self._runtime().store
        while True:
            await self.dispatch_due()
            if self._running:
                await asyncio.gather(*list(self._running.values()), return_exceptions=True)
                continue
            due = await self.next_due()
            if due is None or due > store.estimated_now():
                return
            await asyncio.sleep(0.01)  # claimed by a transaction that has not committed yet

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


def _instance(tx: Tx, instance_id: int) -> Any:
    row = tx.instance(instance_id)
    if row is None:
        raise InstanceNotFound(f"no process instance {instance_id}")
    return row
