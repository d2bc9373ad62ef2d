"""A worker killed while a service handler runs: once the claim's lease runs out (2 s here) the handler is called
again (at least once) and the instance completes."""

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
    monkeypatch.setenv("SPIFF_MESSAGES_SERVICE_LEASE_SECONDS", "2")
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
    assert mark.read_text().count("\n") == 2  # called again after the restart, once: at least once


COUNTING = '''
import os, time
from pathlib import Path

def fetch(call):
    with Path(os.environ["SERVICE_CALLS_LOG"]).open("a") as f:
        f.write(f"{call.process_instance_id} {call.task_guid} {os.getpid()}\\n")
    time.sleep(0.05)
    return {"status": "shipped"}

HANDLERS = {"http/GetRequestV2": fetch}
'''


def test_two_workers_call_each_handler_once(database_url: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Each waiting service task is claimed by one worker: 40 orders over 2 workers, 40 handler calls."""
    (tmp_path / "counting_handlers.py").write_text(COUNTING)
    calls = tmp_path / "calls.txt"
    calls.touch()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("SERVICE_CALLS_LOG", str(calls))
    monkeypatch.setenv("SPIFF_MESSAGES_SERVICE_HANDLERS", "counting_handlers:HANDLERS")
    server = start_server(CASES / "services", database_url, 2, tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(40):
                assert http.post("/messages/svc_order_placed", json={"order_id": f"T-{i}"}).status_code == 200
            deadline, total = time.monotonic() + 30, 0
            while time.monotonic() < deadline:
                page = http.get("/process-instances", params={"status": "complete", "per_page": 1}).json()
                total = page["pagination"]["total"]
                if total == 40:
                    break
                time.sleep(0.1)
            assert total == 40
    finally:
        server.stop()
    lines = calls.read_text().splitlines()
    tasks = [tuple(line.split()[:2]) for line in lines]
    assert len(tasks) == 40 and len(set(tasks)) == 40, lines
