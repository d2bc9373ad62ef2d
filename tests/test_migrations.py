"""The schema is declared twice, in ``store/models.py`` and in the Alembic migrations: these tests keep them equal.

A database upgraded to head by the package's own upgrade path is compared with ``models.Base.metadata`` by Alembic's
autogenerate comparison (tables, columns, types, nullability, indexes, unique constraints, foreign keys), on SQLite
and, when ``SPIFF_MESSAGES_TEST_DATABASE`` is a PostgreSQL URL, on the session's PostgreSQL database. A drift is
fixed by a new migration (or in ``models.py``, whichever is wrong), never by editing a released migration.

The wheel test builds the package from a copy of the source and checks it ships what the upgrade needs at run time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from quart_spiff_messages.store import db
from quart_spiff_messages.store.models import Base
from quart_spiff_messages.store.sqlite import SqliteStore

from .conftest import ROOT

VERSION_TABLE = "spiff_messages_alembic_version"  # store/migrations/env.py (a module that only runs under Alembic)
PACKAGE = ROOT / "plugin" / "quart_spiff_messages"


def differences(connection: Connection) -> list[Any]:
    """What autogenerate would write into a new migration to bring this database to the models ([] when equal)."""
    context = MigrationContext.configure(connection, opts={"compare_type": True, "version_table": VERSION_TABLE})
    return list(compare_metadata(context, Base.metadata))


def downgrade_connection(connection: Connection, revision: str) -> None:
    """The counterpart of ``db.upgrade_connection``, which the package has no use for outside these tests."""
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


def schema_tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {VERSION_TABLE}


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    """An empty SQLite file behind the engines the package itself upgrades with."""
    store = SqliteStore(f"sqlite:///{tmp_path / 'schema.db'}", lock_timeout_seconds=5.0)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def pg_url(postgres_url: str | None) -> str:
    if postgres_url is None:
        pytest.skip("SPIFF_MESSAGES_TEST_DATABASE is not a PostgreSQL URL")
    return postgres_url


# -- SQLite -----------------------------------------------------------------------------------------------------
def test_sqlite_head_matches_the_models(sqlite_store: SqliteStore) -> None:
    sqlite_store.upgrade("head")
    with sqlite_store.read_engine.connect() as conn:
        assert differences(conn) == []


def test_the_comparison_sees_a_missing_migration(sqlite_store: SqliteStore) -> None:
    """Guards the test above against comparing nothing: two revisions short of head, the last table and the event
    feed's transaction column are missing."""
    sqlite_store.upgrade("0006")
    with sqlite_store.read_engine.connect() as conn:
        found = differences(conn)
    named = [(diff[0], diff[3].name if diff[0] == "add_column" else diff[1].name) for diff in found]
    assert sorted(named) == [
        ("add_column", "xact"), ("add_index", "ix_spiff_event_xact_id"),
        ("add_index", "ix_spiff_service_call_next_attempt_at"),
        ("add_index", "ix_spiff_service_call_process_instance_id"), ("add_index", "ux_spiff_service_call_task"),
        ("add_table", "spiff_service_call")]


def test_sqlite_downgrade_to_base_then_upgrade_to_head(sqlite_store: SqliteStore) -> None:
    sqlite_store.upgrade("head")
    with sqlite_store.write_engine.begin() as conn:
        downgrade_connection(conn, "base")
    with sqlite_store.read_engine.connect() as conn:
        assert schema_tables(conn) == set()
    sqlite_store.upgrade("head")
    with sqlite_store.read_engine.connect() as conn:
        assert differences(conn) == []


# -- PostgreSQL (the session's database: other tests' tables may be there, already at head) ---------------------
async def test_postgres_head_matches_the_models(pg_url: str) -> None:
    engine = db.create_engine(pg_url)
    try:
        await db.upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(differences) == []
    finally:
        await engine.dispose()


async def test_postgres_downgrade_to_base_then_upgrade_to_head(pg_url: str) -> None:
    engine = db.create_engine(pg_url)
    try:
        await db.upgrade(engine)
        async with engine.begin() as conn:
            await conn.run_sync(downgrade_connection, "base")
            assert await conn.run_sync(schema_tables) == set()
        await db.upgrade(engine)  # the database is left at head for the tests after this one
        async with engine.connect() as conn:
            assert await conn.run_sync(differences) == []
    finally:
        await engine.dispose()


# -- the wheel --------------------------------------------------------------------------------------------------
def _shipped(folder: Path) -> set[str]:
    """The files under ``folder`` that a wheel must carry, as paths inside the wheel."""
    return {path.relative_to(PACKAGE.parent).as_posix() for path in folder.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"}


def test_wheel_ships_migrations_templates_and_py_typed(tmp_path: Path) -> None:
    """Built from a copy of the source: a ``build/`` left in the checkout could add files the package data lacks,
    and parallel runs (tox -p) would share it."""
    source = tmp_path / "source"
    shutil.copytree(ROOT / "plugin", source / "plugin",
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"),
                            str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("quart_spiff_messages-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "installed")

    expected = _shipped(PACKAGE / "store" / "migrations") | _shipped(PACKAGE / "templates")
    expected.add("quart_spiff_messages/py.typed")
    assert "quart_spiff_messages/store/migrations/script.py.mako" in expected
    assert sorted(expected - names) == []
    assert [name for name in names if Path(name).name == "alembic.ini"] == []

    # The migrations of the wheel alone bring an empty database to head.
    upgrade = ("import sys, quart_spiff_messages as p; from quart_spiff_messages.store.sqlite import SqliteStore; "
               "assert p.__file__.startswith(sys.argv[1]), p.__file__; "
               "s = SqliteStore(sys.argv[2], 5.0); s.upgrade('head'); s.close()")
    installed = tmp_path / "installed"
    ran = subprocess.run([sys.executable, "-c", upgrade, str(installed), f"sqlite:///{tmp_path / 'wheel.db'}"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(installed)})
    assert ran.returncode == 0, ran.stdout + ran.stderr
