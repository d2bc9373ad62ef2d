"""Running work in transactions (:class:`Store`) and telling what a failed one ran into (:func:`fault`).

One change = one transaction (:meth:`Store.run`): all of it is committed, or nothing. A conflict is run again, a lost
database is retried for a while, a lock that stays taken is :class:`Busy`, a unique key taken first is
:class:`AlreadyExists`; nothing above the store sees a SQLAlchemy error.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from ..clock import Clock
from ..errors import DatabaseUnavailable, InsufficientStorage
from ..events import Event
from . import db
from . import statements as sql
from .sqlite import SqliteStore, WriterTurnTimeout
from .tx import Tx

T = TypeVar("T")
RETRY_STATES = {"40P01", "40001"}  # deadlock detected, serialization failure: run the transaction again
BUSY_STATES = {"55P03"}  # lock_not_available: lock_timeout ran out
# admin shutdown (a killed backend), crash shutdown, cannot connect now (starting or shutting down), and class 08;
GONE_STATES = {"57P01", "57P02", "57P03", "57014"}  # and query_canceled: the statement bound (db.Bounds) ran out
FULL_STATES = {"53100"}  # disk_full
ATTEMPTS = 4


class Busy(Exception):
    """A lock stayed taken longer than the lock timeout (a busy instance): the caller may retry later."""


class AlreadyExists(Exception):
    """A row with the same unique key (a ``message_instance_uuid``) was written first; nothing of this transaction
    was committed."""


def sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    for candidate in (orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def _sqlite_busy(exc: DBAPIError) -> bool:
    return "database is locked" in str(exc.orig) or "database is busy" in str(exc.orig)


def fault(exc: BaseException) -> str | None:
    """What a failed transaction ran into, as far as retrying goes.

    ``conflict``: a deadlock or serialization failure (run it again now); ``busy``: a lock stayed taken past the
    lock timeout; ``gone``: the database cannot be reached or written (a lost or refused connection, a server
    shutting down, a read-only SQLite file): run it again on a fresh connection for a while; ``full``: the disk is
    full. None: anything else (a bug: it propagates).
    """
    if isinstance(exc, DBAPIError):
        state = sqlstate(exc)
        text = str(exc.orig).lower()
        if state in RETRY_STATES:
            return "conflict"
        if state in BUSY_STATES or _sqlite_busy(exc):
            return "busy"
        if state in FULL_STATES or "database or disk is full" in text:
            return "full"
        if isinstance(exc.orig, (OSError, asyncio.TimeoutError)) \
                or isinstance(getattr(exc.orig, "__cause__", None), (OSError, asyncio.TimeoutError)):
            return "gone"
        if exc.connection_invalidated or state in GONE_STATES or (state or "").startswith("08") \
                or "readonly database" in text or "disk i/o error" in text or "unable to open database" in text:
            return "gone"
        return None
    if isinstance(exc, WriterTurnTimeout):
        return "busy"
    if isinstance(exc, (OSError, asyncio.TimeoutError)):  # refused, reset or silent connections; connect timeouts
        return "gone"
    module = type(exc).__module__
    if module.startswith("asyncpg"):  # raised by asyncpg before SQLAlchemy could wrap it (at connect)
        import asyncpg

        if isinstance(exc, (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError)):
            return "gone"
        if isinstance(exc, asyncpg.PostgresError) and getattr(exc, "sqlstate", None) in GONE_STATES:
            return "gone"
    return None


def _summary(exc: BaseException) -> str:
    """The driver's own words, without SQLAlchemy's statement and link (an answer must not carry them)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


async def _throw_away(conn: AsyncConnection) -> None:
    """Drop a connection that failed or went silent without a word to the server (a rollback on a silent link
    would wait for the statement bound again); the server ends its backend, and its locks, on its own."""
    with contextlib.suppress(Exception):
        await conn.invalidate()


class CommitUnknown(Exception):
    """The connection was lost while the commit was under way: the transaction may or may not have committed."""


