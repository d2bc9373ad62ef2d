"""SQLite: whole transactions in one writer thread with the standard ``sqlite3`` driver, taking fair turns.

SQLite lets one writer in at a time. Writing transactions run in a single thread per worker (so they queue in
order inside the worker) with ``BEGIN IMMEDIATE``; WAL lets readers, in other threads, go on meanwhile. Across
the workers of one host, writers take turns on an ``flock`` next to the database: SQLite's own busy handler polls
with growing sleeps, and a worker with a steady queue takes the lock again microseconds after it let go, so under
load the other worker's writer could starve past the lock timeout. A blocked ``flock`` waiter is woken as soon as
the lock is released. SQLite's busy timeout still covers writers outside this package.

The turn is waited for at most the lock timeout: a worker stopped while it holds the turn (a frozen VM, SIGSTOP)
must not hang the others' requests; past it :class:`WriterTurnTimeout` (answered ``503 instance_busy``). An
uncontended turn is taken in the writer thread itself (``LOCK_NB``); a contended one is waited for, blocking and so
still fairly, in a helper thread with its own descriptor of the lock file, which the writer stops waiting for at
the timeout (a turn the helper gets after that is let go at once).

Transactions queued at once are committed together (group commit): while the writer thread runs one, the ones
requested meanwhile wait in :attr:`SqliteStore._pending`; the next turn takes up to :data:`MAX_GROUP` of them into
one transaction, each in a savepoint of its own, so each is still all or nothing (one that raises is rolled back
alone and gets its exception) and none is answered before the commit of all. A lone transaction runs as before,
without a savepoint. Under concurrent clients this saves the turn, ``BEGIN IMMEDIATE`` and the commit of all but one.

Every connection gets WAL and a busy timeout; writing transactions start with ``BEGIN IMMEDIATE`` (with deferred
transactions two writers that both read first fail with "database is locked", and the busy timeout does not help
there); reads use a second engine with deferred transactions so they never queue behind writers.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from .db import upgrade_connection

T = TypeVar("T")
READ_BUSY_TIMEOUT_MS = 30_000


def _engine(url: str, *, immediate: bool, busy_timeout_ms: int) -> Engine:
    sync_url = make_url(url).set(drivername="sqlite")
    engine = create_engine(sync_url, connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class WriterTurnTimeout(Exception):
    """Another worker held the writer turn longer than the lock timeout; nothing was written."""


# The most transactions committed together: bounds how long the first of them waits for the others' work.
MAX_GROUP = 16


class _Job:
    """A writing transaction queued for the writer thread: its work, the caller's context, its answer."""

    __slots__ = ("context", "deadline", "future", "work")

    def __init__(self, work: Callable[[Connection], Any], context: contextvars.Context, deadline: float | None) -> None:
        self.work = work
        self.context = context
        self.deadline = deadline
        self.future: Future[Any] = Future()


