"""Database engines and schema upgrades.

SQLite: WAL and a busy timeout on every connection, and ``BEGIN IMMEDIATE`` for writing transactions (with
deferred transactions two writers that both read first fail with "database is locked", and the busy timeout does
not help there). Reads use a second engine with deferred transactions so they never queue behind writers.
PostgreSQL: asyncpg; row locks are taken by the store's queries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def async_url(url: str) -> str:
    """Accept plain ``sqlite:///x.db`` / ``postgresql://`` URLs and pick the asyncio drivers."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.drivername != "sqlite+aiosqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend in ("postgresql", "postgres") and parsed.drivername != "postgresql+asyncpg":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def create_engine(url: str, *, immediate: bool = True, lock_timeout_seconds: float = 5.0,
                  **kwargs: Any) -> AsyncEngine:
    url = async_url(url)
    if make_url(url).get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        # A lock that stays taken longer than this (a busy instance) ends the wait with SQLSTATE 55P03.
        settings = {"lock_timeout": str(int(lock_timeout_seconds * 1000))}
        return create_async_engine(url, connect_args={"server_settings": settings}, **kwargs)
    busy_ms = int(max(lock_timeout_seconds, 1.0) * 1000) if immediate else SQLITE_BUSY_TIMEOUT_MS
    engine = create_async_engine(url, connect_args={"timeout": busy_ms / 1000}, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _upgrade(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply the Alembic migrations; several workers starting at once take turns (PostgreSQL advisory lock)."""
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(7305526411)"))
        await conn.run_sync(_upgrade, revision)
