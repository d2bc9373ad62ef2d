"""Test fixtures: an app per test on a fresh database (SQLite file, or PostgreSQL when asked for).

Set ``SPIFF_MESSAGES_TEST_DATABASE`` to a PostgreSQL URL (``postgresql://postgres@127.0.0.1:5432/test``) to run
the whole suite against PostgreSQL: a database of its own is created for the session and dropped after it. When
that server cannot be reached the tests fail if ``CI=true`` and skip otherwise.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from quart_spiff_messages import SpiffMessages

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "bpmn_fixtures"
BROKEN = Path(__file__).resolve().parent / "bpmn_broken"
CASES = Path(__file__).resolve().parent / "bpmn_cases"
TABLES = ("spiff_message_key", "spiff_message_instance", "spiff_subscription", "spiff_process_instance",
          "spiff_process_spec")


class Clock:
    """An injectable clock: tests move time instead of sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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
def database_url(tmp_path: Path, postgres_url: str | None) -> Iterator[str]:
    if postgres_url is None:
        yield f"sqlite:///{tmp_path / 'messages.db'}"
        return
    yield postgres_url
    try:
        asyncio.run(_pg(postgres_url, f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    except Exception as exc:  # tables not created yet (the app never started)
        if "does not exist" not in str(exc):
            raise


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def bpmn_dir(request: pytest.FixtureRequest) -> Path:
    """The BPMN folder the app serves: ``bpmn_fixtures/``, or the folder of a ``@pytest.mark.bpmn(path)`` marker."""
    marker = request.node.get_closest_marker("bpmn")
    return Path(marker.args[0]) if marker else FIXTURES


def make_app(bpmn_dir: Path, database_url: str, clock: Clock, **config: Any) -> tuple[Quart, SpiffMessages]:
    app = Quart(__name__)
    app.config.update(SPIFF_MESSAGES_BPMN_DIR=str(bpmn_dir), SPIFF_MESSAGES_DATABASE_URL=database_url, **config)
    ext = SpiffMessages(app, clock=clock)
    return app, ext


@pytest.fixture
async def app_ext(bpmn_dir: Path, database_url: str, clock: Clock) -> AsyncIterator[tuple[Quart, SpiffMessages]]:
    app, ext = make_app(bpmn_dir, database_url, clock)
    async with app.test_app():
        yield app, ext


@pytest.fixture
def app(app_ext: tuple[Quart, SpiffMessages]) -> Quart:
    return app_ext[0]


@pytest.fixture
def ext(app_ext: tuple[Quart, SpiffMessages]) -> SpiffMessages:
    return app_ext[1]


@pytest.fixture
def client(app: Quart) -> Any:
    return app.test_client()
