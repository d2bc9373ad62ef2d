"""Events to the host: what changed, as plain JSON, for blinker signals after the commit and the durable feed.

A change records its events in its own transaction (:meth:`~.store.Tx.record_event`); the store writes them to
the feed (``spiff_event``) before the commit and hands them to the signals after it. Signals are at most once and
in-process (a receiver that raises is logged and changes no answer); the feed is at least once: a host keeps the
id of the last event it handled and asks for those after it (``GET /v1.0/events?after=N``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from blinker import Namespace

log = logging.getLogger("quart_spiff_messages")

_signals = Namespace()
instance_started = _signals.signal("spiff-messages.instance-started")
instance_waiting = _signals.signal("spiff-messages.instance-waiting")
instance_completed = _signals.signal("spiff-messages.instance-completed")
instance_errored = _signals.signal("spiff-messages.instance-errored")
message_delivered = _signals.signal("spiff-messages.message-delivered")
message_buffered = _signals.signal("spiff-messages.message-buffered")
message_not_accepted = _signals.signal("spiff-messages.message-not-accepted")
message_expired = _signals.signal("spiff-messages.message-expired")
message_cancelled = _signals.signal("spiff-messages.message-cancelled")
task_ready = _signals.signal("spiff-messages.task-ready")
timer_fired = _signals.signal("spiff-messages.timer-fired")
service_task_waiting = _signals.signal("spiff-messages.service-task-waiting")

SIGNALS = {
    "instance_started": instance_started, "instance_waiting": instance_waiting,
    "instance_completed": instance_completed, "instance_errored": instance_errored,
    "message_delivered": message_delivered, "message_buffered": message_buffered,
    "message_not_accepted": message_not_accepted, "message_expired": message_expired,
    "message_cancelled": message_cancelled, "task_ready": task_ready, "timer_fired": timer_fired,
    "service_task_waiting": service_task_waiting,
}
# What an instance's status after a change tells the host.
INSTANCE_STATUS_EVENTS = {"waiting": "instance_waiting", "user_input_required": "instance_waiting",
                          "complete": "instance_completed", "error": "instance_errored"}


@dataclass(frozen=True)
class Event:
    kind: str  # a key of SIGNALS
    process_instance_id: int | None = None
    message_instance_id: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None  # set when read back from the feed
    created_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "process_instance_id": self.process_instance_id,
                "message_instance_id": self.message_instance_id, "data": dict(self.data),
                "created_at_in_seconds": self.created_at}


async def send(sender: Any, events: Iterable[Event]) -> None:
    """Each event to its signal's receivers (``receiver(sender, event=...)``, plain or async), after the commit.

    A receiver that raises is logged; the others still get the event and the answer is not changed.
    """
    for event in events:
        signal = SIGNALS[event.kind]
        if not signal.receivers:
            continue
        body = event.as_json()
        for receiver in list(signal.receivers_for(sender)):
            try:
                result = receiver(sender, event=body)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("a receiver of %s raised; the event stays delivered to the others", event.kind)
