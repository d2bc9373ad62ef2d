"""A worker killed while a service handler runs: after the restart the handler is called again (at least once)
and the instance completes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from quart_spiff_messages.testing import start_server

from .conftest import CASES

HANDLERS = '''
import os, signal
from pathlib import Path

def fetch(call):
    mark = Path(os.environ["SERVICE_CRASH_MARK"])
    with mark.open("a") as f:
        f.write(f"{os.getpid()} {call.attempt}\\n")
    if len(mark.read_text().splitlines()) == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # the first call dies before its result is applied
    return {"status": "shipped"}

HANDLERS = {"http/GetRequestV2": fetch}
'''


def test_sigkill_before_the_result_calls_the_handler_again_after_restart(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "crash_handlers.py").write_text(HANDLERS)
    mark = tmp_path / "calls.txt"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("SERVICE_CRASH_MARK", str(mark))
    monkeypatch.setenv("SPIFF_MESSAGES_SERVICE_HANDLERS", "crash_handlers:HANDLERS")
    server = start_server(CASES / "services", database_url, 1, tmp_path / "serve-1.log")
    try:
        try:
            httpx.post(f"{server.url}/messages/svc_order_placed", json={"order_id": "K-1"}, timeout=10)
        except httpx.HTTPError:
            pass  # the worker may die before the answer is written: the delivery was committed before the call
        deadline = time.monotonic() + 30
        while server.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # Hypercorn stops when its worker dies
    finally:
        server.stop()
    assert mark.read_text().count("\n") == 1

    server = start_server(CASES / "services", database_url, 1, tmp_path / "serve-2.log")
    try:
        deadline, shown = time.monotonic() + 30, {}
        while time.monotonic() < deadline:
            [shown] = httpx.get(f"{server.url}/process-instances").json()["results"]
            if shown["status"] != "waiting":
                break
            time.sleep(0.1)
        assert shown["status"] == "complete", shown
        detail = httpx.get(f"{server.url}/process-instances/{shown['id']}").json()["process_instance"]
        assert detail["data"]["shipped"] is True
    finally:
        server.stop()
    assert mark.read_text().count("\n") == 2  # called again after the restart: at least once
