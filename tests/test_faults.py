"""Faults outside the client's control: a lost database is waited for or answered 503, a full disk 507, never 500.

PostgreSQL: backends of the server's database are terminated every 300 ms under load on 2 workers, and the
database is cut off for a while behind a TCP proxy (a restart as the server sees it). SQLite: the database lives on
a small tmpfs volume that is filled. After each: nothing lost, doubled or left ``running``,
and the server recovers without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from quart_spiff_messages.errors import DatabaseUnavailable
from quart_spiff_messages.testing import free_port, invariant_violations, serving

from .conftest import FIXTURES, Clock, make_app

PG = os.environ.get("SPIFF_MESSAGES_TEST_DATABASE", "").startswith("postgres")
PAIRS = 500
CLIENTS = 8
KILL_EVERY_SECONDS = 0.3


# -- a client that retries what the server says to retry -------------------------------------------------------
async def send_until_answered(http: httpx.AsyncClient, name: str, payload: dict[str, Any],
                              seen: Counter[str]) -> httpx.Response:
    """POST a message with an idempotency key, again (same key) after each 503, as the guarantees say to."""
    key = str(uuid.uuid4())
    for _ in range(200):
        resp = await http.post(f"/messages/{name}", json=payload, params={"message_instance_uuid": key})
        retry_after = resp.headers.get("Retry-After")
        seen[f"{resp.status_code}{' with Retry-After' if retry_after else ''}"] += 1
        if resp.status_code != 503:
            return resp
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} {payload} was answered 503 200 times")


async def pairs(url: str, tag: str, count: int) -> tuple[Counter[str], list[str]]:
    """``count`` orders and their payments from CLIENTS clients; the answers seen and what went wrong."""
    seen: Counter[str] = Counter()
    wrong: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            while not queue.empty():
                order = f"{tag}-{queue.get_nowait()}"
                started = await send_until_answered(http, "order_received", {"order_id": order}, seen)
                paid = await send_until_answered(http, "payment_received", {"order_id": order, "amount": 1}, seen)
                if started.status_code != 200 or paid.status_code != 200:
                    wrong.append(f"{order}: {started.status_code} {started.text[:200]} / {paid.status_code} "
                                 f"{paid.text[:200]}")

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return seen, wrong


async def orders_in(database_url: str, tag: str) -> Counter[str]:
    """How many instances of each status the orders of ``tag`` have (one each, complete, when nothing doubled)."""
    import asyncpg

    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        rows = await conn.fetch("SELECT status FROM spiff_process_instance WHERE process_key = 'order_process' "
                                "AND correlations::text LIKE $1", f'%"{tag}-%')
    finally:
        await conn.close()
    return Counter(r["status"] for r in rows)


# -- PostgreSQL ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def killing_backends(database_url: str, every: float) -> Iterator[list[int]]:
    """Terminate every other backend of the database every ``every`` seconds; yields the kill counts."""
    database = database_url.rsplit("/", 1)[1]
    admin = database_url.rsplit("/", 1)[0] + "/postgres"
    stop = threading.Event()
    kills: list[int] = []

    async def loop() -> None:
        import asyncpg

        conn = await asyncpg.connect(admin, timeout=5)
        try:
            while not stop.is_set():
                killed = await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()", database)
                kills.append(int(killed))
                await asyncio.sleep(every)
        finally:
            await conn.close()

    thread = threading.Thread(target=lambda: asyncio.run(loop()), daemon=True)
    thread.start()
    try:
        yield kills
    finally:
        stop.set()
        thread.join(10)


@pytest.mark.skipif(not PG, reason="terminates PostgreSQL backends: the suite's pg env runs it")
def test_killed_backends_are_answered_200_or_503_and_every_order_completes(database_url: str,
                                                                           tmp_path: Path) -> None:
    tag = f"KB{uuid.uuid4().hex[:6]}"
    with serving(FIXTURES, database_url, tmp_path / "serve.log", workers=2) as server:
        with killing_backends(database_url, KILL_EVERY_SECONDS) as kills:
            seen, wrong = asyncio.run(pairs(server.url, tag, PAIRS))
        assert sum(kills) > 0, "no backend was terminated: the fault was not injected"
        statuses = asyncio.run(orders_in(database_url, tag))
        broken = asyncio.run(invariant_violations(database_url))
        print(f"{PAIRS} pairs, {sum(kills)} backends killed in {len(kills)} rounds; answers {dict(seen)}")
    assert set(seen) <= {"200", "503 with Retry-After"}, seen
    assert not wrong, wrong[:5]
    assert statuses == Counter({"complete": PAIRS}), statuses  # none lost, none started twice
    assert not broken, broken


class Proxy:
    """A TCP proxy in front of PostgreSQL that can cut every connection and refuse new ones for a while."""

    def __init__(self, target_port: int = 5432) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.call(self._listen())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port, reuse_address=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        self.writers -= {writer, up_writer}

    async def _cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    def down(self) -> None:
        self.call(self._cut())

    def up(self) -> None:
        self.call(self._listen())

    def close(self) -> None:
        self.down()
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.mark.skipif(not PG, reason="cuts the way to PostgreSQL: the suite's pg env runs it")
def test_a_database_that_is_down_for_a_while_is_waited_for_then_answered_503(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIFF_MESSAGES_DATABASE_RETRY_SECONDS", "3")
    proxy = Proxy()
    via_proxy = database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    assert via_proxy != database_url

    async def during(outage: float, count: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            await http.get("/message-models")  # connected before the outage
            proxy.down()
            sends = [asyncio.create_task(http.post("/messages/order_received", json={"order_id": f"DN-{outage}-{i}"}))
                     for i in range(count)]
            await asyncio.sleep(outage)
            proxy.up()
            return list(await asyncio.gather(*sends))

    try:
        with serving(FIXTURES, via_proxy, tmp_path / "serve.log", workers=1) as server:
            short = asyncio.run(during(1.5, 10))  # shorter than the retry window: waited for
            long = asyncio.run(during(5.0, 4))  # longer: 503 with Retry-After, nothing written
            after = httpx.post(f"{server.url}/messages/order_received", json={"order_id": "DN-after"}, timeout=30)
    finally:
        proxy.close()
    assert [r.status_code for r in short] == [200] * 10, [r.text[:300] for r in short]
    assert [(r.status_code, r.json()["error_code"], "Retry-After" in r.headers) for r in long] == \
        [(503, "database_unavailable", True)] * 4
    assert after.status_code == 200, after.text
    statuses = asyncio.run(orders_in(database_url, "DN"))
    assert statuses == Counter({"waiting": 11}), statuses  # the 10 waited for and the one after; none of the 503s
    assert not asyncio.run(invariant_violations(database_url))


# -- SQLite --------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def small_volume(path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (root only), unmounted afterwards."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        message = f"cannot mount a tmpfs (root is needed): {done.stderr.decode(errors='replace').strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(volume: Path) -> Path:
    """Write a file until the volume has no space left."""
    filler = volume / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: no leftover for close() to fail on
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    return filler


@pytest.mark.skipif(PG, reason="the SQLite file on a small volume: the suite's SQLite envs run it")
async def test_a_full_disk_is_507_and_recovers_when_space_is_freed(tmp_path: Path, clock: Clock) -> None:
    with small_volume(tmp_path / "volume") as volume:
        app, ext = make_app(FIXTURES, f"sqlite:///{volume / 'messages.db'}", clock,
                            SPIFF_MESSAGES_DATABASE_RETRY_SECONDS=0.2)
        async with app.test_app():
            client = app.test_client()
            assert (await client.post("/v1.0/messages/order_received", json={"order_id": "F-1"})).status_code == 200
            filler = fill(volume)
            big = {"order_id": "F-2", "notes": "x" * 200_000}
            resp = await client.post("/v1.0/messages/order_received", json=big)
            body = await resp.get_json()
            assert (resp.status_code, body["error_code"]) == (507, "insufficient_storage"), body
            assert "Retry-After" in resp.headers
            filler.unlink()
            resp = await client.post("/v1.0/messages/order_received", json=big)
            assert resp.status_code == 200, await resp.get_data()
            listed = await (await client.get("/v1.0/process-instances")).get_json()
            assert listed["pagination"]["total"] == 2  # F-1 and F-2 once: the refused attempt left nothing
            assert await ext.runtime.reads.invariant_violations() == []


async def test_messages_thrown_while_the_database_is_away_are_routed_when_it_is_back(
        client: Any, ext: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sender's change committed, so its answer says so; what it threw waits, and the next sweep routes it."""
    store, router = ext.runtime.store, ext.runtime.router
    real_run, real_flush = store.run, router.flush
    away = False  # while the request routes what it threw

    async def run(work: Any) -> Any:
        if away:
            raise DatabaseUnavailable("the database is away (injected)")
        return await real_run(work)

    async def flush_while_away(outbox: Any) -> None:
        nonlocal away
        away = True
        try:
            await real_flush(outbox)
        finally:
            away = False

    monkeypatch.setattr(store, "run", run)
    monkeypatch.setattr(router, "flush", flush_while_away)
    resp = await client.post("/v1.0/process-instances/quote_requester", json={"request_id": "Q-9", "item": "bolt"})
    assert resp.status_code == 201, await resp.get_data()
    requester = (await resp.get_json())["process_instance"]["id"]
    monkeypatch.setattr(router, "flush", real_flush)
    thrown = await (await client.get("/v1.0/messages", query_string={"name": "quote_request"})).get_json()
    assert [m["status"] for m in thrown["results"]] == ["ready"]
    await ext.runtime.upkeep.sweep()
    shown = await (await client.get(f"/v1.0/process-instances/{requester}")).get_json()
    assert shown["process_instance"]["status"] == "complete", shown
