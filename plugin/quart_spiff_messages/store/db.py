"""Database URLs, the PostgreSQL engine and schema upgrades (SQLite's engines live in :mod:`.sqlite`).

PostgreSQL runs on SQLAlchemy's asyncio engine with asyncpg; row and advisory locks are taken by the store's
queries, and a lock held longer than the lock timeout ends the wait (SQLSTATE 55P03).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str) -> str:
    """Accept plain ``sqlite:///x.db`` and ``postgresql://`` URLs; PostgreSQL goes through asyncpg."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite")
    elif backend in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


@dataclass(frozen=True)
class Bounds:
    """How long anything on a PostgreSQL connection may take: every wait ends, on both sides of a cut link.

    The rule: no statement of ours legitimately runs longer than a lock wait plus ``STATEMENT_SLACK_SECONDS``, so
    a statement that has not answered by then is given up (the client's ``command_timeout``; the server's
    ``statement_timeout`` is the same bound) and its connection thrown away; the store then retries on fresh
    connections for the retry window. A silent link is found by the kernel too (``tcp_user_timeout`` and keepalives
    on the server's end of each session), so the backend of a host cut off ends and its locks are released; an
    extension session left idle inside a transaction ends after ``idle_in_transaction_seconds``.
    """

    lock_timeout_seconds: float = 5.0
    retry_seconds: float = 5.0

    @property
    def statement_seconds(self) -> float:
        return self.lock_timeout_seconds + STATEMENT_SLACK_SECONDS

    @property
    def connect_seconds(self) -> float:
        """A connect on a silent link is tried about twice (the pool's ping, then the retry) within the window."""
        return max(1.0, min(self.retry_seconds / 2, 2.5))

    @property
    def idle_in_transaction_seconds(self) -> float:
        return max(10.0, 2 * (self.lock_timeout_seconds + self.retry_seconds))

    def server_settings(self) -> dict[str, str]:
        def ms(seconds: float) -> str:
            return str(max(1, int(seconds * 1000)))

        link = max(2.0, self.retry_seconds)  # a dead link is noticed by the server within about this
        return {
            "lock_timeout": ms(self.lock_timeout_seconds),  # a busy instance: SQLSTATE 55P03, answered 503
            "statement_timeout": ms(self.statement_seconds),
            "idle_in_transaction_session_timeout": ms(self.idle_in_transaction_seconds),
            "tcp_user_timeout": ms(link),
            "tcp_keepalives_idle": str(max(1, int(link / 2))),
            "tcp_keepalives_interval": "1",
            "tcp_keepalives_count": str(max(1, int(link / 2))),
        }


STATEMENT_SLACK_SECONDS = 2.0


def create_engine(url: str, *, lock_timeout_seconds: float = 5.0, retry_seconds: float = 5.0,
                  bounded: bool = True, **kwargs: Any) -> AsyncEngine:
    """The asyncio engine for PostgreSQL; ``bounded``: every wait ends (:class:`Bounds`), else only lock waits
    (for schema upgrades, whose statements may take long on big tables)."""
    url = normalize_url(url)
    bounds = Bounds(lock_timeout_seconds, retry_seconds)
    settings = bounds.server_settings()
    connect_args: dict[str, Any] = {"server_settings": settings}
    if bounded:
        connect_args.update(timeout=bounds.connect_seconds, command_timeout=bounds.statement_seconds)
    else:
        settings.update(statement_timeout="0", idle_in_transaction_session_timeout="0")
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, connect_args=connect_args, **kwargs)


def upgrade_connection(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply the Alembic migrations; several workers starting at once take turns (PostgreSQL advisory lock)."""
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(7305526411)"))
        await conn.run_sync(upgrade_connection, revision)

