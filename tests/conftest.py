"""Test fixtures: an app per test on a fresh database (SQLite file, or PostgreSQL when asked for).

They are built on the package's own pytest plugin (``quart_spiff_messages.pytest_plugin``): ``app``, ``ext``,
``client``, ``clock`` and ``bpmn_dir`` are its ``spiff_*`` fixtures under the names these tests use; the BPMN folder
is ``bpmn_fixtures/`` (the ``spiff_messages_bpmn_dir`` ini option) or a ``@pytest.mark.bpmn(path)`` marker's.

Set ``SPIFF_MESSAGES_TEST_DATABASE`` to a PostgreSQL URL (``postgresql://postgres@127.0.0.1:5432/test``) to run
the whole suite against PostgreSQL: a database of its own is created for the session and dropped after it. When
that server cannot be reached the tests fail if ``CI=true`` and skip otherwise.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from quart_spiff_messages import SpiffMessages
from quart_spiff_messages.clock import ManualClock
from quart_spiff_messages.pytest_plugin import make_spiff_app

from .browser import browser  # noqa: F401 (the headless Chromium fixture of the browser tests)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "bpmn_fixtures"
BROKEN = Path(__file__).resolve().parent / "bpmn_broken"
CASES = Path(__file__).resolve().parent / "bpmn_cases"
TABLES = ("spiff_message_key", "spiff_message_instance", "spiff_subscription", "spiff_process_instance",
          "spiff_process_spec", "spiff_catalog_generation", "spiff_event", "spiff_timer", "spiff_timer_start",
          "spiff_service_call", "spiff_active_key", "spiff_message_queue")


Clock = ManualClock  # an injectable clock: tests move time instead of sleeping


def _pg_admin_url() -> str | None:
    url = os.environ.get("SPIFF_MESSAGES_TEST_DATABASE", "")
    return url if url.startswith("postgres") else None


async def _pg(url: str, *sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A database of the session's own on the PostgreSQL server, or None when the suite runs on SQLite."""
    admin = _pg_admin_url()
    if admin is None:
        yield None
        return
    name = f"spiff_messages_test_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_pg(admin, f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        message = f"PostgreSQL at {admin} is unreachable: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    base, _, _ = admin.rpartition("/")
    yield f"{base}/{name}"
    asyncio.run(_pg(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def spiff_database_url(spiff_database_url: str, postgres_url: str | None) -> Iterator[str]:
    """The plugin's SQLite file, or the session's PostgreSQL database (emptied after each test)."""
    if postgres_url is None:
        yield spiff_database_url
        return
    yield postgres_url
    try:
        asyncio.run(_pg(postgres_url, f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    except Exception as exc:  # tables not created yet (the app never started)
        if "does not exist" not in str(exc):
            raise


@pytest.fixture
def database_url(spiff_database_url: str) -> str:
    return spiff_database_url


@pytest.fixture
def clock(spiff_clock: ManualClock) -> ManualClock:
    return spiff_clock


@pytest.fixture
def spiff_bpmn_dir(request: pytest.FixtureRequest, spiff_bpmn_dir: Path) -> Path:
    """The folder of a ``@pytest.mark.bpmn(path)`` marker, else the plugin's choice (``bpmn_fixtures/``)."""
    marker = request.node.get_closest_marker("bpmn")
    return Path(marker.args[0]) if marker else spiff_bpmn_dir


@pytest.fixture
def bpmn_dir(spiff_bpmn_dir: Path) -> Path:
    return spiff_bpmn_dir


def make_app(bpmn_dir: Path, database_url: str, clock: Clock, **config: Any) -> tuple[Quart, SpiffMessages]:
    ext = make_spiff_app(bpmn_dir, database_url, clock, config)
    assert ext.app is not None
    return ext.app, ext


@pytest.fixture
def app(spiff_app: Quart) -> Quart:
    return spiff_app


@pytest.fixture
def ext(spiff_extension: SpiffMessages, spiff_app: Quart) -> SpiffMessages:
    return spiff_extension


@pytest.fixture
def client(spiff_client: Any) -> Any:
    return spiff_client
