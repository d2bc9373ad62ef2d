"""Real concurrent HTTP against ``spiff-messages serve --workers 2`` (issue 4): what holds when requests race.

The module starts one server with two workers (on a SQLite file, or on PostgreSQL when
``SPIFF_MESSAGES_TEST_DATABASE`` is set) and each test fires one race at it from several HTTP clients at once, each
client with one keep-alive connection opened before the race starts. Every guarantee of a race is evaluated, then
all that do not hold are reported together with the answers that broke them and the errors in the server log; run
with ``-s`` to see the counts of a passing run too.

The races and the guarantees they check are in :mod:`quart_spiff_messages.races`, so that ``bench/race.py`` runs
the same ones at larger counts; here they must all hold. They use keys of their own and compare totals with those
before them, so they also hold on a database that is not empty.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from quart_spiff_messages.races import (
    Checks,
    distinct,
    log_excerpt,
    log_size,
    one_receiver,
    rendezvous,
    same_uuid,
    server_errors,
)
from quart_spiff_messages.testing import Server, invariant_violations, start_server

from .conftest import FIXTURES, TABLES, _pg

WORKERS = 2
# Issue 4's counts: (clients, requests) per race.
ONE_RECEIVER = (40, 200)
SAME_UUID = (100, 100)
DISTINCT = 16
DISTINCT_COUNT = 1000
RENDEZVOUS = (16, 100)


def conclude(checks: Checks, server: Server, log_offset: int = 0) -> None:
    """Print what was checked (``pytest -s`` shows it) and fail with every guarantee that does not hold."""
    if server.proc.poll() is not None:
        checks.expect(False, f"the server is still running (it exited with {server.proc.returncode})")
    errors = server_errors(server.log, log_offset)
    checks.facts["server_log_errors"] = sum(errors.values())
    text = checks.report()
    if errors:
        text += f"\n   server log {server.log} (count x line):\n{log_excerpt(server, log_offset)}"
    print(text)
    if checks.failures:
        pytest.fail(text, pytrace=False)


# -- the tests ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(postgres_url: str | None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module (a start takes seconds): on a SQLite file of its own, or on the session's
    PostgreSQL database, emptied afterwards as ``database_url`` does. The races keep to keys of their own and
    compare totals with those before them, so they do not see each other's rows."""
    folder = tmp_path_factory.mktemp("concurrency")
    try:
        srv = start_server(FIXTURES, postgres_url or f"sqlite:///{folder / 'messages.db'}", WORKERS,
                           folder / "serve.log")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield srv
    finally:
        srv.stop()
        if postgres_url is not None:
            asyncio.run(_pg(postgres_url, f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))


@dataclass
class Live:
    server: Server
    log_offset: int  # where this test's part of the server log starts

    @property
    def url(self) -> str:
        return self.server.url

    async def check(self, scenario: Awaitable[Checks]) -> None:
        try:
            checks = await scenario
        except httpx.HTTPError as exc:  # reading the state back failed: the server is gone or broken
            state = "running" if self.server.proc.poll() is None else f"exited with {self.server.proc.returncode}"
            pytest.fail(f"{type(exc).__name__}: {exc} (the server {state}); {self.server.log}:\n"
                        f"{log_excerpt(self.server, self.log_offset)}")
        for broken in await invariant_violations(self.server.database_url):
            checks.expect(False, f"invariant: {broken}")
        conclude(checks, self.server, self.log_offset)


@pytest.fixture
def live(server: Server) -> Live:
    if server.proc.poll() is not None:
        pytest.fail(f"the server exited with {server.proc.returncode}; {server.log}:\n{log_excerpt(server)}")
    return Live(server, log_size(server))


async def test_identical_correlated_messages_reach_one_instance_once(live: Live) -> None:
    clients, count = ONE_RECEIVER
    await live.check(one_receiver(live.url, clients=clients, count=count))


async def test_first_sends_with_one_uuid_are_stored_once(live: Live) -> None:
    clients, count = SAME_UUID
    await live.check(same_uuid(live.url, clients=clients, count=count))


async def test_distinct_messages_each_delivered_once(live: Live) -> None:
    await live.check(distinct(live.url, clients=DISTINCT, count=DISTINCT_COUNT))


async def test_buffered_message_and_its_receiver_at_the_same_moment(live: Live) -> None:
    clients, count = RENDEZVOUS
    await live.check(rendezvous(live.url, clients=clients, count=count))
