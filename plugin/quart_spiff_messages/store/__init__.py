"""The store: every SQL statement lives here. One change = one transaction (:meth:`Store.run`).

It hands back frozen records (:mod:`.records`) and raises its own exceptions (:class:`Busy`, :class:`AlreadyExists`);
nothing above it sees a SQLAlchemy object or error. Rows are written only through the statements of
:mod:`.statements`.

:mod:`.transactions` runs work in transactions (:class:`Store`) and classifies what a failed one ran into; the work
gets a :class:`Tx` (:mod:`.tx`), a facade of one mixin per table or concern (``tx_*`` modules). Everything else
imports from here.
"""

from __future__ import annotations

from .listing import MessageFilter
from .models import MESSAGE_STATUSES
from .records import (
    EndedWait,
    InstanceRecord,
    MessageRecord,
    Page,
    ServiceCallRecord,
    ServiceCallRow,
    TimerRow,
    TimerStartRecord,
    WaitingTask,
    WaitRow,
    record,
)
from .sqlite import SqliteStore, WriterTurnTimeout
from .transactions import (
    ATTEMPTS,
    BUSY_STATES,
    FULL_STATES,
    GONE_STATES,
    RETRY_STATES,
    AlreadyExists,
    Busy,
    Committed,
    CommitUnknown,
    Store,
    fault,
    sqlstate,
)
from .tx import Tx
from .tx_base import correlation_lock
from .tx_messages import FINISHED

__all__ = ["ATTEMPTS", "BUSY_STATES", "FINISHED", "FULL_STATES", "GONE_STATES", "MESSAGE_STATUSES", "RETRY_STATES",
           "AlreadyExists", "Busy", "CommitUnknown", "Committed", "EndedWait", "InstanceRecord", "MessageFilter",
           "MessageRecord", "Page", "ServiceCallRecord", "ServiceCallRow", "SqliteStore", "Store", "TimerRow",
           "TimerStartRecord", "Tx", "WaitRow", "WaitingTask", "WriterTurnTimeout", "correlation_lock", "fault",
           "record", "sqlstate"]
