"""A real ``spiff-messages serve`` process for tests that need HTTP over loopback and several workers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_pids(server_pid: int) -> list[int]:
    """Hypercorn's spawned workers among the children of ``serve`` (not multiprocessing's resource tracker)."""
    pids = []
    for task in os.listdir(f"/proc/{server_pid}/task"):
        with open(f"/proc/{server_pid}/task/{task}/children") as f:
            for pid in map(int, f.read().split()):
                with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                    if b"spawn_main" in cmd.read():
                        pids.append(pid)
    return sorted(pids)


class Server:
    def __init__(self, bpmn_dir: Path, database_url: str, workers: int = 1, log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1.0"
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "quart_spiff_messages", "serve", "--bpmn-dir", str(bpmn_dir),
               "--database-url", database_url, "--port", str(self.port), "--workers", str(workers)]
        out = open(log, "wb") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self._log_text()}")
            try:
                if httpx.get(f"{self.url}/message-models", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout}s: {self._log_text()}")

    def _log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log and self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


def start_server(bpmn_dir: Path, database_url: str, workers: int, log: Path, wait_seconds: float = 60.0) -> Server:
    """``spiff-messages serve``, once every worker has started: a worker logs "Running on" after its start-up."""
    srv = Server(bpmn_dir, database_url, workers=workers, log=log)
    try:
        srv.wait_ready(wait_seconds)
        deadline = time.monotonic() + wait_seconds
        while (started := log.read_text(errors="replace").count("Running on")) < workers:
            if srv.proc.poll() is not None or time.monotonic() > deadline:
                state = "still running" if srv.proc.poll() is None else f"exited with {srv.proc.returncode}"
                raise RuntimeError(f"{workers - started} of {workers} workers did not start (the server "
                                   f"{state}); {log}:\n{srv._log_text()}")
            time.sleep(0.1)
    except BaseException:
        srv.stop()
        raise
    return srv


@contextlib.contextmanager
def serving(bpmn_dir: Path, database_url: str, log: Path, workers: int = 1) -> Iterator[Server]:
    """A started server (every worker up) for the ``with`` block, stopped after it."""
    srv = start_server(bpmn_dir, database_url, workers, log)
    try:
        yield srv
    finally:
        srv.stop()
