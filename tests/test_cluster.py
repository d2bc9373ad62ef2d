"""One cluster, no single point: no lock every transaction takes, the feed gap-free without one, bounded waits.

A transaction held open on one instance (a stopped worker, a host cut off from the database) must stop only that
instance: other instances' messages, timers and tasks go on, the feed reader answers at once, and the held
transaction's events are not skipped when it commits late.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import shutil
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from quart_spiff_messages.store import db
from quart_spiff_messages.store import statements as sql
from quart_spiff_messages.testing import environment, invariant_violations, serving

from .conftest import CASES, FIXTURES, Clock, make_app

OLD_FEED_LOCK = 7305526412  # the advisory lock every commit took before the feed carried transaction ids


def mixed_bpmn(tmp_path: Path) -> Path:
    """The order fixtures, a timer process and a human task process in one folder."""
    folder = tmp_path / "bpmn"
    shutil.copytree(FIXTURES, folder)
    shutil.copy(CASES / "timers" / "tick.bpmn", folder / "tick.bpmn")
    shutil.copy(CASES / "human" / "approval.bpmn", folder / "approval.bpmn")
    return folder


@contextlib.asynccontextmanager
async def held_change(database_url: str, instance_id: int) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """What a worker stopped in the middle of a change holds: the instance's row lock and an event written but not
    committed; plus, from another connection, every advisory lock the extension ever took for the whole cluster.
    Yields ``commit``: the stalled change commits late."""
    engine = db.create_engine(database_url, pool_size=2)
    try:
        async with engine.connect() as other:
            await other.execute(text(f"SELECT pg_advisory_lock({OLD_FEED_LOCK})"))
            async with engine.connect() as conn:
                tx = await conn.begin()
                await conn.execute(text("SELECT id FROM spiff_process_instance WHERE id = :i FOR UPDATE"),
                                   {"i": instance_id})
                await conn.execute(sql.INSERT_EVENT_PG, {"kind": "late_change", "process_instance_id": instance_id,
                                                         "message_instance_id": None, "data": {}, "created_at": 0.0})
                committed = False

                async def commit() -> None:
                    nonlocal committed
                    await tx.commit()
                    committed = True

                try:
                    yield commit
                finally:
                    if not committed:
                        await tx.rollback()
            await other.execute(text(f"SELECT pg_advisory_unlock({OLD_FEED_LOCK})"))
    finally:
        await engine.dispose()


async def _json(resp: Any) -> Any:
    return await resp.get_json()


async def test_a_change_held_open_on_one_instance_stops_no_other_instance_and_the_feed_skips_nothing(
        tmp_path: Path, database_url: str, clock: Clock) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: a held write transaction holds everyone (see the writer-turn tests)")
    app, ext = make_app(mixed_bpmn(tmp_path), database_url, clock, SPIFF_MESSAGES_LOCK_TIMEOUT_SECONDS=1,
                        SPIFF_MESSAGES_TIMER_INTERVAL_SECONDS=0)
    loop = asyncio.get_running_loop()
    async with app.test_app():
        client = app.test_client()
        held = await _json(await client.post("/v1.0/messages/order_received", json={"order_id": "HELD"}))
        held_id = held["process_instance"]["id"]
        tick = await _json(await client.post("/v1.0/process-instances/tick", json={}))
        approval = await _json(await client.post("/v1.0/messages/approval_requested", json={"order_id": "AP"}))
        before = await ext.events(0, 1000)
        cursor = before[-1].id
        assert cursor is not None

        async with held_change(database_url, held_id) as commit:
            started = loop.time()
            other = await client.post("/v1.0/messages/order_received", json={"order_id": "FREE"})
            assert other.status_code == 200, await _json(other)
            paid = await client.post("/v1.0/messages/payment_received", json={"order_id": "FREE", "amount": 1})
            assert paid.status_code == 200, await _json(paid)
            clock.advance(1)
            assert await ext.fire_timers() == 1
            done = await client.put(f"/v1.0/tasks/{approval['process_instance']['id']}/approve",
                                    json={"approved": True})
            assert done.status_code == 200, await _json(done)
            assert loop.time() - started < 1.0, "other instances waited for the held one"
            feed = await client.get("/v1.0/events", query_string={"after": cursor})
            assert feed.status_code == 200
            # the held change is older than every change since: nothing after it may be shown before it commits
            assert (await _json(feed))["results"] == []
            busy = await client.post("/v1.0/messages/payment_received", json={"order_id": "HELD", "amount": 1})
            assert busy.status_code == 503 and (await _json(busy))["error_code"] == "instance_busy"
            await commit()

        seen = [e for e in await ext.events(cursor, 1000)]
        assert seen[0].kind == "late_change" and seen[0].process_instance_id == held_id
        kinds = [(e.kind, e.process_instance_id) for e in seen[1:]]
        assert ("instance_completed", tick["process_instance"]["id"]) in kinds
        assert ("instance_completed", other_id := (await _json(paid))["process_instance"]["id"]) in kinds
        assert [k for k in kinds if k[1] == other_id] == [
            ("instance_started", other_id), ("message_delivered", other_id), ("instance_waiting", other_id),
            ("message_delivered", other_id), ("instance_completed", other_id)]
        ids = [e.id for e in seen]
        assert len(set(ids)) == len(ids)
        assert await ext.runtime.reads.invariant_violations() == []
        resp = await client.post("/v1.0/messages/payment_received", json={"order_id": "HELD", "amount": 1})
        assert resp.status_code == 200 and (await _json(resp))["process_instance"]["id"] == held_id


async def test_a_worker_holding_the_sqlite_writer_turn_makes_others_answer_503_within_the_lock_timeout(
        bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    """Another worker of the host stopped while it held the writer turn (the ``flock`` next to the database)."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the writer turn is SQLite's")
    app, ext = make_app(bpmn_dir, database_url, clock, SPIFF_MESSAGES_LOCK_TIMEOUT_SECONDS=0.5)
    loop = asyncio.get_running_loop()
    async with app.test_app():
        client = app.test_client()
        assert (await client.post("/v1.0/messages/order_received", json={"order_id": "T-1"})).status_code == 200
        turn = os.open(database_url.removeprefix("sqlite:///") + ".writer-turn", os.O_RDWR)
        try:
            fcntl.flock(turn, fcntl.LOCK_EX)
            for _ in range(2):  # the second waits behind the first's abandoned wait: bounded all the same
                started = loop.time()
                resp = await client.post("/v1.0/messages/payment_received", json={"order_id": "T-1", "amount": 1})
                assert resp.status_code == 503 and (await _json(resp))["error_code"] == "instance_busy"
                assert resp.headers["Retry-After"]
                assert loop.time() - started < 0.5 + 2
            listed = await _json(await client.get("/v1.0/process-instances"))  # reads go on
            assert listed["pagination"]["total"] == 1
        finally:
            fcntl.flock(turn, fcntl.LOCK_UN)
            os.close(turn)
        resp = await client.post("/v1.0/messages/payment_received", json={"order_id": "T-1", "amount": 1})
        assert resp.status_code == 200
        assert await ext.runtime.reads.invariant_violations() == []


