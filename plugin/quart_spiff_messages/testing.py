"""A testing aid: the real ``spiff-messages serve`` in a process of its own, for tests and benchmarks over HTTP.

The pytest plugin's fixtures run the app in the test's own event loop; some things are only seen through a real
server on loopback: several Hypercorn workers, signals, a crash and a restart, the metrics of every worker::

    from quart_spiff_messages.testing import serving

    def test_two_workers(tmp_path):
        with serving(Path("bpmn"), f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "serve.log", workers=2) as srv:
            httpx.post(f"{srv.url}/messages/order_received", json={"order_id": "A-1"})

``wait_ready`` polls with httpx, a test extra (``pip install quart-spiff-messages[test]``): it is imported there,
so this module imports without it. Worker processes are found through ``/proc`` (Linux).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Server", "environment", "free_port", "invariant_violations", "serving", "start_server", "worker_pids"]


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Environment variables for the servers (processes) started inside the block; restored after it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
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
    """``python -m quart_spiff_messages serve`` on a free port, in a session of its own so :meth:`stop` ends every
    worker with it. ``url`` is the API's base (``http://127.0.0.1:PORT/v1.0``); the output goes to ``log``."""

    def __init__(self, bpmn_dir: Path, database_url: str, workers: int = 1, log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1.0"
        self.database_url = database_url
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "quart_spiff_messages", "serve", "--bpmn-dir", str(bpmn_dir),
               "--database-url", database_url, "--port", str(self.port), "--workers", str(workers)]
        with open(log, "wb") if log else contextlib.nullcontext(subprocess.DEVNULL) as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the API answers (the first worker is up); fails early with the log when the server exits. A key in
        ``SPIFF_MESSAGES_API_KEY`` (the server's environment) is presented."""
        import httpx

        key = os.environ.get("SPIFF_MESSAGES_API_KEY", "").split(",")[0].strip()
        headers = {"SpiffWorkflow-Api-Key": key} if key else {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self._log_text()}")
            try:
                if httpx.get(f"{self.url}/message-models", timeout=1, headers=headers).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout}s: {self._log_text()}")

    def _log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log and self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 10 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
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


async def invariant_violations(database_url: str) -> list[str]:
    """What breaks the invariants in a database a server wrote (empty when they hold), read with the spec versions
    stored there: no instance waits with nothing to wait for, no message is left ``running``, every delivery has
    exactly one receive row. For a server's database once its requests are answered."""
    import time as clock

    from .catalog import Catalog
    from .core import Core
    from .engine import Engine
    from .reads import Reads
    from .store import Store

    store = Store(database_url, clock.time)
    try:
        return await Reads(store, Core(Catalog.empty(), Engine(), store)).invariant_violations()
    finally:
        await store.dispose()
