"""Where a worker's time goes over HTTP: py-spy samples of one worker, busy samples apart from idle ones.

    python bench/profile.py [--clients 1] [--messages 1500] [--database-url URL] [--out DIR]

It starts the real server (one worker), makes ``--messages`` orders wait, then delivers one payment to each from
``--clients`` keep-alive clients while ``py-spy record --idle --format raw`` samples the worker. A sample whose
innermost frame is a wait (``select``/``epoll``, a lock, a queue, a condition) is idle; the others are counted as
work, which includes a thread waiting for the GIL inside a call that released it. ``--gil`` samples only the thread
holding the GIL: Python's real work, without any waiting. The
report splits the work by where the innermost frame of our own interest lies (SQL driver, SQLAlchemy,
SpiffWorkflow, JSON, Quart/Hypercorn, asyncio's machinery, this package), and lists the heaviest frames.
``DIR/worker.txt`` keeps the raw (collapsed) stacks for a flame graph.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from quart_spiff_messages.testing import start_server, worker_pids

ROOT = Path(__file__).resolve().parent.parent
IDLE = ("select (selectors.py", "epoll", "_worker (concurrent/futures/thread.py", "wait (threading.py",
        "get (queue.py", "_wait_for_tstate_lock", "acquire", "poll (selectors.py", "sleep")
# (label, substrings of a frame "function (file:line)"), first match from the innermost frame outwards
KINDS = [
    ("sqlite3 / asyncpg (driver, commit)", ("sqlite3", "asyncpg", "do_execute (sqlalchemy", "do_commit")),
    ("SQLAlchemy (compile, result rows, session)", ("sqlalchemy/",)),
    ("JSON (dumps/loads)", ("json/", "orjson")),
    ("SpiffWorkflow (engine)", ("SpiffWorkflow/",)),
    ("writer hand-off (call_soon_threadsafe, futures)", ("call_soon_threadsafe", "_write_to_self",
                                                        "concurrent/futures/", "_chain_future",
                                                        "_copy_future_state", "_set_state")),
    ("Hypercorn / h11 (HTTP)", ("hypercorn/", "h11/", "h2/")),
    ("Quart / Werkzeug / quart-schema / pydantic", ("quart/", "werkzeug/", "quart_schema/", "pydantic",
                                                   "blinker/", "quart_cors/")),
    ("asyncio loop machinery", ("asyncio/",)),
    ("prometheus metrics", ("prometheus_client/",)),
    ("quart_spiff_messages (our code)", ("quart_spiff_messages/",)),
]


def classify(stack: list[str]) -> str:
    for frame in reversed(stack):
        for label, needles in KINDS:
            if any(n in frame for n in needles):
                return label
    return "other"


def is_idle(stack: list[str]) -> bool:
    leaf = stack[-1] if stack else ""
    return any(n in leaf for n in IDLE)


async def seed(url: str, ids: list[str]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for oid in ids:
            resp = await http.post("/messages/order_received", json={"order_id": oid})
            assert resp.status_code == 200, resp.text


async def deliver(url: str, ids: list[str], clients: int) -> float:
    queue = list(reversed(ids))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1)) as http:
            while queue:
                oid = queue.pop()
                resp = await http.post("/messages/payment_received", json={"order_id": oid, "amount": 1})
                assert resp.status_code == 200, resp.text

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary folder")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--gil", action="store_true",
                        help="sample only the thread holding the GIL (Python work; a thread waiting for the GIL "
                             "or for I/O is not counted)")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    folder = Path(tempfile.mkdtemp(prefix="spiff-profile-"))
    out = args.out or folder
    out.mkdir(parents=True, exist_ok=True)
    url = args.database_url or f"sqlite:///{folder / 'p.db'}"
    srv = start_server(ROOT / "bpmn_fixtures", url, 1, folder / "serve.log")
    try:
        ids = [f"P-{i}" for i in range(args.messages + 40)]
        asyncio.run(seed(srv.url, ids))
        asyncio.run(deliver(srv.url, ids[:40], args.clients))  # warm up
        pid = worker_pids(srv.proc.pid)[0]
        raw = out / "worker.txt"
        mode = ["--gil"] if args.gil else ["--idle"]
        spy = subprocess.Popen([py_spy, "record", *mode, "--threads", "--format", "raw", "--rate",
                                str(args.rate), "--pid", str(pid), "--output", str(raw), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        seconds = asyncio.run(deliver(srv.url, ids[40:], args.clients))
        spy.send_signal(2)
        spy.wait(30)
    finally:
        srv.stop()
    report(raw, args.messages, seconds, args.clients)
    return 0


def report(raw: Path, messages: int, seconds: float, clients: int) -> None:
    busy: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    idle = total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():  # a frame name with a line break in it
            continue
        count = int(count_text)
        stack = stack_text.split(";")
        total += count
        if is_idle(stack):
            idle += count
            continue
        busy[classify(stack)] += count
        leaves[stack[-1]] += count
    work = sum(busy.values())
    print(f"{messages} deliveries from {clients} client(s) in {seconds:.2f} s = {messages / seconds:.1f} msgs/s; "
          f"{total} samples over all threads, {idle} idle, {work} busy")
    for label, count in busy.most_common():
        print(f"  {count / work * 100:5.1f}%  {label}")
    print("heaviest innermost frames (busy):")
    for frame, count in leaves.most_common(15):
        print(f"  {count / work * 100:5.1f}%  {frame[:140]}")


if __name__ == "__main__":
    sys.exit(main())