class SqliteStore:
    def __init__(self, url: str, lock_timeout_seconds: float) -> None:
        self.lock_timeout_seconds = lock_timeout_seconds
        busy_ms = int(max(lock_timeout_seconds, 1.0) * 1000)
        self.write_engine = _engine(url, immediate=True, busy_timeout_ms=busy_ms)
        self.read_engine = _engine(url, immediate=False, busy_timeout_ms=READ_BUSY_TIMEOUT_MS)
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._pending: deque[_Job] = deque()  # requested, not yet taken by the writer thread
        self._pending_lock = threading.Lock()
        self._draining = False  # the writer thread has a turn of :meth:`_drain` queued or running
        path = make_url(url).database
        self._turn_fd: int | None = None
        self._waiter_fd: int | None = None  # the helper's own open file description: its lock is its own
        self._waiter: ThreadPoolExecutor | None = None
        if path and path != ":memory:":
            self._turn_fd = os.open(f"{path}.writer-turn", os.O_RDWR | os.O_CREAT, 0o644)
            self._waiter_fd = os.open(f"{path}.writer-turn", os.O_RDWR | os.O_CREAT, 0o644)
            self._waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-turn")

    @contextlib.contextmanager
    def _turn(self, bounded: bool = True, deadline: float | None = None) -> Iterator[None]:
        """The writer turn across this host's workers, waited for at most the lock timeout when ``bounded``, and
        no later than ``deadline`` (``time.monotonic()``: the lock timeout from when the request queued for the
        writer thread, so writes queued behind one that waits do not each wait a lock timeout more)."""
        if self._turn_fd is None or self._waiter_fd is None or self._waiter is None:
            yield
            return
        try:
            fcntl.flock(self._turn_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fd = self._turn_fd
        except BlockingIOError:
            if not bounded:
                fcntl.flock(self._turn_fd, fcntl.LOCK_EX)
                fd = self._turn_fd
            else:
                fd = self._wait_for_turn(self._waiter, self._waiter_fd, deadline)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _wait_for_turn(self, waiter: ThreadPoolExecutor, fd: int, deadline: float | None) -> int:
        timeout = self.lock_timeout_seconds
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - time.monotonic()))
        taken: Future[None] = waiter.submit(fcntl.flock, fd, fcntl.LOCK_EX)
        try:
            taken.result(timeout=timeout)
        except FutureTimeout:
            # still queued or blocked: whenever the turn comes, it is let go at once
            def let_go(done: Future[None]) -> None:
                if done.exception() is None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

            taken.add_done_callback(let_go)
            raise WriterTurnTimeout(
                f"another worker held the SQLite writer turn for over {self.lock_timeout_seconds:g} s") from None
        return fd

    def write(self, work: Callable[[Connection], T], deadline: float | None = None) -> T:
        """One writing transaction (call it from :attr:`writer`); ``deadline``: see :meth:`_turn`."""
        with self._turn(deadline=deadline), self.write_engine.connect() as conn, conn.begin():
            return work(conn)

    def submit(self, work: Callable[[Connection], T], deadline: float | None,
               context: contextvars.Context) -> Future[T]:
        """Queue a writing transaction for the writer thread (run in ``context``, the caller's); its answer comes
        once it committed, possibly together with others (see the module's docstring)."""
        job = _Job(work, context, deadline)
        with self._pending_lock:
            self._pending.append(job)
            start, self._draining = not self._draining, True
        if start:
            self.writer.submit(self._drain)
        return job.future

    def _drain(self) -> None:
        """The writer thread's turns: each takes what is queued (up to :data:`MAX_GROUP`) into one transaction."""
        while True:
            with self._pending_lock:
                if not self._pending:
                    self._draining = False
                    return
                group = [self._pending.popleft() for _ in range(min(len(self._pending), MAX_GROUP))]
            self.write_group([job for job in group if job.future.set_running_or_notify_cancel()])

    def write_group(self, jobs: list[_Job]) -> None:
        """Commit ``jobs`` in one transaction, each in a savepoint of its own when there are several; answer
        each once the commit is done (or with what failed: its own exception, or the transaction's)."""
        if not jobs:
            return
        answers: list[tuple[bool, Any]] = []
        deadline = min((job.deadline for job in jobs if job.deadline is not None), default=None)
        try:
            with self._turn(deadline=deadline), self.write_engine.connect() as conn, conn.begin():
                if len(jobs) == 1:
                    answers.append((True, jobs[0].context.run(jobs[0].work, conn)))
                else:
                    for job in jobs:
                        try:
                            with conn.begin_nested():
                                answers.append((True, job.context.run(job.work, conn)))
                        except Exception as exc:  # rolled back alone; the others go on
                            answers.append((False, exc))
        except BaseException as exc:  # the transaction itself failed: nothing of any of them was written
            for job in jobs:
                job.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for job, (ok, value) in zip(jobs, answers, strict=True):
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    def read(self, work: Callable[[Connection], T]) -> T:
        with self.read_engine.connect() as conn, conn.begin():
            return work(conn)

    def upgrade(self, revision: str) -> None:
        with self._turn(bounded=False), self.write_engine.begin() as conn:
            upgrade_connection(conn, revision)

    def close(self) -> None:
        self.writer.shutdown(wait=True)
        if self._waiter is not None:
            self._waiter.shutdown(wait=False, cancel_futures=True)
        self.write_engine.dispose()
        self.read_engine.dispose()
        for fd in (self._turn_fd, self._waiter_fd):
            if fd is not None:
                os.close(fd)
        self._turn_fd = self._waiter_fd = None
