"""``spiff-messages serve``: the real server, over loopback, with one and with two workers; its connection options."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart

from quart_spiff_messages import ConfigError, SpiffMessages
from quart_spiff_messages.testing import Server, free_port, serving, worker_pids

from .conftest import FIXTURES


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def server(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Iterator[Server]:
    with serving(FIXTURES, database_url, tmp_path / "serve.log", workers=request.param) as srv:
        yield srv


def test_serve_routes_messages_over_http(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        started = http.post("/messages/order_received", json={"order_id": "S-1", "total": 3})
        assert started.status_code == 200
        instance_id = started.json()["process_instance"]["id"]
        wrong = http.post("/messages/payment_received", json={"order_id": "S-2"})
        assert wrong.status_code == 400 and wrong.json()["error_code"] == "message_not_accepted"
        right = http.post("/messages/payment_received", json={"order_id": "S-1", "amount": 3})
        assert right.status_code == 200
        assert right.json()["process_instance"] == {**right.json()["process_instance"], "id": instance_id,
                                                    "status": "complete"}
        assert http.get("/openapi.json").status_code == 200


def test_serve_refuses_a_broken_folder(tmp_path: Path) -> None:
    srv = Server(Path(__file__).parent / "bpmn_broken" / "missing_message", "sqlite:///" + str(tmp_path / "x.db"),
                 log=tmp_path / "serve.log")
    try:
        assert srv.proc.wait(timeout=30) != 0
    finally:
        srv.stop()
    assert "missing.bpmn, line 11, element 'wait_missing'" in (tmp_path / "serve.log").read_text()


# -- connections: listen backlog, keep-alive and body timeouts (issue 16) ----------------------------------------
class TunedServer(Server):
    """``spiff-messages serve`` with extra options on its command line and extra environment variables."""

    def __init__(self, bpmn_dir: Path, database_url: str, log: Path, options: list[str],
                 environment: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1.0"
        self.database_url = database_url
        self.log = log
        cmd = [sys.executable, "-m", "quart_spiff_messages", "serve", "--bpmn-dir", str(bpmn_dir),
               "--database-url", database_url, "--port", str(self.port), *options]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1", **environment},
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


IDLE_CONNECTIONS = 1000
TUNED = {"BACKLOG": "2048", "KEEP_ALIVE_TIMEOUT_SECONDS": "1", "BODY_TIMEOUT_SECONDS": "1"}


@pytest.fixture(scope="module", params=["flags", "environment"])
def tuned(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TunedServer]:
    """One worker, tuned by command-line options or by SPIFF_MESSAGES_* variables (short timeouts: fast tests)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = IDLE_CONNECTIONS + 500
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs {wanted} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))  # the server inherits it
    folder = tmp_path_factory.mktemp(f"tuned-{request.param}")
    if request.param == "flags":
        options, environment = ["--backlog", "2048", "--keep-alive-timeout", "1", "--body-timeout", "1"], {}
    else:
        options, environment = [], {f"SPIFF_MESSAGES_{k}": v for k, v in TUNED.items()}
    srv = TunedServer(FIXTURES, f"sqlite:///{folder / 'm.db'}", folder / "serve.log", options, environment)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _status(reader: asyncio.StreamReader, timeout: float = 10) -> int:
    """The status code of the next answer on a connection (its headers read, the body left)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    return int(head.split(b" ", 2)[1])


def test_idle_connections_beyond_hypercorns_backlog_are_all_accepted(tuned: TunedServer) -> None:
    """While the worker is stopped, only the listen backlog holds connections: 1,000 fit in 2048 (not in 100).
    Once it runs again it takes every one of them and answers each."""

    async def scenario(worker: int) -> None:
        os.kill(worker, signal.SIGSTOP)
        try:
            opened = await asyncio.gather(
                *(asyncio.wait_for(asyncio.open_connection("127.0.0.1", tuned.port), 3)
                  for _ in range(IDLE_CONNECTIONS)), return_exceptions=True)
            connected = [c for c in opened if isinstance(c, tuple)]
            assert len(connected) == IDLE_CONNECTIONS, f"{len(connected)} of {IDLE_CONNECTIONS} connected"
            for _, writer in connected:  # queued in the kernel: read as soon as the worker accepts
                writer.write(b"GET /livez HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        finally:
            os.kill(worker, signal.SIGCONT)
        try:
            statuses = await asyncio.gather(*(_status(reader) for reader, _ in connected), return_exceptions=True)
            assert statuses == [200] * IDLE_CONNECTIONS
        finally:
            for _, writer in connected:
                writer.close()

    [worker] = worker_pids(tuned.proc.pid)
    asyncio.run(scenario(worker))


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(tuned: TunedServer) -> None:
    async def scenario() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", tuned.port)
        try:
            writer.write(b"GET /livez HTTP/1.1\r\nHost: test\r\n\r\n")
            assert await _status(reader) == 200
            answered = time.monotonic()
            while await asyncio.wait_for(reader.read(65536), 10):  # the rest of the answer, then the close
                pass
            return time.monotonic() - answered
        finally:
            writer.close()

    assert 0.8 < asyncio.run(scenario()) < 3  # 1 s, not Hypercorn's 5 s


def test_a_slow_body_is_cut_with_408_after_the_body_timeout(tuned: TunedServer) -> None:
    async def scenario() -> tuple[int, bytes, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", tuned.port)
        try:
            started = time.monotonic()
            writer.write(b"POST /v1.0/messages/order_received HTTP/1.1\r\nHost: test\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"order_id\": ")
            status = await _status(reader)
            elapsed = time.monotonic() - started
            return status, await asyncio.wait_for(reader.read(65536), 5), elapsed
        finally:
            writer.close()

    status, body, elapsed = asyncio.run(scenario())
    assert status == 408 and b'"error_code": "request_timeout"' in body
    assert 0.8 < elapsed < 4  # 1 s, not Quart's 60 s
    with httpx.Client(base_url=tuned.url, timeout=10) as http:  # nothing was written
        assert http.get("/messages").json()["pagination"]["total"] == 0


@pytest.mark.parametrize(("config", "expected"), [
    ({"SPIFF_MESSAGES_BODY_TIMEOUT_SECONDS": "2.5"}, 2.5),
    ({"BODY_TIMEOUT": 10}, 10),  # the host app's own: kept, the extension only sets it when asked
    ({}, 60),  # Quart's default, untouched
])
def test_body_timeout_is_the_apps_own_unless_set(tmp_path: Path, config: dict[str, Any], expected: float) -> None:
    app = Quart(__name__)
    app.config.update(SPIFF_MESSAGES_BPMN_DIR=str(FIXTURES), SPIFF_MESSAGES_DATABASE_URL=f"sqlite:///{tmp_path}/m.db",
                      **config)
    SpiffMessages(app)
    assert app.config["BODY_TIMEOUT"] == expected


@pytest.mark.parametrize("bad", ["0", "-1", "inf", "soon"])
def test_body_timeout_must_be_a_positive_number(tmp_path: Path, bad: str) -> None:
    app = Quart(__name__)
    app.config.update(SPIFF_MESSAGES_BPMN_DIR=str(FIXTURES), SPIFF_MESSAGES_BODY_TIMEOUT_SECONDS=bad)
    with pytest.raises(ConfigError, match="SPIFF_MESSAGES_BODY_TIMEOUT_SECONDS"):
        SpiffMessages(app)
