"""Health probes (issue 16): liveness never looks at the database, readiness does, neither needs credentials."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from sqlalchemy.engine import make_url

from quart_spiff_messages import ConfigError, SpiffMessages
from quart_spiff_messages.store import Store
from quart_spiff_messages.testing import free_port

from .conftest import Clock, make_app


async def assert_not_ready(client: Any, path: str = "/readyz") -> dict[str, Any]:
    resp = await client.get(path)
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "1"
    assert resp.headers["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = await resp.get_json()
    assert body["error_code"] == "database_unavailable" and body["detail"].startswith("not ready: ")
    return body


async def test_live_and_ready_answer_ok(client: Any) -> None:
    for path in ("/livez", "/readyz"):
        resp = await client.get(path)
        assert resp.status_code == 200 and await resp.get_json() == {"status": "ok"}
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.headers["Cache-Control"] == "no-store"
        assert (await client.head(path)).status_code == 200  # balancers that probe with HEAD


@contextlib.asynccontextmanager
async def store_of(ext: SpiffMessages, store: Store) -> AsyncIterator[None]:
    """The running app reads through ``store`` (a real one, on a database that does not answer), then its own."""
    reads = ext.runtime.reads
    own, reads.store = reads.store, store
    try:
        yield
    finally:
        reads.store = own
        await store.dispose()


async def test_ready_is_503_when_the_database_refuses_connections(ext: SpiffMessages, client: Any,
                                                                    clock: Clock) -> None:
    """What PostgreSQL down or restarting looks like: the connection is refused. Liveness does not care."""
    async with store_of(ext, Store(f"postgresql://app@127.0.0.1:{free_port()}/gone", clock)):
        body = await assert_not_ready(client)
        assert "127.0.0.1" not in body["detail"]  # probes are not authenticated: no host names, no ports
        assert (await client.get("/livez")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200  # back as soon as the database answers


async def test_ready_gives_up_after_its_timeout_and_probes_share_one_query(bpmn_dir: Path, database_url: str,
                                                                          clock: Clock) -> None:
    """A database that accepts the connection and never answers (a hung server, a black-holed network)."""
    connections: list[asyncio.StreamWriter] = []

    async def hang(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    black_hole = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = black_hole.sockets[0].getsockname()[1]
    app, ext = make_app(bpmn_dir, database_url, clock, SPIFF_MESSAGES_READINESS_TIMEOUT_SECONDS=0.3)
    try:
        async with app.test_app():
            client = app.test_client()
            async with store_of(ext, Store(f"postgresql://app@127.0.0.1:{port}/hung", clock)):
                started = time.monotonic()
                answers = await asyncio.gather(*(assert_not_ready(client) for _ in range(20)))
                assert time.monotonic() - started < 3
                assert all("within 0.3 s" in a["detail"] for a in answers)
                assert len(connections) == 1  # twenty probes, one query
            assert (await client.get("/readyz")).status_code == 200
    finally:
        for writer in connections:
            writer.close()
        black_hole.close()
        await black_hole.wait_closed()


async def test_probes_need_no_api_key_and_skip_the_authorize_hook(bpmn_dir: Path, database_url: str,
                                                                   clock: Clock) -> None:
    actions: list[str] = []

    def authorize(_request: Any, action: str) -> bool:
        actions.append(action)
        return False

    app = Quart(__name__)
    app.config.update(SPIFF_MESSAGES_BPMN_DIR=str(bpmn_dir), SPIFF_MESSAGES_DATABASE_URL=database_url,
                      SPIFF_MESSAGES_API_KEY="k1")
    SpiffMessages(app, clock=clock, authorize=authorize)
    async with app.test_app():
        client = app.test_client()
        assert (await client.get("/livez")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/v1.0/messages")).status_code == 401
        assert (await client.get("/v1.0/messages", headers={"SpiffWorkflow-Api-Key": "k1"})).status_code == 403
    assert actions == ["list_messages"]


async def test_probe_paths_move_and_switch_off(bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    app, _ = make_app(bpmn_dir, database_url, clock, SPIFF_MESSAGES_LIVENESS_PATH="ops/live",
                      SPIFF_MESSAGES_READINESS_PATH="")
    async with app.test_app():
        client = app.test_client()
        assert (await client.get("/ops/live")).status_code == 200
        assert (await client.get("/livez")).status_code == 404
        assert (await client.get("/readyz")).status_code == 404


async def test_not_ready_until_started(bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    app, _ = make_app(bpmn_dir, database_url, clock)
    client = app.test_client()  # before_serving has not run: no catalog, no store
    assert "not started" in (await assert_not_ready(client))["detail"]
    assert (await client.get("/livez")).status_code == 200


def test_probe_settings_are_checked(bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    with pytest.raises(ConfigError, match="must differ"):
        make_app(bpmn_dir, database_url, clock, SPIFF_MESSAGES_READINESS_PATH="/metrics")
    for bad in ("0", "-1", "nan", "soon"):
        with pytest.raises(ConfigError, match="READINESS_TIMEOUT_SECONDS"):
            make_app(bpmn_dir, database_url, clock, SPIFF_MESSAGES_READINESS_TIMEOUT_SECONDS=bad)


class Proxy:
    """A TCP proxy in front of the database that can be cut (listener and live connections) and put back."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.links):
            writer.transport.abort()
        await self.server.wait_closed()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.links -= {writer, up_writer}


async def test_ready_follows_a_lost_postgresql_connection(bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    """On PostgreSQL: the server's connections are cut under a running app, then the database comes back."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        pytest.skip("needs PostgreSQL (SPIFF_MESSAGES_TEST_DATABASE)")
    proxy = Proxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    app, _ = make_app(bpmn_dir, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False),
                      clock)
    async with app.test_app():
        client = app.test_client()
        assert (await client.get("/readyz")).status_code == 200
        await proxy.cut()
        await assert_not_ready(client)
        assert (await client.get("/livez")).status_code == 200
        await proxy.start()
        assert (await client.get("/readyz")).status_code == 200  # no restart needed
