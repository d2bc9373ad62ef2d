"""Receivers as the message list shows them: a wait is a ``receive`` row, ``ready`` while it waits.

While a catch waits, its row is read from the subscription index (``store/listing.py``). When the wait ends, the
row it becomes is stored: ``completed`` (or ``failed``) by the delivery that ended it (``Core._received``), or,
for a wait that ended otherwise (a boundary timer fired, the gateway took another branch, the task it was attached
to completed, the instance finished or failed), ``cancelled`` here. Each wait ends as exactly one row, and that
row keeps the id the wait was listed with (its first subscription row's id: messages and waits share one id space).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from .store import InstanceRecord, Tx, WaitRow


def sync_waits(tx: Tx, row: InstanceRecord, waits: Sequence[WaitRow],
               delivered: Collection[tuple[str, str]], indexed: bool = True) -> list[WaitRow]:
    """Index ``waits`` as the instance's waits and store a ``cancelled`` receive row for each wait that ended
    without a delivery (``delivered``: the (task id, message name) waits a message reached in this change; their
    receive row is the delivery's). Returns the waits that are new. ``indexed=False``: a new instance, nothing
    of it is indexed yet."""
    added, ended = tx.sync_subscriptions(row.id, row.process_group, waits, indexed)
    for wait in ended:
        if (wait.task_id, wait.message_name) not in delivered:
            tx.add_message(wait.wait_id, name=wait.message_name, scope="", message_type="receive",
                           status="cancelled", payload=None, correlation_keys=wait.correlation_keys,
                           process_instance_id=row.id)
    return added