@dataclass(frozen=True)
class Committed(Generic[T]):
    """What a committed transaction returns: its result, the messages it threw (to route after the commit) and the
    events it recorded (written to the feed in it, and given to ``Store.on_commit`` after it)."""

    value: T
    outbox: tuple[int, ...]
    events: tuple[Event, ...] = ()
    next_due: float | None = None  # the nearest due time of a timer it wrote (given to ``Store.on_due``)


class Store:
    """Runs work in transactions.

    The work is plain (synchronous) code on a :class:`Tx`. On PostgreSQL it runs on the event loop through the
    asyncio engine (asyncpg; ``AsyncConnection.run_sync``). On SQLite a whole transaction runs in one writer thread of
    its own with the standard ``sqlite3`` driver: a statement there costs microseconds, where a hop to aiosqlite's
    thread costs about 100 µs and SQLAlchemy's asyncio bridge 200 µs more, per statement.
    """

    def __init__(self, url: str, clock: Clock, lock_timeout_seconds: float = 5.0,
                 unavailable_seconds: float = 5.0, database_clock: bool = False) -> None:
        self.url = db.normalize_url(url)
        self.clock = clock
        self.unavailable_seconds = unavailable_seconds  # how long a lost database is retried before a 503
        # called with the events of every committed transaction, after the commit (the extension sends signals)
        self.on_commit: Callable[[Sequence[Event]], Awaitable[None]] | None = None
        # called after a commit that wrote a timer, with its nearest due time (the timer scheduler wakes early)
        self.on_due: Callable[[float], None] | None = None
        self.dialect = make_url(self.url).get_backend_name()
        # PostgreSQL, several hosts: the time of a transaction is the database's (see ``Tx.now``)
        self.database_clock = database_clock and self.dialect == "postgresql"
        self.clock_offset = 0.0  # the database's clock less this host's, as last seen by a transaction
        self._sqlite: SqliteStore | None = None
        if self.dialect == "sqlite":
            self._sqlite = SqliteStore(self.url, lock_timeout_seconds)
        else:
            self.engine: AsyncEngine = db.create_engine(self.url, lock_timeout_seconds=lock_timeout_seconds,
                                                        retry_seconds=unavailable_seconds)
            self._lock_timeout_seconds = lock_timeout_seconds

    def estimated_now(self) -> float:
        """The time a transaction would read now, without asking: for how long to wait locally (when the next
        timer is due), never to decide what is due (a transaction decides that with its own time)."""
        return self.clock() + self.clock_offset

    async def upgrade(self, revision: str = "head") -> None:
        """Apply the Alembic migrations (workers starting together take turns)."""
        if self._sqlite is not None:
            await asyncio.to_thread(self._sqlite.upgrade, revision)
        else:  # on an engine of its own: a migration's statements may take long
            engine = db.create_engine(self.url, lock_timeout_seconds=self._lock_timeout_seconds, bounded=False,
                                      poolclass=NullPool)
            try:
                await db.upgrade(engine, revision)
            finally:
                await engine.dispose()

    async def dispose(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        else:
            await self.engine.dispose()

    async def _once(self, work: Callable[[Tx], T], write: bool) -> Committed[T]:
        hooks: list[Callable[[], None]] = []

        def body(conn: Connection) -> Committed[T]:
            tx = Tx(conn, self)
            value = work(tx)
            if tx.events:
                tx.write_events()
            hooks[:] = tx.after_commit
            return Committed(value, tuple(tx.outbox), tuple(tx.events), tx.next_due)

        if self._sqlite is not None:
            sqlite = self._sqlite
            if write:
                context = contextvars.copy_context()  # the request's (who the caller is, for host functions)
                deadline = time.monotonic() + sqlite.lock_timeout_seconds  # counted from the queueing
                done = await asyncio.wrap_future(sqlite.submit(body, deadline, context))
            else:
                done = await asyncio.to_thread(sqlite.read, body)
        else:
            async with self.engine.connect() as conn:  # begins on first use; closing it rolls back what did not commit
                try:
                    done = await conn.run_sync(body)
                except Exception as exc:
                    if fault(exc) == "gone":
                        await _throw_away(conn)
                    raise
                try:
                    await conn.commit()
                except Exception as exc:
                    if fault(exc) == "gone":
                        await _throw_away(conn)
                        if write:
                            raise CommitUnknown(str(exc)) from exc
                    raise
        for hook in hooks:
            hook()
        return done

    async def run(self, work: Callable[[Tx], T]) -> Committed[T]:
        """Run ``work`` in one writing transaction: all of it is committed, or nothing.

        ``work`` may run more than once (again after a deadlock or serialization failure), each time on a fresh
        :class:`Tx`; what it returns and what it threw come back together. :class:`Busy` when a lock stays taken
        too long, :class:`AlreadyExists` when a unique key was taken first.
        """
        done = await self._attempts(work, write=True)
        if done.next_due is not None and self.on_due is not None:
            self.on_due(done.next_due)
        if done.events and self.on_commit is not None:
            await self.on_commit(done.events)
        return done

    async def _attempts(self, work: Callable[[Tx], T], write: bool) -> Committed[T]:
        """Run ``work`` until it commits: again after a conflict (a few times) or a lost database (for
        ``unavailable_seconds``, with growing pauses); a transaction that failed rolled back, so running it again
        is safe. Never again after a commit whose outcome is unknown."""
        conflicts, pause, deadline = 0, 0.05, None
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()  # a silent link fails only after the statement bound: the window counts from here
            try:
                return await self._once(work, write=write)
            except IntegrityError as exc:
                raise AlreadyExists(str(exc.orig)) from exc
            except CommitUnknown as exc:
                raise DatabaseUnavailable(
                    "The connection to the database was lost while the change was being committed, so whether it "
                    "was written is unknown: send the request again (with the same message_instance_uuid, it is "
                    "answered with the stored outcome).", retry_after=1) from exc
            except Exception as exc:
                kind = fault(exc)
                if kind == "conflict" and conflicts < ATTEMPTS - 1:
                    conflicts += 1
                    await asyncio.sleep(random.uniform(0.002, 0.02) * conflicts)
                    continue
                if kind in ("conflict", "busy"):
                    raise Busy(_summary(exc)) from exc
                if kind == "full":
                    raise InsufficientStorage(
                        "The database's disk is full; nothing was written. Retry once space is freed.") from exc
                if kind != "gone":
                    raise
                now = loop.time()
                deadline = deadline if deadline is not None else started + self.unavailable_seconds
                if now >= deadline:
                    raise DatabaseUnavailable(
                        f"The database could not be reached for {self.unavailable_seconds:g} s "
                        f"({_summary(exc)}); nothing was written, retry shortly.",
                        retry_after=max(1, round(self.unavailable_seconds))) from exc
                await asyncio.sleep(min(pause, max(deadline - now, 0.0)))
                pause = min(pause * 2, 1.0)

    async def write(self, work: Callable[[Tx], T]) -> T:
        """:meth:`run` for work that throws no messages: just its result."""
        return (await self.run(work)).value

    async def read(self, work: Callable[[Tx], T]) -> T:
        """Run ``work`` in a reading transaction (on SQLite it never waits for writers); retried like a write."""
        return (await self._attempts(work, write=False)).value

    async def missing_specs(self, versions: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        def have(tx: Tx) -> set[tuple[str, str]]:
            rows = tx.conn.execute(select(sql.SPECS.c.process_key, sql.SPECS.c.spec_version))
            return {(k, v) for k, v in rows}

        return set(versions) - await self.read(have)

    async def save_specs(self, specs: Iterable[tuple[str, str, str]]) -> None:
        """Store spec versions once; workers starting together may race, the first insert wins."""
        rows = [{"process_key": k, "spec_version": v, "spec": s, "created_at": self.clock()} for k, v, s in specs]
        if not rows:
            return
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        await self.write(lambda tx: tx.conn.execute(insert(sql.SPECS).on_conflict_do_nothing(), rows))
