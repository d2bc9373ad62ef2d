"""Taking turns at SQLite's single write lock, fairly, across the workers of one host.

SQLite lets one writer in at a time and makes the others poll with growing sleeps (up to 100 ms). A worker with a
steady queue of transactions takes the lock again microseconds after it let go, so a writer of another worker can
poll for seconds without landing in a gap: under 16 clients it starved past the lock timeout. Here the transactions
of one worker queue on an asyncio lock, and the workers queue on an advisory file lock (``flock``) next to the
database, on which the kernel wakes a blocked waiter as soon as it is released. SQLite's own busy timeout is still
there for writers outside this package.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor


class WriterTurnTimeout(Exception):
    """Another writer kept the database longer than the lock timeout."""


class WriterTurn:
    def __init__(self, database_path: str | None, timeout: float) -> None:
        self._in_process = asyncio.Lock()
        self._timeout = timeout
        self._fd: int | None = None
        if database_path:
            self._fd = os.open(f"{database_path}.writer-lock", os.O_RDWR | os.O_CREAT, 0o644)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer-turn")
        self._abandoned: asyncio.Future[None] | None = None

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        async with self._in_process:
            if self._fd is None:
                yield
                return
            fd = self._fd
            if self._abandoned is not None:  # a turn we gave up on may still be granted: let it go first
                await self._abandoned
                self._abandoned = None
            loop = asyncio.get_running_loop()
            granted = loop.run_in_executor(self._thread, fcntl.flock, fd, fcntl.LOCK_EX)
            try:
                await asyncio.wait_for(asyncio.shield(granted), self._timeout)
            except (TimeoutError, asyncio.TimeoutError) as exc:
                self._abandoned = asyncio.ensure_future(self._release_when_granted(granted, fd))
                raise WriterTurnTimeout(f"no write turn within {self._timeout:g}s") from exc
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    @staticmethod
    async def _release_when_granted(granted: asyncio.Future[None], fd: int) -> None:
        with contextlib.suppress(OSError):
            await granted
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
