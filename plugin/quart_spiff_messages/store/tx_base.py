"""The transaction every query runs in: its connection, its one time, its locks and savepoints.

:class:`TxBase` is the base of every mixin of :class:`.Tx`; it also keeps what several tables share: the id space
of messages and waits (:meth:`TxBase.fresh_ids`), the due times a transaction wrote (:meth:`TxBase.due_at`) and
paging.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import TextClause, func, select, text
from sqlalchemy.engine import Connection

from ..events import Event
from . import statements as sql
from .records import Page, record

if TYPE_CHECKING:
    from .transactions import Store

T = TypeVar("T")


def correlation_lock(message_name: str, key: str = "*", digest: str = "") -> str:
    """The advisory lock a message and a wait for it both take (see :meth:`Tx.lock_keys`); ``*`` = any key."""
    return f"{message_name}\x1f{key}\x1f{digest}"


@functools.lru_cache(maxsize=64)
def _lock_statement(exclusive: tuple[bool, ...]) -> TextClause:
    """``SELECT`` taking one transaction-scoped advisory lock per key (``:k0``, ``:k1``, ...: exclusive or shared,
    in this order), and the database's time after them."""
    locks = [f"{'pg_advisory_xact_lock' if excl else 'pg_advisory_xact_lock_shared'}(hashtextextended(:k{i}, 0))"
             for i, excl in enumerate(exclusive)]
    return text(f"SELECT {', '.join(locks)}, {sql.DATABASE_NOW_SQL}")


class TxBase:
    """One transaction: its connection, store and time, and what it collects for after the commit (``outbox``: the
    ids of messages thrown in it; ``events``; ``next_due``; ``after_commit``).

    A Core connection, not an ORM session: every statement is Core (:mod:`.statements`), and a session's unit of
    work and connection lookup cost about 100 µs a transaction and 10 µs a statement for nothing.
    """

    def __init__(self, conn: Connection, store: Store) -> None:
        self.conn = conn  # the transaction's connection, for the statements of :mod:`.statements`
        self.store = store
        self._now: float | None = None if store.database_clock else store.clock()
        self.outbox: list[int] = []
        self.events: list[Event] = []
        self.next_due: float | None = None
        self._next_id: int | None = None  # SQLite: the next id of the space messages and waits share
        self.after_commit: list[Callable[[], None]] = []  # run once it committed (never after a rollback)

    @property
    def now(self) -> float:
        """The time of this transaction, read once: the store's clock, or on PostgreSQL shared by several hosts
        the database's (one clock for every due time, expiry, lease and event time, whatever host's clock is
        wrong). It comes with the first lock statement when one comes first (no round trip of its own on the
        message path), else from a statement of its own."""
        if self._now is None:
            self._saw_time(self.conn.execute(sql.DATABASE_NOW).scalar_one())
        assert self._now is not None
        return self._now

    def _saw_time(self, value: Any) -> None:
        if self._now is None and value is not None:
            self._now = float(value)
            self.store.clock_offset = self._now - self.store.clock()

    def lock_keys(self, exclusive: Iterable[str], shared: Iterable[str] = ()) -> None:
        """Transaction-scoped advisory locks (PostgreSQL; SQLite's single writer already serializes).

        A message and a receiver that come at the same moment lock the same correlation key, so one of them
        always sees the other: the message finds the new wait, or the wait finds the buffered message.
        """
        if self.store.dialect != "postgresql":
            return
        wanted = sorted({(k, True) for k in exclusive} | {(k, False) for k in shared} - {(k, False) for k in exclusive})
        if not wanted:
            return
        # one round trip for all of them, taken left to right in the sorted order (no two transactions deadlock)
        row = self.conn.execute(_lock_statement(tuple(excl for _, excl in wanted)),
                                {f"k{i}": key for i, (key, _) in enumerate(wanted)}).one()
        self._saw_time(row[-1])

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A unit of work inside the transaction that is rolled back alone when it raises (its outbox entries,
        events and due times with it); the transaction goes on."""
        marks = len(self.outbox), len(self.events), self.next_due, len(self.after_commit)
        try:
            with self.conn.begin_nested():
                yield
        except BaseException:
            del self.outbox[marks[0]:], self.events[marks[1]:], self.after_commit[marks[3]:]
            self.next_due = marks[2]
            raise

    def due_at(self, when: float) -> None:
        """Note a due time written in this transaction (the scheduler is told the nearest after the commit)."""
        self.next_due = when if self.next_due is None else min(self.next_due, when)

    def fresh_ids(self, count: int) -> list[int] | None:
        """``count`` new ids of the space messages and waits share (:mod:`.ids`), on SQLite; None on PostgreSQL,
        where both tables draw them from one sequence by default."""
        if self.store.dialect == "postgresql":
            return None
        if self._next_id is None:  # SQLite's single writer holds the database for the whole transaction
            self._next_id = int(self.conn.execute(sql.LAST_ID).scalar_one()) + 1
        start, self._next_id = self._next_id, self._next_id + count
        return list(range(start, start + count))

    def _page(self, cls: type[T], table: Any, cond: list[Any], order: list[Any], page: int,
              per_page: int) -> Page[T]:
        total = self.conn.execute(select(func.count()).select_from(table).where(*cond)).scalar_one()
        rows = self.conn.execute(
            select(table).where(*cond).order_by(*order).offset((page - 1) * per_page).limit(per_page)).mappings()
        return Page([record(cls, r) for r in rows], int(total), page, per_page)
