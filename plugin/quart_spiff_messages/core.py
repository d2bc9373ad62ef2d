"""The transaction core: every change to an instance is one action applied here, in one transaction.

:meth:`Core.apply` locks the instance (or makes a new one), loads it, applies the action, runs it to its next wait,
settles it (indexes its waits, lets them take buffered messages, records what it threw in the transaction's outbox)
and saves it. :meth:`Core.advance` does that in a transaction of its own and commits. A message delivered, an
instance started, and later a timer fired, a task completed, a service result or a retry are actions of this one
core; nothing else writes an instance. The caller routes the outbox after the commit.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import receivers
from .catalog import Catalog, ProcessEntry, StartPoint
from .correlation import KeyValue, key_values
from .engine import ElementState, Engine, HumanTask, Instance, ServiceWait, TimerWait
from .errors import ServiceTaskNotWaiting, TaskAmbiguous, TaskNotFound, TaskNotReady
from .events import INSTANCE_STATUS_EVENTS
from .scripts import RunInfo, current_caller
from .store import (
    Committed,
    InstanceRecord,
    MessageRecord,
    ServiceCallRow,
    Store,
    TimerRow,
    Tx,
    WaitRow,
    active_keys,
    correlation_lock,
    reserved,
)

# A delivery can make an instance take buffered messages, which can make it wait again: bound the chain.
MAX_CHAINED_DELIVERIES = 100


# -- actions ----------------------------------------------------------------------------------------------------
# An action on an existing instance has ``act(engine, inst) -> bool`` (False: it does not take, nothing is written);
# one that makes an instance has ``make(core) -> Instance | None``. ``message`` is the message it consumes, if any.
@dataclass(frozen=True)
class Deliver:
    """A message for the one waiting task the subscription index chose."""

    message: MessageRecord
    task_id: str

    def act(self, engine: Engine, inst: Instance) -> bool:
        return engine.deliver(inst, self.task_id, self.message.name, self.message.payload_object)


@dataclass(frozen=True)
class StartByMessage:
    """A new instance through a Message Start Event, which catches ``message``."""

    message: MessageRecord
    start: StartPoint

    def make(self, core: Core) -> Instance | None:
        entry = core.catalog.processes[self.start.process_key]
        return core.engine.start_by_message(entry, self.start, self.message.payload_object)

    def held_keys(self) -> list[KeyValue]:
        """The correlation keys the new instance holds while it is active (a start that makes one instance per
        correlation key); none for any other start."""
        if not self.start.one_per_key:
            return []
        return key_values(self.start.properties, self.message.payload_object) or []


@dataclass(frozen=True)
class StartWithData:
    """A new instance through the process's plain start event, with ``data`` as its initial data."""

    entry: ProcessEntry
    data: Mapping[str, Any] = field(default_factory=dict)
    message: None = None

    def make(self, core: Core) -> Instance | None:
        return core.engine.new_instance(self.entry, self.data)


@dataclass(frozen=True)
class CompleteTask:
    """A person (or the host) completes a READY user, manual or plain task with ``data``."""

    task: str  # the task's guid, or its element id when exactly one such task is READY
    data: Mapping[str, Any] = field(default_factory=dict)
    message: None = None

    def act(self, engine: Engine, inst: Instance) -> bool:
        done = engine.complete_task(inst, self.task, self.data)
        if done == "not_found":
            raise TaskNotFound(f"process instance has no task {self.task!r}", task=self.task)
        if done == "ambiguous":
            raise TaskAmbiguous(f"several READY tasks are {self.task!r}: name one by its guid", task=self.task)
        if done == "not_ready":
            raise TaskNotReady(f"task {self.task!r} is not a READY user, manual or plain task", task=self.task)
        return True


@dataclass(frozen=True)
class FireTimers:
    """The scheduler found a timer of the instance due: the core fires every due timer before any action, so this
    action itself has nothing left to do. It takes (the instance is settled and saved, its timer rows with it)."""

    message: None = None

    def act(self, engine: Engine, inst: Instance) -> bool:
        return True


@dataclass(frozen=True)
class CompleteService:
    """A waiting service task's result, from the host's handler or a remote worker's callback."""

    task: str  # its guid (or element id)
    result: Any
    message: None = None

    def act(self, engine: Engine, inst: Instance) -> bool:
        done = engine.complete_service(inst, self.task, self.result)
        if done == "not_found":
            raise TaskNotFound(f"process instance has no task {self.task!r}", task=self.task)
        if done == "ambiguous":
            raise TaskAmbiguous(f"several tasks are {self.task!r}: name one by its guid", task=self.task)
        if done == "not_waiting":
            raise ServiceTaskNotWaiting(f"task {self.task!r} waits for no service result", task=self.task)
        return True


