"""The facade :class:`Tx`: the queries of one transaction, one mixin per table or concern.

:mod:`.tx_base` (the session, the transaction's time, advisory locks, savepoints, the shared id space, due times,
paging), :mod:`.tx_instances`, :mod:`.tx_waits`, :mod:`.tx_messages`, :mod:`.tx_queue`, :mod:`.tx_events`,
:mod:`.tx_timers`, :mod:`.tx_services`, :mod:`.tx_catalog`, :mod:`.tx_gauges`. Statements of a single use case that
take a :class:`Tx` live in modules of their own (:mod:`.active_keys`, :mod:`.listing`, :mod:`.process_stats`).
"""

from __future__ import annotations

from .tx_catalog import CatalogGeneration
from .tx_events import Events
from .tx_gauges import Gauges
from .tx_instances import Instances
from .tx_messages import Messages
from .tx_queue import Queue
from .tx_services import ServiceCalls
from .tx_timers import Timers
from .tx_waits import Waits


class Tx(Instances, Waits, Messages, Queue, Events, Gauges, Timers, ServiceCalls, CatalogGeneration):
    """Queries inside one transaction. ``outbox`` collects the ids of messages thrown in it."""
