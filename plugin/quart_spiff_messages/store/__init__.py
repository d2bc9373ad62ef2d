"""The store: every SQL statement lives here. One change = one transaction (:meth:`Store.run`).

It hands back frozen records (:mod:`.records`) and raises its own exceptions (:class:`Busy`, :class:`AlreadyExists`);
nothing above it sees a SQLAlchemy object or error. Rows are written only through the statements of
:mod:`.statements`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import and_, case, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from ..clock import Clock
from ..correlation import KeyValue
from ..errors import DatabaseUnavailable, InsufficientStorage
from ..events import Event
from ..names import ancestor_groups, group_path
from . import db
from . import statements as sql
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

__all__ = ["MESSAGE_STATUSES", "AlreadyExists", "Busy", "Committed", "EndedWait", "InstanceRecord",
           "MessageFilter", "MessageRecord", "Page", "ServiceCallRecord", "ServiceCallRow", "Store", "TimerRow",
           "TimerStartRecord", "Tx", "WaitRow", "WaitingTask", "correlation_lock"]

T = TypeVar("T")
RETRY_STATES = {"40P01", "40001"}  # deadlock detected, serialization failure: run the transaction again
BUSY_STATES = {"55P03"}  # lock_not_available: lock_timeout ran out
# admin shutdown (a killed backend), crash shutdown, cannot connect now (starting or shutting down), and class 08;
GONE_STATES = {"57P01", "57P02", "57P03", "57014"}  # and query_canceled: the statement bound (db.Bounds) ran out
FULL_STATES = {"53100"}  # disk_full
ATTEMPTS = 4
FINISHED = ("completed", "cancelled", "not_accepted", "failed")

M, P, S, K = sql.MESSAGES, sql.INSTANCES, sql.SUBSCRIPTIONS, sql.MESSAGE_KEYS  # messages, process instances, ...
TM, TS, SC = sql.TIMERS, sql.TIMER_STARTS, sql.SERVICE_CALLS


class Busy(Exception):
    """A lock stayed taken longer than the lock timeout (a busy instance): the caller may retry later."""


class AlreadyExists(Exception):
    """A row with the same unique key (a ``message_instance_uuid``) was written first; nothing of this transaction
    was committed."""


def correlation_lock(message_name: str, key: str = "*", digest: str = "") -> str:
    """The advisory lock a message and a wait for it both take (see :meth:`Tx.lock_keys`); ``*`` = any key."""
    return f"{message_name}\x1f{key}\x1f{digest}"


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


async def _throw_away(session: AsyncSession) -> None:
    """Drop a connection that failed or went silent without a word to the server (a rollback on a silent link
    would wait for the statement bound again); the server ends its backend, and its locks, on its own."""
    with contextlib.suppress(Exception):
        await session.invalidate()  # the connections it holds, if any: it opens none


class CommitUnknown(Exception):
    """The connection was lost while the commit was under way: the transaction may or may not have committed."""


@dataclass(frozen=True)
class MessageFilter:
    name: str | None = None
    statuses: Sequence[str] | None = None
    message_types: Sequence[str] | None = None
    process_instance_id: int | None = None
    created_after: float | None = None
    created_before: float | None = None
    process_model_identifier: str | None = None  # rows of instances of this process (key ``group/process_id``)


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
    asyncio engine (asyncpg; ``AsyncSession.run_sync``). On SQLite a whole transaction runs in one writer thread of
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
        self._pg: async_sessionmaker[AsyncSession] | None = None
        self._sqlite: SqliteStore | None = None
        if self.dialect == "sqlite":
            self._sqlite = SqliteStore(self.url, lock_timeout_seconds)
        else:
            self.engine: AsyncEngine = db.create_engine(self.url, lock_timeout_seconds=lock_timeout_seconds,
                                                        retry_seconds=unavailable_seconds)
            self._lock_timeout_seconds = lock_timeout_seconds
            self._pg = async_sessionmaker(self.engine, expire_on_commit=False)

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

        def body(session: Session) -> Committed[T]:
            tx = Tx(session, self)
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
            assert self._pg is not None
            async with self._pg() as session:  # begins on first use; closing it rolls back what did not commit
                try:
                    done = await session.run_sync(body)
                except Exception as exc:
                    if fault(exc) == "gone":
                        await _throw_away(session)
                    raise
                try:
                    await session.commit()
                except Exception as exc:
                    if fault(exc) == "gone":
                        await _throw_away(session)
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


class Tx:
    """Queries inside one transaction. ``outbox`` collects the ids of messages thrown in it."""

    def __init__(self, session: Session, store: Store) -> None:
        self.session = session
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

    @property
    def conn(self) -> Connection:
        """The transaction's connection, for the statements of :mod:`.statements`."""
        return self.session.connection()

    # -- locks ----------------------------------------------------------------------------------------------------
    def lock_keys(self, exclusive: Iterable[str], shared: Iterable[str] = ()) -> None:
        """Transaction-scoped advisory locks (PostgreSQL; SQLite's single writer already serializes).

        A message and a receiver that come at the same moment lock the same correlation key, so one of them
        always sees the other: the message finds the new wait, or the wait finds the buffered message.
        """
        if self.store.dialect != "postgresql":
            return
        wanted = sorted({(k, True) for k in exclusive} | {(k, False) for k in shared} - {(k, False) for k in exclusive})
        for key, excl in wanted:
            fn = "pg_advisory_xact_lock" if excl else "pg_advisory_xact_lock_shared"
            self._saw_time(self.conn.execute(text(f"SELECT {fn}(hashtextextended(:k, 0)), {sql.DATABASE_NOW_SQL}"),
                                             {"k": key}).one()[1])

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A unit of work inside the transaction that is rolled back alone when it raises (its outbox entries,
        events and due times with it); the transaction goes on."""
        marks = len(self.outbox), len(self.events), self.next_due, len(self.after_commit)
        try:
            with self.session.begin_nested():
                yield
        except BaseException:
            del self.outbox[marks[0]:], self.events[marks[1]:], self.after_commit[marks[3]:]
            self.next_due = marks[2]
            raise

    # -- specs --------------------------------------------------------------------------------------------------
    def spec(self, process_key: str, version: str) -> str | None:
        found = self.conn.execute(sql.SELECT_SPEC, {"key": process_key, "version": version}).scalar_one_or_none()
        return str(found) if found is not None else None

    # -- process instances --------------------------------------------------------------------------------------
    def add_instance(self, *, process_key: str, process_id: str, group: str, spec_version: str) -> InstanceRecord:
        """A new instance row, written now; :meth:`save_instance` writes its state."""
        values: dict[str, Any] = {
            "process_key": process_key, "process_id": process_id, "process_group": group,
            "spec_version": spec_version, "status": "waiting", "state": "{}", "correlations": {}, "error": None,
            "created_at": self.now, "updated_at": self.now}
        new_id = self.conn.execute(sql.INSERT_INSTANCE, values).scalar_one()
        return InstanceRecord(id=int(new_id), **values)

    def lock_instance(self, instance_id: int) -> InstanceRecord | None:
        """The instance row, locked until commit (PostgreSQL; SQLite's writer lock already covers it)."""
        if self.store.dialect != "postgresql":
            found = self.conn.execute(sql.SELECT_INSTANCE, {"id": instance_id}).mappings().first()
            return record(InstanceRecord, found) if found is not None else None
        row = self.conn.execute(sql.LOCK_INSTANCE_AT, {"id": instance_id}).mappings().first()
        if row is None:
            return None
        values = dict(row)
        self._saw_time(values.pop("db_now"))
        return record(InstanceRecord, values)

    def instance(self, instance_id: int) -> InstanceRecord | None:
        found = self.conn.execute(sql.SELECT_INSTANCE, {"id": instance_id}).mappings().first()
        return record(InstanceRecord, found) if found is not None else None

    def save_instance(self, row: InstanceRecord, *, state: str, status: str, correlations: dict[str, Any],
                      error: dict[str, Any] | None) -> InstanceRecord:
        """Write the instance's new state; returns the record as written."""
        self.conn.execute(sql.SAVE_INSTANCE, {"_id": row.id, "state": state, "status": status,
                                              "correlations": correlations, "error": error,
                                              "updated_at": self.now})
        return dataclasses.replace(row, state=state, status=status, correlations=correlations, error=error,
                                   updated_at=self.now)

    def set_spec_version(self, row: InstanceRecord, spec_version: str) -> InstanceRecord:
        """Move an instance to another version of its spec (a retry on a fixed spec)."""
        self.conn.execute(update(P).where(P.c.id == row.id).values(spec_version=spec_version))
        return dataclasses.replace(row, spec_version=spec_version)

    def list_instances(self, *, status: str | None, process_key: str | None, page: int,
                       per_page: int) -> Page[InstanceRecord]:
        cond = []
        if status:
            cond.append(P.c.status == status)
        if process_key:
            cond.append(P.c.process_key == process_key)
        return self._page(InstanceRecord, P, cond, [P.c.id.desc()], page, per_page)

    def waiting_instances_without_waits(self) -> list[InstanceRecord]:
        """Instances in ``waiting`` that the index has no wait for (the invariants check reads their state)."""
        indexed = select(S.c.id).where(S.c.process_instance_id == P.c.id).exists()
        timed = select(TM.c.id).where(TM.c.process_instance_id == P.c.id).exists()
        rows = self.conn.execute(select(P).where(P.c.status == "waiting", ~indexed, ~timed)
                                 .order_by(P.c.id)).mappings()
        return [record(InstanceRecord, r) for r in rows]

    # -- subscriptions ------------------------------------------------------------------------------------------
    def sync_subscriptions(self, instance_id: int, group: str,
                           waits: Sequence[WaitRow]) -> tuple[list[WaitRow], list[EndedWait]]:
        """Make the index say exactly ``waits``; unchanged waits keep their row (their place in line).

        Two statements, no read: delete what is no longer wanted, insert the rest skipping rows that exist
        (unique index), and learn from ``RETURNING`` which waits are new and which ended (a wait of a task and
        message no longer in ``waits``, with the keys it expected).
        """
        wanted = {(w.task_id, w.message_name, w.key.key if w.key else "", w.key.digest if w.key else ""): w
                  for w in waits}
        if wanted:
            deleted = self.conn.execute(sql.DELETE_OTHER_WAITS, {"instance_id": instance_id, "keep": list(wanted)})
        else:
            deleted = self.conn.execute(sql.DELETE_WAITS, {"instance_id": instance_id})
        still = {(w.task_id, w.message_name) for w in waits}
        ended: dict[tuple[str, str], dict[str, Any]] = {}
        first: dict[tuple[str, str], int] = {}
        for task_id, name, key, values, row_id in deleted:
            if (task_id, name) not in still:
                wait = (str(task_id), str(name))
                keys = ended.setdefault(wait, {})
                first[wait] = min(first.get(wait, row_id), row_id)
                if key:
                    keys[str(key)] = json.loads(values)
        gone = [EndedWait(t, n, keys, first[(t, n)]) for (t, n), keys in ended.items()]
        if not wanted:
            return [], gone
        rows = [{"process_instance_id": instance_id, "message_name": w.message_name, "group_path": group_path(group),
                 "key_name": k[2], "values_digest": k[3], "values_json": w.key.canonical if w.key else "",
                 "task_id": w.task_id, "element_id": w.element_id, "created_at": self.now}
                for k, w in wanted.items()]
        ids = self.fresh_ids(len(rows))
        if ids is not None:
            rows = [{**r, "id": i} for r, i in zip(rows, ids, strict=True)]
        added = self.conn.execute(sql.insert_waits(self.store.dialect), rows).all()
        return [wanted[(t, m, k, d)] for t, m, k, d in added], gone

    # -- timers -------------------------------------------------------------------------------------------------

    def sync_timers(self, instance_id: int, timers: Sequence[TimerRow]) -> None:
        """Make the timer index say exactly ``timers`` for the instance (a cycle's row moves to its next due)."""
        if not timers:
            self.conn.execute(sql.DELETE_TIMERS, {"instance_id": instance_id})
            return
        self.conn.execute(sql.DELETE_OTHER_TIMERS,
                          {"instance_id": instance_id, "keep": [(t.task_id, t.element_id) for t in timers]})
        self.conn.execute(sql.upsert_timers(self.store.dialect), [
            {"process_instance_id": instance_id, "task_id": t.task_id, "element_id": t.element_id,
             "timer_type": t.timer_type, "due_at": t.due_at, "created_at": self.now} for t in timers])
        self.due_at(min(t.due_at for t in timers))

    def due_at(self, when: float) -> None:
        """Note a due time written in this transaction (the scheduler is told the nearest after the commit)."""
        self.next_due = when if self.next_due is None else min(self.next_due, when)

    def claim_due_timer(self) -> int | None:
        """The instance of the timer due longest ago, locked; instances another transaction holds are skipped
        (PostgreSQL; SQLite's one writer serializes the claims)."""
        stmt = sql.CLAIM_DUE_TIMER if self.store.dialect == "postgresql" else sql.NEXT_DUE_TIMER
        found = self.conn.execute(stmt, {"now": self.now}).scalar_one_or_none()
        return int(found) if found is not None else None

    def postpone_timers(self, instance_id: int, when: float) -> None:
        """Move the instance's timers that are due now to ``when``."""
        self.conn.execute(update(TM).where(TM.c.process_instance_id == instance_id, TM.c.due_at <= self.now)
                          .values(due_at=when))

    def drop_timers(self, instance_id: int) -> None:
        self.conn.execute(sql.DELETE_TIMERS, {"instance_id": instance_id})

    def instance_timers(self, instance_id: int) -> list[TimerRow]:
        rows = self.conn.execute(select(TM).where(TM.c.process_instance_id == instance_id)
                                 .order_by(TM.c.due_at, TM.c.id)).mappings()
        return [record(TimerRow, r) for r in rows]

    def next_timer_due(self) -> float | None:
        """The nearest due time of any timer or timer start event (None: nothing is scheduled)."""
        timer = self.conn.execute(select(func.min(TM.c.due_at))).scalar_one_or_none()
        start = self.conn.execute(select(func.min(TS.c.next_due))).scalar_one_or_none()
        due = [float(d) for d in (timer, start) if d is not None]
        return min(due) if due else None

    def timers_pending(self) -> int:
        return int(self.conn.execute(select(func.count()).select_from(TM)).scalar_one())

    def timer_starts(self) -> list[TimerStartRecord]:
        rows = self.conn.execute(select(TS).order_by(TS.c.process_key, TS.c.element_id)).mappings()
        return [record(TimerStartRecord, r) for r in rows]

    def put_timer_start(self, rec: TimerStartRecord) -> None:
        """Write a schedule; one that exists is replaced (its expression changed)."""
        self.conn.execute(delete(TS).where(TS.c.process_key == rec.process_key, TS.c.element_id == rec.element_id))
        self.conn.execute(sql.TIMER_STARTS.insert(), dataclasses.asdict(rec))
        if rec.next_due is not None:
            self.due_at(rec.next_due)

    def drop_timer_start(self, process_key: str, element_id: str) -> None:
        self.conn.execute(delete(TS).where(TS.c.process_key == process_key, TS.c.element_id == element_id))

    def claim_due_timer_start(self) -> TimerStartRecord | None:
        """The schedule due longest ago, locked (others skip it on PostgreSQL)."""
        stmt = sql.NEXT_DUE_TIMER_START
        if self.store.dialect == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        found = self.conn.execute(stmt, {"now": self.now}).mappings().first()
        return record(TimerStartRecord, found) if found is not None else None

    def save_timer_start(self, rec: TimerStartRecord) -> None:
        self.conn.execute(update(TS).where(TS.c.process_key == rec.process_key, TS.c.element_id == rec.element_id)
                          .values(next_due=rec.next_due, cycles_left=rec.cycles_left, started=rec.started,
                                  updated_at=self.now))
        if rec.next_due is not None:
            self.due_at(rec.next_due)

    # -- service calls ------------------------------------------------------------------------------------------
    def sync_service_calls(self, instance_id: int, calls: Sequence[ServiceCallRow]) -> None:
        """Make the service calls of the instance exactly ``calls`` (those already there keep their attempts and
        lease); a new one is due now."""
        keep = [c.task_id for c in calls]
        stmt = delete(SC).where(SC.c.process_instance_id == instance_id)
        self.conn.execute(stmt.where(SC.c.task_id.not_in(keep)) if keep else stmt)
        if not calls:
            return
        added = self.conn.execute(sql.insert_service_calls(self.store.dialect), [
            {"process_instance_id": instance_id, "task_id": c.task_id, "element_id": c.element_id,
             "operator": c.operator, "params": c.params, "attempt": 1, "next_attempt_at": self.now,
             "lease_until": None, "created_at": self.now} for c in calls]).all()
        if added:
            self.due_at(self.now)

    def claim_service_calls(self, operators: Sequence[str] | None, lease_seconds: float,
                            limit: int = 100) -> list[ServiceCallRecord]:
        """Due service calls nobody holds (``operators``: only these; None: any), oldest due first, leased to this
        transaction's caller until ``now + lease_seconds`` (PostgreSQL skips rows another claim holds)."""
        cond = [SC.c.next_attempt_at <= self.now, or_(SC.c.lease_until.is_(None), SC.c.lease_until <= self.now)]
        if operators is not None:
            if not operators:
                return []
            cond.append(SC.c.operator.in_(list(operators)))
        stmt = select(SC).where(*cond).order_by(SC.c.next_attempt_at, SC.c.id).limit(limit)
        if self.store.dialect == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        found = [record(ServiceCallRecord, r) for r in self.conn.execute(stmt).mappings()]
        if found:
            until = self.now + lease_seconds
            self.conn.execute(update(SC).where(SC.c.id.in_([c.id for c in found])).values(lease_until=until))
            found = [dataclasses.replace(c, lease_until=until) for c in found]
        return found

    def renew_service_calls(self, ids: Sequence[int], until: float) -> None:
        """Extend the leases of calls whose handlers still run."""
        if ids:
            self.conn.execute(update(SC).where(SC.c.id.in_(list(ids)), SC.c.lease_until.is_not(None))
                              .values(lease_until=until))

    def reschedule_service_call(self, instance_id: int, task_id: str, attempt: int, when: float,
                                lease_until: float | None) -> None:
        """After a failed attempt: the next one is number ``attempt``, due at ``when``."""
        self.conn.execute(update(SC).where(SC.c.process_instance_id == instance_id, SC.c.task_id == task_id)
                          .values(attempt=attempt, next_attempt_at=when, lease_until=lease_until))
        self.due_at(when)

    def next_service_call_due(self, operators: Sequence[str] | None) -> float | None:
        """When the next service call (of ``operators``) can be claimed: its due time, or its lease's end."""
        free_at = case((SC.c.lease_until > SC.c.next_attempt_at, SC.c.lease_until), else_=SC.c.next_attempt_at)
        stmt = select(func.min(free_at))
        if operators is not None:
            if not operators:
                return None
            stmt = stmt.where(SC.c.operator.in_(list(operators)))
        found = self.conn.execute(stmt).scalar_one_or_none()
        return float(found) if found is not None else None

    def find_waiting_tasks(self, message_name: str, scope: str, keys: Sequence[tuple[str, str]],
                           limit: int = 8) -> list[WaitingTask]:
        """Tasks waiting for a message: exact key matches first, then accept-any waits, oldest first.

        One index seek per key (a branch of a UNION ALL, each already in id order), so the cost does not grow with
        the number of instances waiting for the same message name.
        """
        params: dict[str, Any] = {"name": message_name, "limit": limit}
        for i, (key, dig) in enumerate([*keys, ("", "")]):
            params[f"k{i}"], params[f"d{i}"] = key, dig
        if scope:
            params["group"] = group_path(scope)
        stmt = sql.subscription_lookup(len(keys), bool(scope))
        found = dict.fromkeys(WaitingTask(int(i), str(t)) for i, t in self.conn.execute(stmt, params))
        return list(found)

    # -- message instances --------------------------------------------------------------------------------------
    def draft_message(self, **fields: Any) -> MessageRecord:
        """A message not written yet: the router fills in its outcome, then :meth:`save_message` writes it once."""
        values: dict[str, Any] = {c: None for c in sql.MESSAGE_COLUMNS}
        values.update(fields)  # created_at and updated_at: when it is written (the time may not be read yet)
        return MessageRecord(id=None, **values)

    def save_message(self, row: MessageRecord, with_id: int | None = None) -> MessageRecord:
        """Write a drafted message now (its id is needed); a written one is returned unchanged. ``with_id``: the
        id of the wait the row ends (a receive row keeps the id its wait was listed with)."""
        if row.id is not None:
            return row
        row = dataclasses.replace(row, created_at=row.created_at or self.now, updated_at=row.updated_at or self.now)
        values = {c: getattr(row, c) for c in sql.MESSAGE_COLUMNS}
        if with_id is None:
            fresh = self.fresh_ids(1)
            with_id = fresh[0] if fresh is not None else None
        if with_id is not None:
            values["id"] = with_id
        return dataclasses.replace(row, id=int(self.conn.execute(sql.INSERT_MESSAGE, values).scalar_one()))

    def add_message(self, with_id: int | None = None, **fields: Any) -> MessageRecord:
        """Draft and write a message at once."""
        return self.save_message(self.draft_message(**fields), with_id)

    def wait_id(self, instance_id: int, task_id: str, message_name: str) -> int | None:
        """The id a wait is listed with (its first index row's), while it is indexed."""
        found = self.conn.execute(sql.WAIT_ID, {"instance_id": instance_id, "task_id": task_id,
                                                "name": message_name}).scalar_one_or_none()
        return int(found) if found is not None else None

    def fresh_ids(self, count: int) -> list[int] | None:
        """``count`` new ids of the space messages and waits share (:mod:`.ids`), on SQLite; None on PostgreSQL,
        where both tables draw them from one sequence by default."""
        if self.store.dialect == "postgresql":
            return None
        if self._next_id is None:  # SQLite's single writer holds the database for the whole transaction
            self._next_id = int(self.conn.execute(sql.LAST_ID).scalar_one()) + 1
        start, self._next_id = self._next_id, self._next_id + count
        return list(range(start, start + count))

    def update_message(self, row: MessageRecord, **changes: Any) -> MessageRecord:
        """Change a message: written at once if the row exists, kept in the draft otherwise."""
        if row.id is not None:
            changes["updated_at"] = self.now
            self.conn.execute(sql.update_message(tuple(sorted(changes))), {**changes, "_id": row.id})
        return dataclasses.replace(row, **changes)

    def message(self, message_id: int) -> MessageRecord | None:
        found = self.conn.execute(sql.SELECT_MESSAGE, {"id": message_id}).mappings().first()
        return record(MessageRecord, found) if found is not None else None

    # -- the queue of messages accepted asynchronously ------------------------------------------------------------
    def enqueue(self, message_id: int, order_key: str | None) -> None:
        """Queue a written message for the work loop (``order_key``: its arrival order is kept per key)."""
        self.conn.execute(sql.INSERT_QUEUED, {"message_instance_id": message_id, "order_key": order_key,
                                              "created_at": self.now})

    def claim_queued(self, limit: int) -> list[int]:
        """Up to ``limit`` queued messages to route now, oldest first: the oldest of each order key only, none
        another transaction is routing (PostgreSQL, locked until commit; SQLite's one writer serializes)."""
        stmt = sql.CLAIM_QUEUE_HEADS if self.store.dialect == "postgresql" else sql.QUEUE_HEADS
        return [int(i) for i in self.conn.execute(stmt, {"limit": limit}).scalars()]

    def dequeue(self, message_id: int) -> None:
        self.conn.execute(sql.DELETE_QUEUED, {"id": message_id})

    def queued_count(self, limit: int | None = None) -> int:
        """How many messages are queued (counted up to ``limit``)."""
        rows = select(sql.QUEUE.c.id).limit(limit).subquery() if limit is not None else sql.QUEUE
        return int(self.conn.execute(select(func.count()).select_from(rows)).scalar_one())

    def message_by_uuid(self, key: str) -> MessageRecord | None:
        found = self.conn.execute(select(M).where(M.c.message_instance_uuid == key)).mappings().first()
        return record(MessageRecord, found) if found is not None else None

    def unrouted_thrown_messages(self, limit: int = 10_000) -> list[int]:
        """Messages processes threw that were never routed (no correlation keys indexed yet)."""
        indexed = select(K.c.id).where(K.c.message_instance_id == M.c.id).exists()
        stmt = (select(M.c.id)
                .where(M.c.status == "ready", M.c.message_type == "send", M.c.process_instance_id.is_not(None),
                       ~indexed)
                .order_by(M.c.id).limit(limit))
        return [int(i) for i in self.conn.execute(stmt).scalars()]

    def ready_messages_named(self, names: Sequence[str], limit: int = 10_000) -> list[tuple[int, str, str]]:
        """(id, name, scope) of live ready messages with one of ``names``, oldest first."""
        stmt = (select(M.c.id, M.c.name, M.c.scope)
                .where(M.c.status == "ready", M.c.name.in_(list(names)),
                       or_(M.c.expires_at.is_(None), M.c.expires_at > self.now))
                .order_by(M.c.id).limit(limit))
        return [(int(i), str(n), str(g)) for i, n, g in self.conn.execute(stmt)]

    def expire_ready_messages(self, batch: int) -> list[int]:
        """Mark up to ``batch`` expired ready messages ``cancelled`` (``failure_cause`` "expired"); their ids."""
        due = (select(M.c.id).where(M.c.status == "ready", M.c.expires_at <= self.now)
               .order_by(M.c.expires_at).limit(batch))
        if self.store.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        ids = [int(i) for i in self.conn.execute(due).scalars()]
        if not ids:
            return []
        self.conn.execute(update(M).where(M.c.id.in_(ids), M.c.status == "ready")
                          .values(status="cancelled", failure_cause="expired", updated_at=self.now))
        self.conn.execute(delete(K).where(K.c.message_instance_id.in_(ids)))
        return ids

    def purge_finished_messages(self, before: float, batch: int) -> int:
        """Delete up to ``batch`` finished messages last changed before ``before``."""
        old = (select(M.c.id).where(M.c.status.in_(FINISHED), M.c.updated_at < before)
               .order_by(M.c.updated_at).limit(batch))
        if self.store.dialect == "postgresql":
            old = old.with_for_update(skip_locked=True)
        ids = list(self.conn.execute(old).scalars())
        if ids:
            self.conn.execute(delete(K).where(K.c.message_instance_id.in_(ids)))
            self.conn.execute(delete(M).where(M.c.id.in_(ids)))
        return len(ids)

    def claim_message(self, message_id: int) -> MessageRecord | None:
        """Take a ``ready`` message for routing (compare-and-set), or None if someone else has it."""
        found = self.conn.execute(sql.CLAIM_MESSAGE, {"_id": message_id, "now": self.now}).mappings().first()
        return record(MessageRecord, found) if found is not None else None

    def drop_message_keys(self, message_id: int) -> None:
        self.conn.execute(sql.DELETE_MESSAGE_KEYS, {"id": message_id})

    def index_ready_message(self, row: MessageRecord, keys: Iterable[KeyValue]) -> None:
        """Record the keys of a message left ``ready`` so a receiver that comes to wait later finds it."""
        rows = [{"message_instance_id": row.id, "message_name": row.name, "key_name": key, "values_digest": digest}
                for key, digest in sorted({(kv.key, kv.digest) for kv in keys})]
        if rows:
            self.conn.execute(sql.INSERT_MESSAGE_KEY, rows)

    def ready_messages_for(self, group: str, waits: Sequence[WaitRow], limit: int = 8) -> list[MessageRecord]:
        """Ready messages an instance in ``group`` that now waits for ``waits`` could take; exact first, FIFO."""
        live = and_(M.c.status == "ready", M.c.scope.in_(ancestor_groups(group)),
                    or_(M.c.expires_at.is_(None), M.c.expires_at > self.now))
        exact = sorted({(w.message_name, w.key.key, w.key.digest) for w in waits if w.key is not None})
        keyed: list[MessageRecord] = []
        for name, key, dig in exact:  # one index seek per key
            stmt = (select(M).join(K, K.c.message_instance_id == M.c.id)
                    .where(K.c.message_name == name, K.c.key_name == key, K.c.values_digest == dig, live)
                    .order_by(K.c.id).limit(limit))
            keyed += (record(MessageRecord, r) for r in self.conn.execute(stmt).mappings())
        found: dict[int | None, MessageRecord] = {}
        for m in sorted(keyed, key=lambda m: m.id or 0):
            found.setdefault(m.id, m)
        anyname = sorted({w.message_name for w in waits if w.key is None})
        if anyname:
            stmt = select(M).where(M.c.name.in_(anyname), live).order_by(M.c.id).limit(limit)
            for r in self.conn.execute(stmt).mappings():
                found.setdefault(r["id"], record(MessageRecord, r))
        return list(found.values())

    def messages_left_running(self) -> list[MessageRecord]:
        """Messages in ``running`` that no transaction routes and none is queued to route (none may be)."""
        queued = select(sql.QUEUE.c.id).where(sql.QUEUE.c.message_instance_id == M.c.id).exists()
        rows = self.conn.execute(select(M).where(M.c.status == "running", ~queued).order_by(M.c.id)).mappings()
        return [record(MessageRecord, r) for r in rows]

    def deliveries_without_one_receive(self) -> list[tuple[int, int]]:
        """(send id, receive rows) for delivered sends that do not have exactly one receive row."""
        receives = (select(M.c.counterpart_id.label("send_id"), func.count().label("n"))
                    .where(M.c.message_type == "receive").group_by(M.c.counterpart_id).subquery())
        stmt = (select(M.c.id, func.coalesce(receives.c.n, 0))
                .outerjoin(receives, receives.c.send_id == M.c.id)
                .where(M.c.message_type == "send", M.c.status.in_(("completed", "failed")),
                       M.c.counterpart_id.is_not(None), func.coalesce(receives.c.n, 0) != 1))
        return [(int(i), int(n)) for i, n in self.conn.execute(stmt)]

    # -- the event feed -----------------------------------------------------------------------------------------
    def record_event(self, kind: str, instance_id: int | None = None, message_id: int | None = None,
                     **data: Any) -> None:
        """An event of this transaction: written to the feed with it, signalled after its commit."""
        self.events.append(Event(kind, instance_id, message_id, data, created_at=self.now))

    def write_events(self) -> None:
        """Write this transaction's events to the feed (their order: see :meth:`events_after`).

        On PostgreSQL each row carries the id of the transaction writing it, read by the insert itself; no lock is
        taken, so writers of different instances never wait for each other here.
        """
        stmt = sql.INSERT_EVENT_PG if self.store.dialect == "postgresql" else sql.INSERT_EVENT
        self.conn.execute(stmt, [
            {"kind": e.kind, "process_instance_id": e.process_instance_id,
             "message_instance_id": e.message_instance_id, "data": dict(e.data), "created_at": self.now}
            for e in self.events])

    def events_after(self, after: int, limit: int) -> list[Event]:
        """The feed's events after event ``after`` (0: from the start), in feed order: (transaction, id).

        The gap-free rule: on PostgreSQL a reader sees only rows of transactions older than the oldest transaction
        still in flight (``pg_snapshot_xmin`` of its own snapshot). Every such transaction has ended, and every
        transaction that starts later gets a greater id, so no row can later appear before the reader's cursor:
        a row that commits late is seen late, never skipped. Ids within one transaction are in insert order; on
        SQLite (one writer) ``xact`` is 0 and ids are commit order. The cursor stays the numeric id of the last
        event seen: its (transaction, id) is looked up; an id purged meanwhile falls back to ``id > after``.
        """
        E = sql.EVENTS
        cond: list[Any] = []
        if after:
            at = self.conn.execute(select(E.c.xact).where(E.c.id == after)).scalar_one_or_none()
            if at is None:
                cond.append(E.c.id > after)
            else:
                cond.append(or_(E.c.xact > at, and_(E.c.xact == at, E.c.id > after)))
        if self.store.dialect == "postgresql":
            cond.append(E.c.xact < sql.OLDEST_XACT_IN_FLIGHT)
        rows = self.conn.execute(select(E).where(*cond).order_by(E.c.xact, E.c.id).limit(limit)).mappings()
        return [Event(r["kind"], r["process_instance_id"], r["message_instance_id"], r["data"], r["id"],
                      r["created_at"]) for r in rows]

    def instance_events(self, instance_id: int, limit: int) -> list[Event]:
        """An instance's latest ``limit`` events, newest first (the index on instance and id answers it)."""
        rows = self.conn.execute(select(sql.EVENTS).where(sql.EVENTS.c.process_instance_id == instance_id)
                                 .order_by(sql.EVENTS.c.id.desc()).limit(limit)).mappings()
        return [Event(r["kind"], r["process_instance_id"], r["message_instance_id"], r["data"], r["id"],
                      r["created_at"]) for r in rows]

    def purge_events(self, before: float, batch: int) -> int:
        """Delete up to ``batch`` events older than ``before`` (the messages' retention)."""
        old = select(sql.EVENTS.c.id).where(sql.EVENTS.c.created_at < before).order_by(sql.EVENTS.c.id).limit(batch)
        ids = list(self.conn.execute(old).scalars())
        if ids:
            self.conn.execute(delete(sql.EVENTS).where(sql.EVENTS.c.id.in_(ids)))
        return len(ids)

    # -- the catalog generation ---------------------------------------------------------------------------------
    def catalog_generation(self) -> int:
        """How many reloads have been asked for (0 before the first)."""
        found = self.conn.execute(select(sql.GENERATION.c.generation).where(sql.GENERATION.c.id == 1))
        value = found.scalar_one_or_none()
        return int(value) if value is not None else 0

    def bump_catalog_generation(self) -> int:
        """Ask every worker to reload its BPMN folder; returns the new generation."""
        insert = pg_insert if self.store.dialect == "postgresql" else sqlite_insert
        table = sql.GENERATION
        stmt = insert(table).values(id=1, generation=1, requested_at=self.now)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.id],
            set_={"generation": table.c.generation + 1, "requested_at": self.now})
        return int(self.conn.execute(stmt.returning(table.c.generation)).scalar_one())

    # -- reads --------------------------------------------------------------------------------------------------
    def gauges(self) -> tuple[int, int, int]:
        """(buffered messages, waiting catch points, pending timers) for the metrics."""
        buffered = self.conn.execute(select(func.count()).select_from(M).where(M.c.status == "ready")).scalar_one()
        waits = select(S.c.process_instance_id, S.c.task_id).distinct().subquery()
        waiting = self.conn.execute(select(func.count()).select_from(waits)).scalar_one()
        return int(buffered), int(waiting), self.timers_pending()

    def _page(self, cls: type[T], table: Any, cond: list[Any], order: list[Any], page: int,
              per_page: int) -> Page[T]:
        total = self.conn.execute(select(func.count()).select_from(table).where(*cond)).scalar_one()
        rows = self.conn.execute(
            select(table).where(*cond).order_by(*order).offset((page - 1) * per_page).limit(per_page)).mappings()
        return Page([record(cls, r) for r in rows], int(total), page, per_page)