@dataclass(frozen=True)
class StartByTimer:
    """A new instance through the timer start event ``element_id`` (its schedule said it is due)."""

    entry: ProcessEntry
    element_id: str
    message: None = None

    def make(self, core: Core) -> Instance | None:
        return core.engine.start_by_timer(self.entry, self.element_id)


@dataclass(frozen=True)
class FailService:
    """A handler's attempt failed; ``give_up``: the last one, the instance stops in ``error``."""

    task: str
    error: str
    give_up: bool
    message: None = None

    def act(self, engine: Engine, inst: Instance) -> bool:
        return engine.service_failed(inst, self.task, self.error, self.give_up)


@dataclass(frozen=True)
class Retry:
    """Run the failed tasks of an instance in ``error`` again, on the catalog's current spec of its process."""

    message: None = None

    def act(self, engine: Engine, inst: Instance) -> bool:
        return engine.retry(inst)


Action = (Deliver | StartByMessage | StartWithData | CompleteTask | FireTimers | StartByTimer | CompleteService
          | FailService | Retry)


@dataclass(frozen=True)
class Applied:
    """What one action did: the instance as saved, the message it consumed as written, its latest task data."""

    instance: InstanceRecord
    message: MessageRecord | None
    task_data: dict[str, Any]
    failure: dict[str, Any] | None  # the process error, when the instance stopped in ``error``
    timers_fired: tuple[TimerWait, ...] = ()  # the due timers that fired before the action


@dataclass(frozen=True)
class InstanceView:
    instance: InstanceRecord
    data: dict[str, Any]
    waiting_for: list[dict[str, Any]]  # messages, then timers (``kind``)
    timers: list[TimerWait]
    tasks: list[HumanTask]  # READY user, manual and plain tasks
    services: list[ServiceWait] = field(default_factory=list)  # service tasks called so far, with their attempts


