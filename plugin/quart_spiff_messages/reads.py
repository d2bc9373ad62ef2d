"""Reads: instances, messages, metrics, and the invariants every scenario must leave true. Nothing here writes."""

from __future__ import annotations

from . import metrics
from .core import Core, InstanceView
from .engine import ElementState
from .errors import InstanceNotFound, MessageNotFound
from .events import Event
from .store import InstanceRecord, MessageFilter, MessageRecord, Page, Store, Tx, active_keys, reserved
from .store.listing import ListedMessage, instances_of, list_messages, waits_of
from .store.process_stats import instance_stats


class Reads:
    def __init__(self, store: Store, core: Core) -> None:
        self.store = store
        self.core = core

    async def instance_view(self, instance_id: int) -> InstanceView:
        """An instance with its current data and what it waits for (read from its state, not the index)."""

        def view(tx: Tx) -> InstanceView:
            row = tx.instance(instance_id)
            if row is None:
                raise InstanceNotFound(f"no process instance {instance_id}")
            return self.core.view(tx, row)

        return await self.store.read(view)

    async def message(self, ref: str) -> MessageRecord:
        """One message by its id or its ``message_instance_uuid``."""
        number = int(ref) if ref.isascii() and ref.isdigit() and len(ref) < 12 else None

        def read(tx: Tx) -> MessageRecord | None:
            return tx.message(number) if number is not None else tx.message_by_uuid(ref.strip().lower())

        found = await self.store.read(read)
        if found is None:
            raise MessageNotFound(f"no message {ref!r}")
        return found

    async def element_states(self, instance_id: int) -> tuple[InstanceRecord, list[ElementState]]:
        """An instance's row and where it stands, element by element (see :meth:`Core.element_states`)."""

        def read(tx: Tx) -> tuple[InstanceRecord, list[ElementState]]:
            row = tx.instance(instance_id)
            if row is None:
                raise InstanceNotFound(f"no process instance {instance_id}")
            return row, self.core.element_states(tx, row)

        return await self.store.read(read)

    async def list_messages(self, flt: MessageFilter, page: int, per_page: int) -> Page[ListedMessage]:
        """Messages and the receivers waiting now (``receive`` rows, ``ready``), newest first."""
        return await self.store.read(lambda tx: list_messages(tx, flt, page, per_page))

    async def instances_of_messages(self, message_ids: list[int]) -> dict[int, int]:
        """Message id -> the instance it belongs to, for those of ``message_ids`` that belong to one."""
        return await self.store.read(lambda tx: instances_of(tx, message_ids))

    def display_name(self, process_key: str | None, process_id: str | None) -> str | None:
        """A process's name for people: its BPMN ``name``, else its id (None for no process)."""
        if process_key is None:
            return None
        entry = self.core.catalog.process(process_key)
        return entry.display_name if entry is not None else process_id

    async def list_instances(self, *, status: str | None, process_key: str | None, page: int,
                             per_page: int) -> Page[InstanceRecord]:
        return await self.store.read(
            lambda tx: tx.list_instances(status=status, process_key=process_key, page=page, per_page=per_page))

    async def process_stats(self) -> dict[str, tuple[int, float]]:
        """Per process key: how many instances, and when the latest started."""
        return await self.store.read(instance_stats)

    async def events(self, after: int = 0, limit: int = 100) -> list[Event]:
        """The durable feed's events with ids above ``after``, oldest first."""
        return await self.store.read(lambda tx: tx.events_after(after, limit))

    async def waits_of(self, instance_ids: list[int]) -> dict[int, list[str]]:
        """What each instance waits for, in words, read from the wait indexes (see :func:`.listing.waits_of`)."""
        return await self.store.read(lambda tx: waits_of(tx, instance_ids))

    async def instance_events(self, instance_id: int, limit: int = 50) -> list[Event]:
        """An instance's latest events of the durable feed, newest first."""
        return await self.store.read(lambda tx: tx.instance_events(instance_id, limit))

    async def metrics(self) -> bytes:
        """The Prometheus text exposition, gauges counted in the database now."""
        buffered, waiting, timers = await self.store.read(lambda tx: tx.gauges())
        return metrics.exposition(buffered, waiting, timers)

    async def ready(self) -> None:
        """Readiness: the database answers its cheapest read (one row, which also proves the schema is there).

        Raises whatever the store raises; the caller bounds the wait.
        """
        await self.store.read(lambda tx: tx.catalog_generation())

    async def invariant_violations(self) -> list[str]:
        """What breaks the invariants, in words (empty when all hold). They hold after every completed request:

        no instance is ``waiting`` with nothing to wait for (no indexed wait and no indexed timer); no message is left
        ``running``; every delivered message has exactly one ``receive`` row; no completed instance holds a
        correlation key (one instance per correlation key); no instance stays ``not_started`` without a queued message
        to start it.
        """

        def check(tx: Tx) -> list[str]:
            found = []
            for row in tx.waiting_instances_without_waits():
                view = self.core.view(tx, row)
                if not any(s.status == "waiting" for s in view.services):
                    found.append(f"process instance {row.id} ({row.process_key}) is waiting with nothing to wait "
                                 f"for (waits it shows: {view.waiting_for})")
            found += [f"message {m.id} ({m.name}, {m.message_type}) is left running"
                      for m in tx.messages_left_running()]
            found += [f"message {send_id} was delivered but has {n} receive rows"
                      for send_id, n in tx.deliveries_without_one_receive()]
            found += [f"process instance {i} completed but still holds correlation key {k!r}"
                      for i, k in active_keys.held_by_completed(tx)]
            found += [f"process instance {r.id} ({r.process_key}) is not_started and no queued message will start it"
                      for r in reserved.orphans(tx)]
            return found

        return await self.store.read(check)