class SilentLink:
    """A TCP proxy to PostgreSQL that can go silent: while ``silent`` it keeps every connection open, accepts new
    ones, and forwards nothing either way (a black-hole partition: no RST, no FIN)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.silent = False
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while self.silent:  # a new connection during the cut: accepted, never answered  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self.writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if not self.silent:
                        dst.write(data)
                        await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()


async def test_a_silent_database_link_is_answered_503_within_the_retry_window_then_200(
        bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("a network link is PostgreSQL's")
    url = make_url(database_url)
    link = SilentLink(url.host or "127.0.0.1", url.port or 5432)
    port = await link.start()
    proxied = url.set(port=port).render_as_string(hide_password=False)
    app, ext = make_app(bpmn_dir, proxied, clock, SPIFF_MESSAGES_LOCK_TIMEOUT_SECONDS=1,
                        SPIFF_MESSAGES_DATABASE_RETRY_SECONDS=2, SPIFF_MESSAGES_TIMER_INTERVAL_SECONDS=0)
    loop = asyncio.get_running_loop()
    try:
        async with app.test_app():
            client = app.test_client()
            assert (await client.post("/v1.0/messages/order_received", json={"order_id": "CUT"})).status_code == 200
            link.silent = True
            cut = loop.time()
            started = loop.time()
            resp = await client.post("/v1.0/messages/payment_received", json={"order_id": "CUT", "amount": 1})
            waited = loop.time() - started
            assert resp.status_code == 503, await _json(resp)
            assert (await _json(resp))["error_code"] == "database_unavailable" and resp.headers["Retry-After"]
            # given up after the statement bound (lock timeout + 2 s, the pool's ping included) and a reconnect
            # (connect timeout: the retry window, 2 s), well within the 10 s cut
            assert waited < 2 * (1 + 2) + 2 + 1, waited
            await asyncio.sleep(max(0.0, 10 - (loop.time() - cut)))  # the cut lasts 10 s in all
            link.silent = False
            resp = await client.post("/v1.0/messages/payment_received", json={"order_id": "CUT", "amount": 1})
            assert resp.status_code == 200, await _json(resp)
            assert await ext.runtime.reads.invariant_violations() == []
    finally:
        await link.close()


@pytest.mark.bpmn(CASES / "timers")
async def test_on_postgresql_the_database_clock_decides_whatever_the_host_clock_says(
        bpmn_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host whose clock is an hour ahead: on PostgreSQL its due times and expiries are the database's, on SQLite
    (one host) its own. No test clock is given, so the extension keeps the host's ``time.time``."""

    from quart_spiff_messages.pytest_plugin import make_spiff_app

    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    ext = make_spiff_app(bpmn_dir, database_url, None, {"SPIFF_MESSAGES_TIMER_INTERVAL_SECONDS": 0})
    assert ext.app is not None
    async with ext.app.test_app():
        client = ext.app.test_client()
        tick = await _json(await client.post("/v1.0/process-instances/tick", json={}))
        shown = await _json(await client.get(f"/v1.0/process-instances/{tick['process_instance']['id']}"))
        due = shown["process_instance"]["waiting_for"][0]["due_at_in_seconds"]
        assert ext.catalog.messages  # the folder has a message to buffer
        name = sorted(ext.catalog.messages)[0]
        resp = await client.post(f"/v1.0/messages/{name}", json={"nobody": "waits"},
                                 query_string={"time_to_live_in_seconds": 60,
                                               "message_instance_uuid": "00000000-0000-4000-8000-000000000001"})
        assert resp.status_code == 202, await _json(resp)
        expires = (await _json(resp))["message_instance"]["expires_at_in_seconds"]
        events = await ext.events(0, 100)
    offset = 0 if database_url.startswith("postgresql") else 3600
    assert abs(due - (real() + offset + 1)) < 5, (due, real())
    assert abs(expires - (real() + offset + 60)) < 5, (expires, real())
    assert all(abs(e.created_at - (real() + offset)) < 5 for e in events if e.created_at is not None)