class Core:
    def __init__(self, catalog: Catalog, engine: Engine, store: Store,
                 old_specs: dict[tuple[str, str], ProcessEntry] | None = None) -> None:
        self.catalog = catalog
        self.engine = engine
        self.store = store
        self._old_specs = old_specs if old_specs is not None else {}

    def with_catalog(self, catalog: Catalog) -> Core:
        """The core for a reloaded catalog; spec versions never change, so what is loaded of them is shared."""
        return Core(catalog, self.engine, self.store, self._old_specs)

    async def advance(self, action: Action, instance_id: int | None = None) -> Committed[Applied | None]:
        """:meth:`apply` in a transaction of its own, committed; the thrown messages come back to be routed."""
        return await self.store.run(lambda tx: self.apply(tx, action, instance_id))

    def apply(self, tx: Tx, action: Action, instance_id: int | None = None) -> Applied | None:
        """Apply ``action`` to instance ``instance_id`` (or to a new instance) inside ``tx``, at ``tx.now``. A start
        by message with ``instance_id`` starts that reserved ``not_started`` row instead of a new one.

        Every timer of the instance already due fires first (:func:`timers_first`). None when the action does not
        take (the instance is gone or finished, or its task does not catch the message) and no timer fired: then
        nothing of the instance was written. When a timer fired but the action did not take, the instance is
        written and ``Applied.message`` is None.
        """
        with self.engine.at(tx.now):
            return self._apply(tx, action, instance_id)

    def _apply(self, tx: Tx, action: Action, instance_id: int | None) -> Applied | None:
        before: InstanceRecord | None = None  # the instance as it was (None: a new one)
        fired: list[TimerWait] = []
        had_timers = had_services = False
        if isinstance(action, (StartByMessage, StartWithData, StartByTimer)):
            # ``instance_id``: the ``not_started`` row an asynchronous accept reserved for this start (else a new row)
            booked = self._reservation(tx, action, instance_id)
            if instance_id is not None and booked is None:
                return None
            made = action.make(self)
            if made is None:
                return None
            inst, entry = made, made.entry
            if booked is not None and booked.process_key != entry.key:
                return None  # the catalog was reloaded: the message now starts another process
            row = booked or tx.add_instance(process_key=entry.key, process_id=entry.process_id, group=entry.group,
                                            spec_version=entry.spec_version)
            held = action.held_keys() if isinstance(action, StartByMessage) else []
            if held and not active_keys.hold(tx, entry.key, held, row.id):
                # an active instance has the key: the start does not take (a reservation keeps its row)
                if booked is None:
                    active_keys.drop_instance(tx, row.id)
                else:
                    active_keys.release(tx, row.id)
                return None
            if row.spec_version != entry.spec_version:  # reloaded since the reservation: it starts on today's spec
                row = tx.set_spec_version(row, entry.spec_version)
            tx.record_event("instance_started", row.id, process_model_identifier=entry.key)
            inst.run_info = _run_info(row)
            ready_before: set[str] = set()
            took = True
        else:
            if instance_id is None:
                raise ValueError(f"{type(action).__name__} needs the instance it is for")
            found = tx.lock_instance(instance_id)
            retry = isinstance(action, Retry)
            if found is None or found.status == "complete" or (found.status == "error") != retry \
                    or found.status in reserved.NEVER_RAN:  # nothing ran: no state to act on
                return None
            row, before = found, found
            inst = self._load_current(tx, found) if retry \
                else self.engine.load(found.state, self.entry(tx, found), found.id)
            inst.run_info = _run_info(row)
            ready_before = {t.id for t in self.engine.human_tasks(inst)}
            services_before = {s.task_id for s in self.engine.service_tasks(inst, waiting_only=True)}
            ready_before |= services_before
            had_services = bool(services_before)
            pending = self.engine.timers(inst)
            had_timers, took = bool(pending), True
            with self.engine.guard(inst):  # what SpiffWorkflow raises stops the instance in error: the action took
                fired = self.timers_first(inst, pending, tx.now)
                took = action.act(self.engine, inst)
            if not took and not fired:
                return None
            if inst.entry.spec_version != row.spec_version:
                row = tx.set_spec_version(row, inst.entry.spec_version)
        self.engine.run(inst)
        waited = action.task_id if isinstance(action, Deliver) else None
        consumed = self._received(tx, action.message, row, inst, waited) if took and action.message is not None \
            else None
        for timer in fired:
            tx.record_event("timer_fired", row.id, element_id=timer.element_id, timer_type=timer.timer_type,
                            due_at=timer.due_at)
        delivered = {(action.task_id, action.message.name)} if took and isinstance(action, Deliver) else set()
        row, calls = self._settle(tx, row, inst, had_timers or had_services, delivered, indexed=before is not None)
        if row.status == "complete" and inst.entry.one_per_key_starts:
            self._release_keys(tx, row)
        self._record_changes(tx, before, row, inst, ready_before, calls)
        tx.after_commit.append(functools.partial(self.engine.keep, row.id, row.state, inst))
        failure = inst.failure.as_json() if inst.failure is not None else None
        return Applied(row, consumed, self.engine.task_data(inst), failure, tuple(fired))

    @staticmethod
    def _reservation(tx: Tx, action: Action, instance_id: int | None) -> InstanceRecord | None:
        """The reserved row a start by message is for, locked; None when there is none or it is no longer
        ``not_started`` (then the start does not take: an instance starts once)."""
        if instance_id is None:
            return None
        if not isinstance(action, StartByMessage):
            raise ValueError(f"{type(action).__name__} makes a new instance: only a start by message has a reservation")
        found = tx.lock_instance(instance_id)
        return found if found is not None and found.status == reserved.NOT_STARTED else None

    def timers_first(self, inst: Instance, pending: list[TimerWait], now: float) -> list[TimerWait]:
        """The precedence rule: before anything is offered to an instance, each of its timers already due fires
        (and the instance runs on from it), so a message that comes after its timeout finds the wait gone and is
        routed on, as in Zeebe. ``pending``: the instance's timers; returns those that fired."""
        if not any(t.due_at <= now for t in pending):
            return []
        fired = self.engine.fire_due(inst, now)
        self.engine.run(inst)
        return fired

    # -- settling ---------------------------------------------------------------------------------------------
    def _settle(self, tx: Tx, row: InstanceRecord, inst: Instance, had_work: bool,
                delivered: set[tuple[str, str]], indexed: bool = True) -> tuple[InstanceRecord, list[ServiceWait]]:
        """Index the instance's waits, timers and service calls, hand it buffered messages that fit, queue what it
        threw, save it.

        ``had_work``: it had timers or service calls before the change (an instance that never had either costs
        their indexes nothing); ``delivered``: the waits (task id, message name) a message reached in this change;
        ``indexed``: False for an instance being made (nothing of it is in the wait index yet).
        """
        for _ in range(MAX_CHAINED_DELIVERIES):
            for thrown in self.engine.drain(inst):
                out = tx.add_message(name=thrown.message_name, scope="", message_type="send", status="ready",
                                     payload=thrown.payload, correlation_keys=thrown.correlations or None,
                                     process_instance_id=row.id)
                assert out.id is not None
                tx.outbox.append(out.id)
            added = receivers.sync_waits(tx, row, self._wait_rows(inst), delivered, indexed)
            indexed = True
            taken = self._take_buffered(tx, row, inst, added) if added else None
            if taken is None:
                break
            delivered.add(taken)
        timers = self.engine.timers(inst)
        calls = self.engine.service_tasks(inst, waiting_only=True)
        if timers or calls or had_work:
            tx.sync_timers(row.id, [TimerRow(t.task_id, t.element_id, t.timer_type, t.due_at) for t in timers])
            tx.sync_service_calls(row.id, [ServiceCallRow(c.task_id, c.element_id, c.operator, c.params)
                                           for c in calls])
        saved = tx.save_instance(row, state=self.engine.dump(inst), status=self.engine.status(inst),
                                 correlations=self.engine.correlations(inst),
                                 error=inst.failure.as_json() if inst.failure else None)
        return saved, calls

    def _release_keys(self, tx: Tx, row: InstanceRecord) -> None:
        """A completed instance frees its correlation keys; the oldest buffered start message with one of them is
        routed after the commit (it starts the next instance for that key).

        The keys' correlation locks come first, as a start message takes them before it tries the key: a message
        kept because the key was held is seen here, or sees the key free (no message kept for nothing)."""
        held = active_keys.held(tx, row.id)
        if not held:
            return
        names = sorted({s.message_name for s in self.catalog.one_per_key_starts(row.process_key)})
        tx.lock_keys(exclusive=[correlation_lock(n, k, d) for n in names for k, d in held])
        active_keys.release(tx, row.id)
        waiting = active_keys.waiting_start(tx, names, held)
        if waiting is not None:
            tx.outbox.append(waiting)

    def _record_changes(self, tx: Tx, before: InstanceRecord | None, row: InstanceRecord, inst: Instance,
                        ready_before: set[str], calls: list[ServiceWait]) -> None:
        """The events of one change: the instance's new status (each time it comes to wait again too), the human
        tasks that became READY and the service tasks that came to wait (``calls``: those waiting now)."""
        kind = INSTANCE_STATUS_EVENTS[row.status]
        if kind == "instance_waiting" or before is None or before.status != row.status:
            tx.record_event(kind, row.id, process_model_identifier=row.process_key, status=row.status,
                            error=row.error)
        for task in self.engine.human_tasks(inst):
            if task.id not in ready_before:
                tx.record_event("task_ready", row.id, task_guid=task.id, element_id=task.element_id, name=task.name,
                                type=task.type)
        for service in calls:
            if service.task_id not in ready_before:  # the service dispatcher calls its handler after the commit
                tx.record_event("service_task_waiting", row.id, **service.as_json())

    def _load_current(self, tx: Tx, row: InstanceRecord) -> Instance:
        """The instance on the catalog's current spec of its process (a fix reloaded since), else on its own."""
        current = self.catalog.process(row.process_key)
        if current is not None and current.spec_version != row.spec_version:
            try:
                return self.engine.load(row.state, current)
            except Exception:  # the state does not fit the new spec: run the old one again
                pass
        return self.engine.load(row.state, self.entry(tx, row))

    def _take_buffered(self, tx: Tx, row: InstanceRecord, inst: Instance,
                       added: Sequence[WaitRow]) -> tuple[str, str] | None:
        """Deliver the oldest ready message that one of the new waits accepts; the wait (task id, message name) it
        reached, or None."""
        tx.lock_keys(exclusive=[correlation_lock(w.message_name, w.key.key, w.key.digest) if w.key
                                else correlation_lock(w.message_name) for w in added])
        for cand in tx.ready_messages_for(row.process_group, added):
            assert cand.id is not None
            claimed = tx.claim_message(cand.id)
            if claimed is None:
                continue
            tasks = dict.fromkeys(w.task_id for w in added if w.message_name == claimed.name)
            took = next((t for t in tasks if self._deliver(inst, t, claimed)), None)
            if took is not None:
                self.engine.run(inst)
                self._received(tx, claimed, row, inst, took)
                tx.drop_message_keys(cand.id)
                return took, claimed.name
            tx.update_message(claimed, status="ready")
        return None

    def _deliver(self, inst: Instance, task_id: str, msg: MessageRecord) -> bool:
        """A buffered message for one of the instance's new waits (an exception it causes is a process error)."""
        took = False
        with self.engine.guard(inst):
            took = self.engine.deliver(inst, task_id, msg.name, msg.payload_object)
        return took or inst.failure is not None

    def _wait_rows(self, inst: Instance) -> list[WaitRow]:
        rows = []
        for w in self.engine.waits(inst):
            if w.accept_any:
                rows.append(WaitRow(w.task_id, w.element_id, w.message_name, None))
            rows += [WaitRow(w.task_id, w.element_id, w.message_name, kv) for kv in w.expected]
        return rows

    def _received(self, tx: Tx, msg: MessageRecord, row: InstanceRecord, inst: Instance,
                  task_id: str | None = None) -> MessageRecord:
        """Record the delivery: a ``receive`` row for the instance, both rows ``completed`` (or ``failed``). The
        receive row of a wait (``task_id``'s) keeps the id the wait was listed with."""
        status, cause = "completed", None
        if inst.failure is not None:
            status = "failed"
            cause = f"process instance {row.id} failed in {inst.failure.task}: {inst.failure.message}"
        written = msg.id is not None  # a queued or buffered message; a synchronous send's is still a draft
        if not written:  # written with its outcome now: the receive row needs its id
            msg = tx.save_message(tx.update_message(msg, status=status, failure_cause=cause))
        tx.record_event("message_delivered", row.id, msg.id, name=msg.name, status=status)
        fields: dict[str, Any] = dict(
            name=msg.name, scope=msg.scope, message_type="receive", status=status, payload=None,
            correlation_keys=self.engine.correlations(inst), process_instance_id=row.id, counterpart_id=msg.id,
            failure_cause=cause)
        receive = tx.add_receive(row.id, task_id, **fields) if task_id is not None else tx.add_message(**fields)
        if written:  # its outcome and its counterpart in one update
            return tx.update_message(msg, status=status, failure_cause=cause, counterpart_id=receive.id)
        return tx.update_message(msg, counterpart_id=receive.id)

    # -- reading ----------------------------------------------------------------------------------------------
    def view(self, tx: Tx, row: InstanceRecord) -> InstanceView:
        """An instance's current data and what it waits for, read from its state (not from the index)."""
        if row.status in reserved.NEVER_RAN:  # reserved, not started (or ended so): no data, no waits
            return InstanceView(row, {}, [], [], [])
        inst = self.engine.load(row.state, self.entry(tx, row))
        timers = self.engine.timers(inst)
        services = self.engine.service_tasks(inst)
        waiting = [w.as_json() for w in self.engine.waits(inst)]
        waiting += [{"kind": "service_task", **s.as_json()} for s in services if s.status == "waiting"]
        waiting += [t.as_json() for t in timers]
        return InstanceView(row, self.engine.task_data(inst), waiting, timers, self.engine.human_tasks(inst),
                            services)

    def element_states(self, tx: Tx, row: InstanceRecord) -> list[ElementState]:
        """Where the instance stands, element by element, read from its saved state (the one reading every view
        of states uses: the console's diagram, Spiff Arena's task-info); none for an instance that never ran."""
        if row.status in reserved.NEVER_RAN:
            return []
        inst = self.engine.load(row.state, self.entry(tx, row))
        failed = row.error.get("task") if row.error else None
        return self.engine.element_states(inst, failed if isinstance(failed, str) else None)

    def task(self, tx: Tx, row: InstanceRecord, task_ref: str) -> HumanTask | None:
        """One task of an instance (by guid, or by element id), read from its state."""
        if row.status in reserved.NEVER_RAN:
            return None
        return self.engine.task(self.engine.load(row.state, self.entry(tx, row)), task_ref)

    def entry(self, tx: Tx, row: InstanceRecord) -> ProcessEntry:
        """The spec the instance started on: the catalog's if unchanged, else the stored version."""
        entry = self.catalog.process(row.process_key)
        if entry is not None and entry.spec_version == row.spec_version:
            return entry
        cache_key = (row.process_key, row.spec_version)
        if cache_key not in self._old_specs:
            spec_json = tx.spec(row.process_key, row.spec_version)
            if spec_json is None:
                raise RuntimeError(f"spec {row.process_key}@{row.spec_version} of instance {row.id} is gone")
            current = frozenset(entry.interrupting_starts) if entry is not None else frozenset()
            # an instance of an older version may hold a correlation key: released when it completes
            per_key = entry.one_per_key_starts if entry is not None else frozenset()
            self._old_specs[cache_key] = self.engine.load_spec(
                ProcessEntry(row.process_key, row.process_id, row.process_group, "", row.spec_version, None, {},
                             current, per_key), spec_json)
        return self._old_specs[cache_key]


def _run_info(row: InstanceRecord) -> RunInfo:
    """What host functions called by the instance's scripts learn about the run (and who caused it)."""
    return RunInfo(row.id, row.process_id, row.process_group, row.process_key, current_caller.get())
