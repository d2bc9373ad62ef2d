"""Receivers as the message list shows them: a wait is a ``receive`` row, ``ready`` while it waits.

While a catch waits, its row is read from the subscription index (``store/listing.py``). When the wait ends, the
row it becomes is stored: ``completed`` (or ``failed``) by the delivery that ended it (``Core._received``), or,
for a wait that ended otherwise (a boundary timer fired, the gateway took another branch, the task it was attached
to completed, the instance finished or failed), ``cancelled`` here. Each wait ends as exactly one row.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Sequence

from .store import InstanceRecord, Tx, WaitRow
from .store.listing import waits_of

# per transaction: how many of its events this module has already matched with ended waits
_seen: weakref.WeakKeyDictionary[Tx, int] = weakref.WeakKeyDictionary()


def sync_waits(tx: Tx, row: InstanceRecord, waits: Sequence[WaitRow]) -> list[WaitRow]:
    """Index ``waits`` as the instance's waits (``Tx.sync_subscriptions``) and store a ``cancelled`` receive row
    for each wait that ended without a delivery. Returns the waits that are new."""
    before = waits_of(tx, row.id)
    added = tx.sync_subscriptions(row.id, row.process_group, waits)
    still = {(w.task_id, w.message_name) for w in waits}
    ended = [(wait, keys) for wait, keys in before.items() if wait not in still]
    start = _seen.get(tx, 0)
    _seen[tx] = len(tx.events)
    if not ended:
        return added
    # a delivery in this transaction ended one wait of its name: that wait's row is the delivery's receive row
    delivered = Counter(ev.data.get("name") for ev in tx.events[start:]
                        if ev.kind == "message_delivered" and ev.process_instance_id == row.id)
    for (_task, name), keys in ended:
        if delivered[name] > 0:
            delivered[name] -= 1
            continue
        tx.add_message(name=name, scope="", message_type="receive", status="cancelled", payload=None,
                       correlation_keys=keys, process_instance_id=row.id)
    return added