def _holds_a_transaction(database_url: str, turn_file: Path) -> bool:
    """Whether a stopped worker holds a writing transaction: SQLite's writer turn, or a PostgreSQL backend with a
    transaction id (one that locked or wrote)."""
    if database_url.startswith("sqlite"):
        fd = os.open(turn_file, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    async def check() -> bool:
        engine = db.create_engine(database_url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                found = await conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"))
                return bool(found.scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(check())


def test_a_worker_stopped_inside_a_transaction_holds_no_request_to_another_past_the_lock_timeout(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ``serve`` processes on one database; one is SIGSTOPped while it holds a writing transaction (SQLite's
    writer turn, a PostgreSQL instance lock), for longer than the server's idle-in-transaction timeout on
    PostgreSQL. Every request to the other is answered within the lock timeout + 2 s; after SIGCONT all completes,
    nothing is lost or doubled."""
    lock_timeout = 1.0
    monkeypatch.setenv("SPIFF_MESSAGES_LOCK_TIMEOUT_SECONDS", str(lock_timeout))
    monkeypatch.setenv("SPIFF_MESSAGES_DATABASE_RETRY_SECONDS", "2")
    postgres = database_url.startswith("postgresql")
    stop_seconds = 12.0 if postgres else 6.0  # PostgreSQL: past idle_in_transaction_session_timeout (10 s here)
    turn_file = Path(database_url.removeprefix("sqlite:///") + ".writer-turn")
    with serving(FIXTURES, database_url, tmp_path / "a.log") as a, \
            serving(FIXTURES, database_url, tmp_path / "b.log") as b, \
            httpx.Client(timeout=60) as http:
        waiting = [f"W-{i}" for i in range(6)]
        for order in waiting:
            assert http.post(f"{b.url}/messages/order_received", json={"order_id": order}).status_code == 200
        started: list[str] = []
        stop_load = threading.Event()

        def load_a() -> None:  # A writes without pause, so a stop lands inside a transaction
            with httpx.Client(timeout=60) as own:
                i = 0
                while not stop_load.is_set():
                    order = f"A-{i}"
                    resp = own.post(f"{a.url}/messages/order_received", json={"order_id": order},
                                    params={"time_to_live_in_seconds": 60,
                                            "message_instance_uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, order))})
                    while resp.status_code == 503:  # the same key: answered with the stored outcome if written
                        time.sleep(0.2)
                        resp = own.post(f"{a.url}/messages/order_received", json={"order_id": order},
                                        params={"time_to_live_in_seconds": 60,
                                                "message_instance_uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, order))})
                    assert resp.status_code == 200, resp.text
                    started.append(order)
                    i += 1

        loader = threading.Thread(target=load_a)
        loader.start()
        try:
            for _ in range(200):
                time.sleep(random.uniform(0.01, 0.05))
                os.killpg(a.proc.pid, signal.SIGSTOP)
                time.sleep(0.05)
                if _holds_a_transaction(database_url, turn_file):
                    break
                os.killpg(a.proc.pid, signal.SIGCONT)
            else:
                pytest.fail("the worker was never stopped inside a transaction")
            stopped_at = time.monotonic()
            answers: list[tuple[int, str, float]] = []
            for order in waiting:
                t = time.monotonic()
                resp = http.post(f"{b.url}/messages/payment_received", json={"order_id": order, "amount": 1})
                answers.append((resp.status_code, resp.json().get("error_code", ""), time.monotonic() - t))
            t = time.monotonic()
            assert http.get(f"{b.url}/events", params={"after": 0}).status_code == 200
            assert http.get(f"{b.url}/process-instances").status_code == 200
            answers.append((200, "reads", time.monotonic() - t))
            assert max(w for _, _, w in answers) < lock_timeout + 2, answers
            if postgres:  # other instances go on
                assert [s for s, _, _ in answers] == [200] * len(answers), answers
            else:  # one writer: the others are told to come back
                assert {(s, c) for s, c, _ in answers[:-1]} == {(503, "instance_busy")}, answers
            time.sleep(max(0.0, stop_seconds - (time.monotonic() - stopped_at)))
        finally:
            os.killpg(a.proc.pid, signal.SIGCONT)
            stop_load.set()
            loader.join(60)
        for order in waiting:  # what was refused is sent again: each payment is taken once
            resp = http.post(f"{b.url}/messages/payment_received", json={"order_id": order, "amount": 1})
            assert resp.status_code in (200, 400), resp.text
        instances = http.get(f"{b.url}/process-instances", params={"per_page": 1000}).json()
        assert instances["pagination"]["total"] == len(waiting) + len(started)  # none lost, none doubled
        complete = http.get(f"{b.url}/process-instances", params={"status": "complete", "per_page": 1000}).json()
        assert complete["pagination"]["total"] == len(waiting)
    assert asyncio.run(invariant_violations(database_url)) == []


LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")  # Debian's faketime


@contextlib.contextmanager
def skewed(seconds: int) -> Iterator[None]:
    """Processes started in the block see their wall clock ``seconds`` off (libfaketime; monotonic time is
    left alone)."""
    with environment(LD_PRELOAD=str(LIBFAKETIME), FAKETIME=f"{seconds:+d}s", FAKETIME_DONT_FAKE_MONOTONIC="1"):
        yield


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="libfaketime is not installed (apt-get install faketime)")
def test_two_hosts_with_clocks_30_s_apart_fire_no_timer_early_or_twice_and_expire_nothing_early(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ``serve`` processes on one database, one 30 s ahead and one 30 s behind. Work is started on the host
    that is behind; the host that is ahead must not fire its timers early, nor expire what it buffered. (On SQLite,
    one host, the host's clock is the clock: there the point is that the two still agree with themselves.)"""
    monkeypatch.setenv("SPIFF_MESSAGES_TIMER_INTERVAL_SECONDS", "0.2")
    monkeypatch.setenv("SPIFF_MESSAGES_SWEEP_INTERVAL_SECONDS", "0.2")
    if not database_url.startswith("postgresql"):
        pytest.skip("one host has one clock: the skew is PostgreSQL's, where hosts share the database")
    timers = CASES / "timers"
    with skewed(+30), serving(timers, database_url, tmp_path / "ahead.log") as ahead, \
            skewed(-30), serving(timers, database_url, tmp_path / "behind.log") as behind, \
            httpx.Client(timeout=30) as http:
        began: dict[int, float] = {}
        for i in range(3):
            began[http.post(f"{behind.url}/process-instances/boundary",
                            json={"order_id": f"SK-{i}"}).json()["process_instance"]["id"]] = time.time()
        ticks = {}
        for _ in range(2):
            ticks[http.post(f"{behind.url}/process-instances/tick", json={}).json()["process_instance"]["id"]] = \
                time.time()
        buffered_at = time.time()
        resp = http.post(f"{behind.url}/messages/boundary_reply", json={"order_id": "SK-LATE"},
                         params={"time_to_live_in_seconds": 20, "message_instance_uuid": str(uuid.uuid4())})
        assert resp.status_code == 202, resp.text
        expires = resp.json()["message_instance"]["expires_at_in_seconds"]
        assert buffered_at + 20 - 2 <= expires <= buffered_at + 20 + 2, (expires, buffered_at)
        time.sleep(1.0)  # the replies come 1 s after their start, the timeouts are due after 2 s
        replied = next(iter(began))
        reply = http.post(f"{ahead.url}/messages/boundary_reply", json={"order_id": "SK-0"})
        assert reply.status_code == 200, reply.text
        time.sleep(2.0)  # the sweep of both hosts ran many times: the buffered reply is still there
        late = http.post(f"{ahead.url}/process-instances/boundary", json={"order_id": "SK-LATE"}).json()
        assert late["process_instance"]["status"] == "complete" and late["task_data"]["outcome"] == "reply", late
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done = http.get(f"{ahead.url}/process-instances", params={"status": "complete", "per_page": 100}).json()
            if done["pagination"]["total"] >= len(began) + len(ticks) + 1:
                break
            time.sleep(0.2)
        events = http.get(f"{ahead.url}/events", params={"after": 0, "limit": 1000}).json()["results"]
    fired: dict[int, list[float]] = {}
    for e in events:
        if e["kind"] == "timer_fired":
            fired.setdefault(e["process_instance_id"], []).append(e["created_at_in_seconds"])
    due = {i: t + 2 for i, t in began.items() if i != replied} | {i: t + 1 for i, t in ticks.items()}
    assert set(fired) == set(due), (fired, due)  # the replied one's timeout never fired
    for instance, times in fired.items():
        assert len(times) == 1, (instance, times)  # never twice
        assert times[0] >= due[instance] - 0.05, (instance, times[0] - due[instance])  # never early
    assert asyncio.run(invariant_violations(database_url)) == []
