"""Database URLs, the PostgreSQL engine and schema upgrades (SQLite's engines live in :mod:`.sqlite`).

PostgreSQL runs on SQLAlchemy's asyncio engine with asyncpg; row and advisory locks are taken by the store's
queries, and a lock held longer than the lock timeout ends the wait (SQLSTATE 55P03).
"""

from __future__ import annotations

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


def create_engine(url: str, *, lock_timeout_seconds: float = 5.0, **kwargs: Any) -> AsyncEngine:
    """The asyncio engine for PostgreSQL."""
    url = normalize_url(url)
    # A lock that stays taken longer than this (a busy instance) ends the wait with SQLSTATE 55P03.
    settings = {"lock_timeout": str(int(lock_timeout_seconds * 1000))}
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, connect_args={"server_settings": settings}, **kwargs)


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

