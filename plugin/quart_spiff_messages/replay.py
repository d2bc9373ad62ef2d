"""Idempotent replay: a message sent again with its ``message_instance_uuid`` gets the outcome stored for it."""

from __future__ import annotations

from typing import Any

from .core import Applied, Core
from .correlation import canonical
from .errors import MessageInstanceUuidConflict
from .names import ScopedName
from .outcomes import Outcome
from .store import Store, Tx


class Replay:
    def __init__(self, store: Store, core: Core) -> None:
        self.store = store
        self.core = core

    async def outcome(self, key: str, scoped: ScopedName, payload: dict[str, Any]) -> Outcome | None:
        """The stored outcome of the message sent earlier with this key, or None if there is none."""
        return await self.store.read(lambda tx: self.stored_outcome(tx, key, scoped, payload))

    def stored_outcome(self, tx: Tx, key: str, scoped: ScopedName, payload: dict[str, Any]) -> Outcome | None:
        """The outcome stored for ``key``; a conflict when it was another message or payload."""
        msg = tx.message_by_uuid(key)
        if msg is None:
            return None
        if (msg.name, msg.scope) != (scoped.name, scoped.group) or not same_payload(msg.payload, payload):
            raise MessageInstanceUuidConflict(
                "A message with the same message_instance_uuid already exists for a different message or "
                "payload.", message_instance_id=msg.id)
        if msg.status in ("completed", "failed") and msg.counterpart_id is not None:
            receive = tx.message(msg.counterpart_id)
            row = tx.instance(receive.process_instance_id) if receive and receive.process_instance_id \
                else None
            if row is not None:
                view = self.core.view(tx, row)
                failure = row.error if msg.status == "failed" else None
                return Outcome.of("delivered", Applied(row, msg, view.data, failure), replayed=True)
        if msg.status == "running" and msg.process_instance_id is not None:  # accepted, its instance reserved
            booked = tx.instance(msg.process_instance_id)
            if booked is not None:
                return Outcome("reserved", msg, booked, {}, replayed=True)
        if msg.status == "not_accepted":
            return Outcome("not_accepted", msg, reason=msg.failure_cause, replayed=True)
        return Outcome("buffered", msg, replayed=True)


def same_payload(stored: Any, payload: dict[str, Any]) -> bool:
    try:
        return isinstance(stored, dict) and canonical(stored) == canonical(payload)
    except TypeError:
        return False
