"""The project's performance benchmark (issue 5): the real ``spiff-messages serve`` driven over HTTP on loopback.

Latency scenarios, one sequential client, each server one worker on its own SQLite file in a temporary folder:

  engine floor       in-process Engine.load + deliver(payment_received) + run + dump of one waiting order_process
                     instance, reloaded from its dumped state every time (no HTTP, no database)
  http roundtrip     GET of an unknown path (404 from Quart, no database): the HTTP stack alone, for reference
  correlate W=...    payment_received into one of W waiting order_process instances (W = 100, 10,000, 100,000),
                     each W on a server of its own; after each timed delivery one new waiter is started over HTTP
                     (untimed), so W stays constant
  reject unknown     no_such_message: 400 message_not_accepted
  reject no match    payment_received for an order nobody waits for: 400 message_not_accepted
  start by message   order_received with a fresh order id: a new instance that waits for its payment

The latency scenarios run interleaved, in blocks of 10 requests taken in turn, so that the slow and fast phases of
a shared machine fall on all of them alike and the ratios between them hold. Throughput: 8 concurrent clients
deliver distinct payments to distinct waiters, against 1 and 2 workers (alternating in chunks of 250 messages), on
SQLite and, with --pg-url, on PostgreSQL. Then the peak memory (VmHWM) of each worker, and the project's goals with
PASS/FAIL. Waiters are inserted straight into the database while the servers run (copies of one instance the
server started; see bench/README.md): 100,000 of them over HTTP would take about a quarter of an hour.

    python bench/run.py --quick                        # W up to 10,000, 100 requests: a smoke run
    python bench/run.py --scale-out --pg-url postgresql://postgres@127.0.0.1:5432/postgres  # scale-out only
    python bench/run.py --pg-url postgresql://postgres@127.0.0.1:5432/postgres --output results.json

--scale-out runs only PostgreSQL throughput: 1 worker, 2 workers of one ``serve``, and 2 ``serve`` processes of 1
worker each on one database (the clients split between them), with the share of busy backends waiting for a lock
(pg_stat_activity sampled every 20 ms while the clients run).

--pg-url is an administrative URL: the benchmark creates scratch databases spiff_bench_<random>_<n>w on that
server for its PostgreSQL runs and drops them at the end. The code measured is the importable
quart_spiff_messages (the header prints where it comes from); PYTHONPATH=/some/checkout/plugin measures another.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.engine import make_url

import quart_spiff_messages
from quart_spiff_messages.catalog import Catalog
from quart_spiff_messages.correlation import expected_key_value
from quart_spiff_messages.engine import Engine
from quart_spiff_messages.names import parse_modified_name
from quart_spiff_messages.store import Store, Tx, db
from quart_spiff_messages.store.models import ProcessInstance, Subscription
from quart_spiff_messages.testing import Server, worker_pids

ROOT = Path(__file__).resolve().parent.parent

BPMN_DIR = ROOT / "bpmn_fixtures"
TEMPLATE_ID = "SEED-TEMPLATE"
SEED_CHUNK = 5_000  # rows per executemany (and per transaction) when seeding waiters
WAITER_COUNTS = (100, 10_000, 100_000)
WARMUP = 20  # untimed requests per scenario before timing
BLOCK = 10  # latency scenarios take turns in blocks of this many timed requests
CHUNK = 250  # throughput runs against 1 and 2 workers alternate in chunks of this many messages

INSTANCES = cast(Table, ProcessInstance.__table__)
SUBSCRIPTIONS = cast(Table, Subscription.__table__)


def say(line: str = "") -> None:
    print(line, flush=True)


# -- results -------------------------------------------------------------------------------------------------------
@dataclass
class Stat:
    """One scenario: latencies of its timed requests, the answers it got and its rate."""

    name: str
    n: int
    p50_ms: float
    p95_ms: float
    msgs_per_s: float
    elapsed_s: float
    statuses: dict[str, int] = field(default_factory=dict)
    unexpected: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        out = (f"{self.name:<36} n={self.n:<5} p50 {self.p50_ms:7.2f} ms  p95 {self.p95_ms:7.2f} ms  "
               f"{self.msgs_per_s:7.1f} msgs/s")
        if self.statuses:
            out += "  [" + " ".join(f"{k}x{v}" for k, v in sorted(self.statuses.items())) + "]"
        if self.unexpected:
            out += f"  UNEXPECTED {self.unexpected}"
        return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(q * len(ordered) + 0.999999)))
    return ordered[rank - 1]


def make_stat(name: str, latencies: list[float], elapsed: float, statuses: Counter[str] | None = None,
              unexpected: int = 0, **extra: Any) -> Stat:
    return Stat(name=name, n=len(latencies), p50_ms=round(statistics.median(latencies) * 1000, 3),
                p95_ms=round(percentile(latencies, 0.95) * 1000, 3),
                msgs_per_s=round(len(latencies) / elapsed, 1) if elapsed else 0.0, elapsed_s=round(elapsed, 3),
                statuses=dict(statuses or {}), unexpected=unexpected, extra=extra)


# -- machine -------------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def code_state() -> str:
    """Where the measured package comes from and, if from this checkout, whether plugin/ differs from HEAD."""
    package = Path(quart_spiff_messages.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "plugin"],
                               capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return f"package {package}"
    if package != ROOT / "plugin" / "quart_spiff_messages":
        return f"checkout at {head}; package imported from {package} (not this checkout's plugin/)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"{head}, plugin/ " + (f"with uncommitted changes: {', '.join(changed)}" if changed else "as committed")


def machine_info() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": os.uname().machine,
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "spiffworkflow": version("SpiffWorkflow"),
        "code": code_state(),
    }


# -- processes -----------------------------------------------------------------------------------------------------
def status_mb(pid: int, name: str) -> float:
    """A memory figure (VmHWM, VmRSS) of /proc/<pid>/status in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(name)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


ACCESS = re.compile(r'"[A-Z]+ \S+ [\d.]+" (\d{3}) ')
PROBLEM = re.compile(r"Traceback|\bERROR\b|\bWARNING\b|\bCRITICAL\b|Error\b")


def log_problems(log: Path) -> dict[str, int]:
    """5xx answers in a server's access log, and its error lines (tracebacks, ERROR, WARNING)."""
    found: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        m = ACCESS.search(line)
        if m and m.group(1).startswith("5"):
            found[f"HTTP {m.group(1)}"] += 1
        elif m is None and PROBLEM.search(line):
            found[line.strip()[:160]] += 1
    return dict(found)


# -- the database: waiters seeded in bulk --------------------------------------------------------------------------
class Seeder:
    """Inserts copies of one waiting order_process instance (and its subscription row) straight into the database."""

    def __init__(self, database_url: str) -> None:
        self.store = Store(database_url, time.time)  # the package's own transactions, on either database
        self.instance: dict[str, Any] | None = None
        self.subscription: dict[str, Any] | None = None

    async def read_template(self, instance_id: int) -> None:
        def read(tx: Tx) -> tuple[Any, Any]:
            inst = tx.conn.execute(select(INSTANCES).where(INSTANCES.c.id == instance_id)).mappings().one()
            subs = tx.conn.execute(
                select(SUBSCRIPTIONS).where(SUBSCRIPTIONS.c.process_instance_id == instance_id)).mappings().all()
            return inst, subs

        inst, subs = await self.store.read(read)
        if len(subs) != 1:
            raise RuntimeError(f"the template instance has {len(subs)} subscriptions, expected 1")
        sub = dict(subs[0])
        kv = expected_key_value("order_key", {"order_id": TEMPLATE_ID})
        want = {"message_name": "payment_received", "group_path": "/", "key_name": "order_key",
                "values_json": kv.canonical, "values_digest": kv.digest}
        if any(sub[k] != v for k, v in want.items()) or inst["status"] != "waiting":
            raise RuntimeError(f"the template is not what the seeding expects: status {inst['status']}, {sub}")
        if TEMPLATE_ID not in inst["state"] or TEMPLATE_ID not in json.dumps(inst["correlations"]):
            raise RuntimeError("the template's state or correlations do not carry its order id")
        self.instance = dict(inst)
        self.subscription = sub

    async def seed(self, order_ids: list[str]) -> float:
        """One waiting instance per order id, SEED_CHUNK rows per executemany; returns the seconds it took."""
        if self.instance is None or self.subscription is None:
            raise RuntimeError("read_template first")
        # Every column of the template rows but the id (and nulls, left to the database), with the order id
        # replaced where it occurs: in the serialized state, the correlations and the subscription's key values.
        tpl = {k: v for k, v in self.instance.items() if k != "id" and v is not None}
        sub = {k: v for k, v in self.subscription.items() if k != "id" and v is not None}
        state, correlations = tpl["state"], json.dumps(tpl["correlations"])
        started = time.perf_counter()
        for at in range(0, len(order_ids), SEED_CHUNK):
            chunk = order_ids[at:at + SEED_CHUNK]
            now = time.time()
            rows = [{**tpl, "state": state.replace(TEMPLATE_ID, oid),
                     "correlations": json.loads(correlations.replace(TEMPLATE_ID, oid)),
                     "created_at": now, "updated_at": now} for oid in chunk]

            def write(tx: Tx, chunk: list[str] = chunk, rows: list[dict[str, Any]] = rows, now: float = now) -> None:
                stmt = insert(INSTANCES).returning(INSTANCES.c.id, sort_by_parameter_order=True)
                ids = tx.conn.execute(stmt, rows).scalars().all()
                subs = []
                for oid, instance_id in zip(chunk, ids, strict=True):
                    kv = expected_key_value("order_key", {"order_id": oid})
                    subs.append({**sub, "process_instance_id": instance_id, "values_digest": kv.digest,
                                 "values_json": kv.canonical, "created_at": now})
                # ids of the space messages and waits share (SQLite; None on PostgreSQL, where it is the default);
                # a baseline older than that space has no fresh_ids and takes the table's own
                fresh = getattr(tx, "fresh_ids", None)
                shared = fresh(len(subs)) if fresh is not None else None
                if shared is not None:
                    subs = [{**row, "id": i} for row, i in zip(subs, shared, strict=True)]
                tx.conn.execute(insert(SUBSCRIPTIONS), subs)

            await self.store.run(write)
        return time.perf_counter() - started

    async def waiting(self) -> int:
        stmt = select(func.count()).select_from(INSTANCES).where(INSTANCES.c.status == "waiting")
        return int(await self.store.read(lambda tx: tx.conn.execute(stmt).scalar_one()))

    async def dispose(self) -> None:
        await self.store.dispose()


# -- HTTP ----------------------------------------------------------------------------------------------------------
def instance_status(resp: httpx.Response) -> str | None:
    try:
        return str(resp.json()["process_instance"]["status"])
    except (ValueError, KeyError, TypeError):
        return None


def error_code(resp: httpx.Response) -> str | None:
    try:
        return str(resp.json().get("error_code"))
    except (ValueError, AttributeError):
        return None


def describe(resp: httpx.Response) -> str:
    return f"{resp.status_code} {resp.text[:300]}"


Check = Callable[[httpx.Response], bool]


def delivered(resp: httpx.Response) -> bool:
    return resp.status_code == 200 and instance_status(resp) == "complete"


def started(resp: httpx.Response) -> bool:
    return resp.status_code == 200 and instance_status(resp) == "waiting"


def not_accepted(resp: httpx.Response) -> bool:
    return resp.status_code == 400 and error_code(resp) == "message_not_accepted"


class Site:
    """One ``spiff-messages serve`` with its database, a keep-alive HTTP client and the order ids that wait there."""

    def __init__(self, name: str, database_url: str, workers: int, folder: Path,
                 loop: asyncio.AbstractEventLoop, processes: int = 1) -> None:
        self.name = name
        self.database_url = database_url
        self.workers = workers  # per serve process
        self.loop = loop
        stem = f"serve-{name.replace(' ', '-').replace('=', '').replace(',', '')}"
        self.logs = [folder / f"{stem}{f'-{i}' if i else ''}.log" for i in range(processes)]
        self.log = self.logs[0]
        self.servers = [Server(BPMN_DIR, database_url, workers=workers, log=log) for log in self.logs]
        self.server = self.servers[0]
        self.http: httpx.Client | None = None
        self.seeder: Seeder | None = None
        self.pool: list[str] = []  # order ids that wait for their payment
        self.fresh = 0
        self.rng = random.Random(5)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def urls(self) -> list[str]:
        return [srv.url for srv in self.servers]

    def ready(self, timeout: float = 120.0) -> None:
        """Wait until every worker has started (each logs "Running on"), then create the template instance."""
        for server, log in zip(self.servers, self.logs, strict=True):
            server.wait_ready(timeout)
            deadline = time.monotonic() + timeout
            while log.read_text(errors="replace").count("Running on") < self.workers:
                if server.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"not all {self.workers} workers of {self.name} started; see {log}")
                time.sleep(0.1)
        if len(self.pids()) != self.workers * len(self.servers):
            raise RuntimeError(f"{self.name}: expected {self.workers} worker processes, found {self.pids()}")
        self.http = httpx.Client(base_url=self.url, timeout=60)
        self.seeder = Seeder(self.database_url)
        _, resp = self.post("order_received", {"order_id": TEMPLATE_ID})
        if not started(resp):
            raise RuntimeError(f"{self.name}: the template instance did not start: {describe(resp)}")
        self.loop.run_until_complete(self.seeder.read_template(int(resp.json()["process_instance"]["id"])))
        self.pool.append(TEMPLATE_ID)

    def pids(self) -> list[int]:
        return [pid for srv in self.servers for pid in worker_pids(srv.proc.pid)]

    def post(self, name: str, payload: dict[str, Any]) -> tuple[float, httpx.Response]:
        assert self.http is not None
        t0 = time.perf_counter()
        resp = self.http.post(f"/messages/{name}", json=payload)
        return time.perf_counter() - t0, resp

    def new_id(self, kind: str) -> str:
        self.fresh += 1
        return f"{kind}-{self.fresh:07d}"

    def start_one(self) -> tuple[float, httpx.Response]:
        """A new waiter through the server: order_received with a fresh order id."""
        oid = self.new_id("S")
        dt, resp = self.post("order_received", {"order_id": oid})
        if started(resp):
            self.pool.append(oid)
        return dt, resp

    def fill(self, count: int) -> dict[str, Any]:
        """Seed waiters in the database until ``count`` wait; check that a seeded one takes its payment (200)."""
        assert self.seeder is not None
        missing = count - len(self.pool) + 1  # one more: the check completes one
        if missing <= 1:
            return {"seeded": 0}
        ids = [self.new_id("W") for _ in range(missing)]
        seconds = self.loop.run_until_complete(self.seeder.seed(ids))
        probe = ids[len(ids) // 2]
        _, resp = self.post("payment_received", {"order_id": probe, "amount": 1})
        if not delivered(resp):
            raise RuntimeError(f"{self.name}: a seeded waiter did not take its payment: {describe(resp)}")
        ids.remove(probe)
        self.pool += ids
        return {"seeded": missing, "seed_seconds": round(seconds, 2), "seed_rows_per_s": round(missing / seconds)}

    def waiting_in_db(self) -> int:
        assert self.seeder is not None
        return self.loop.run_until_complete(self.seeder.waiting())

    def take(self) -> str:
        """A random waiter, removed from the pool."""
        i = self.rng.randrange(len(self.pool))
        self.pool[i], self.pool[-1] = self.pool[-1], self.pool[i]
        return self.pool.pop()

    def stop(self) -> None:
        if self.http is not None:
            self.http.close()
        if self.seeder is not None:
            self.loop.run_until_complete(self.seeder.dispose())
        for server in self.servers:
            server.stop()


# -- latency scenarios ---------------------------------------------------------------------------------------------
Op = Callable[[], tuple[float, bool, str, str]]  # seconds, as expected, answer class, what to show if not


class Lane:
    """One latency scenario: an operation timed again and again, in turns with the other lanes."""

    def __init__(self, title: str, op: Op) -> None:
        self.title = title
        self.op = op
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.unexpected = 0
        self.extra: dict[str, Any] = {}

    def run(self, timed: bool) -> None:
        seconds, ok, answer, detail = self.op()
        if timed:
            self.latencies.append(seconds)
            self.statuses[answer] += 1
        if not ok:
            self.unexpected += timed
            if self.unexpected <= 3:
                say(f"  ! {self.title}{'' if timed else ' (warm-up)'}: unexpected answer {detail}")

    def stat(self) -> Stat:
        return make_stat(self.title, self.latencies, sum(self.latencies), self.statuses, self.unexpected,
                         **self.extra)


def floor_op() -> Op:
    """Engine.load + deliver + run + dump of one waiting order_process instance, reloaded from its dump each time."""
    catalog = Catalog.load(BPMN_DIR)
    start = catalog.start_points(parse_modified_name("order_received"))[0]
    entry = catalog.processes[start.process_key]
    engine = Engine()
    inst = engine.start_by_message(entry, start, {"order_id": "FLOOR-1"})
    if inst is not None:
        engine.run(inst)
    if inst is None or engine.status(inst) != "waiting":
        raise RuntimeError("the engine floor's order_process instance does not wait for its payment")
    state = engine.dump(inst)
    task_id = engine.waits(inst)[0].task_id  # what the subscription index hands the core
    payload = {"order_id": "FLOOR-1", "amount": 1}

    def op() -> tuple[float, bool, str, str]:
        t0 = time.perf_counter()
        loaded = engine.load(state, entry)
        ok = engine.deliver(loaded, task_id, "payment_received", payload)
        engine.run(loaded)
        engine.dump(loaded)
        seconds = time.perf_counter() - t0
        ok = ok and engine.status(loaded) == "complete"
        return seconds, ok, "complete" if ok else "not delivered", "the delivery did not complete the instance"

    return op


def roundtrip_op(site: Site) -> Op:
    def op() -> tuple[float, bool, str, str]:
        assert site.http is not None
        t0 = time.perf_counter()
        resp = site.http.get("/no-such-path")
        seconds = time.perf_counter() - t0
        return seconds, resp.status_code == 404, str(resp.status_code), describe(resp)

    return op


def message_op(site: Site, name: str, payload: Callable[[], dict[str, Any]], check: Check) -> Op:
    def op() -> tuple[float, bool, str, str]:
        seconds, resp = site.post(name, payload())
        return seconds, check(resp), str(resp.status_code), describe(resp)

    return op


def correlate_op(site: Site) -> Op:
    """payment_received to a random waiter (timed), then one new waiter started over HTTP (untimed)."""

    def op() -> tuple[float, bool, str, str]:
        seconds, resp = site.post("payment_received", {"order_id": site.take(), "amount": 1})
        _, again = site.start_one()
        if not started(again):
            say(f"  ! {site.name}: a new waiter did not start: {describe(again)}")
        return seconds, delivered(resp), str(resp.status_code), describe(resp)

    return op


def take_turns(lanes: list[Lane], n: int, rng: random.Random) -> None:
    """WARMUP untimed operations per lane, then ``n`` timed ones each, in blocks of BLOCK, lanes in shuffled turns."""
    for lane in lanes:
        for _ in range(WARMUP):
            lane.run(timed=False)
    done = 0
    while done < n:
        k = min(BLOCK, n - done)
        for lane in rng.sample(lanes, len(lanes)):
            for _ in range(k):
                lane.run(timed=True)
        done += k


# -- throughput ----------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """What the chunks of one throughput configuration added up to."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    unexpected: int = 0
    elapsed: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0


async def deliver_all(url: str | list[str], order_ids: list[str], clients: int, run: Run | None) -> None:
    """One payment to each order id from ``clients`` clients at once, each with one keep-alive connection (to the
    servers of ``url`` in turn when it is a list)."""
    queue = list(reversed(order_ids))
    urls = [url] if isinstance(url, str) else url

    async def client(k: int) -> None:
        async with httpx.AsyncClient(base_url=urls[k % len(urls)], timeout=60,
                                     limits=httpx.Limits(max_connections=1)) as http:
            while queue:
                oid = queue.pop()
                t0 = time.perf_counter()
                try:
                    resp = await http.post("/messages/payment_received", json={"order_id": oid, "amount": 1})
                except httpx.HTTPError as exc:
                    if run is not None:
                        run.statuses["no answer"] += 1
                        run.unexpected += 1
                    say(f"  ! throughput: no answer: {exc!r}")
                    continue
                seconds = time.perf_counter() - t0
                ok = delivered(resp)
                if run is not None:
                    run.latencies.append(seconds)
                    run.statuses[str(resp.status_code)] += 1
                    run.unexpected += not ok
                if not ok and (run is None or run.unexpected <= 3):
                    say(f"  ! throughput: unexpected answer {describe(resp)}")

    await asyncio.gather(*(client(k) for k in range(clients)))


class LockSampler:
    """Samples pg_stat_activity of one database every ``interval`` s in a thread of its own while running: how many
    of its active backends wait for a lock (``wait_event_type = 'Lock'``: row, advisory and transaction-id locks)."""

    def __init__(self, database_url: str, interval: float = 0.02) -> None:
        self.url = make_url(database_url)
        self.interval = interval
        self.active = self.waiting = self.samples = 0
        self._running = False
        self._thread: Any = None

    async def _sample(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(host=self.url.host, port=self.url.port or 5432, user=self.url.username,
                                     password=self.url.password, database="postgres")
        try:
            while self._running:
                row = await conn.fetchrow(
                    "SELECT count(*) FILTER (WHERE state = 'active') AS active, "
                    "count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock') AS waiting "
                    "FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", self.url.database)
                self.active += int(row["active"])
                self.waiting += int(row["waiting"])
                self.samples += 1
                await asyncio.sleep(self.interval)
        finally:
            await conn.close()

    def __enter__(self) -> LockSampler:
        import threading

        self._running = True
        self._thread = threading.Thread(target=lambda: asyncio.run(self._sample()), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._running = False
        self._thread.join(5)

    @property
    def share(self) -> float | None:
        """Of the backends found busy, the share waiting for a lock."""
        return self.waiting / self.active if self.active else None


def throughput(label: str, sites: list[Site], n: int, clients: int) -> list[Stat]:
    """``n`` payments per site from ``clients`` concurrent clients; the sites take turns in chunks of CHUNK."""
    loop = sites[0].loop
    warm = clients * 5
    ids: dict[str, list[str]] = {}
    for site in sites:
        site.fill(n + warm + 1)
        site.pool.remove(TEMPLATE_ID)
        ids[site.name] = site.pool[: n + warm]
        loop.run_until_complete(deliver_all(site.urls, ids[site.name][:warm], clients, None))
    runs = {site.name: Run() for site in sites}
    samplers = {site.name: LockSampler(site.database_url) for site in sites
                if make_url(site.database_url).get_backend_name().startswith("postgres")}
    for at in range(warm, warm + n, CHUNK):
        for site in sites:
            run, pids = runs[site.name], site.pids()
            cpu0, client0, t0 = cpu_seconds(pids), time.process_time(), time.perf_counter()
            sampler = samplers.get(site.name)
            with sampler if sampler is not None else contextlib.nullcontext():
                loop.run_until_complete(deliver_all(site.urls, ids[site.name][at:min(at + CHUNK, warm + n)],
                                                    clients, run))
            run.elapsed += time.perf_counter() - t0
            run.server_cpu += cpu_seconds(pids) - cpu0
            run.client_cpu += time.process_time() - client0
    out = []
    for site in sites:
        run = runs[site.name]
        sampler = samplers.get(site.name)
        share = sampler.share if sampler is not None else None
        shape = f"{len(site.servers)}x{site.workers}w" if len(site.servers) > 1 else f"{site.workers}w"
        out.append(make_stat(f"throughput {site.name}, {clients} clients", run.latencies, run.elapsed,
                             run.statuses, run.unexpected, workers=site.workers * len(site.servers), site=site.name,
                             shape=shape, lock_wait_share=None if share is None else round(share, 3),
                             server_cpu_ms_per_msg=round(run.server_cpu / max(1, len(run.latencies)) * 1000, 2),
                             client_cpu_share=round(run.client_cpu / run.elapsed, 2)))
    return out


# -- PostgreSQL scratch databases ----------------------------------------------------------------------------------
class Scratch:
    """Databases of this run on the --pg-url server, dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.prefix = f"spiff_bench_{secrets.token_hex(4)}"
        self.names: list[str] = []

    async def create(self, suffix: str) -> str:
        name = f"{self.prefix}_{suffix}"
        engine = db.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            await engine.dispose()
        self.names.append(name)
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    async def drop_all(self) -> None:
        engine = db.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                for name in self.names:
                    await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            await engine.dispose()


# -- goals ---------------------------------------------------------------------------------------------------------
@dataclass
class Goal:
    goal: str
    measured: str
    ratio: float | None
    limit: float
    passed: bool | None  # None: not measured in this run
    note: str = ""

    def line(self) -> str:
        verdict = "n/a " if self.passed is None else ("PASS" if self.passed else "FAIL")
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}"
        note = f"  ({self.note})" if self.note else ""
        return f"{verdict}  {self.goal:<56} {ratio:>6}  {self.measured}{note}"


def ratio_goal(goal: str, num: float, den: float, limit: float, at_most: bool, measured: str,
               note: str = "") -> Goal:
    ratio = num / den
    return Goal(goal, measured, round(ratio, 3), limit, ratio <= limit if at_most else ratio >= limit, note)


def goals(stats: dict[str, Stat], largest: int, memory: dict[str, float], tput: dict[str, Stat]) -> list[Goal]:
    floor, small, big = stats["engine floor"], stats["correlate W=100"], stats[f"correlate W={largest:,}"]
    rt = stats["http roundtrip (404, no database)"]
    short = "" if largest == 100_000 else f"at W={largest:,}, not 100,000"
    out = [
        ratio_goal("correlate p50 W=100,000 <= 1.2 x W=100", big.p50_ms, small.p50_ms, 1.2, True,
                   f"{big.p50_ms:.2f} / {small.p50_ms:.2f} ms", short),
        ratio_goal("correlate p50 (HTTP, 1 worker, SQLite, W=100) <= 4 x floor", small.p50_ms, floor.p50_ms, 4.0,
                   True, f"{small.p50_ms:.2f} / {floor.p50_ms:.2f} ms"),
    ]
    for name in ("reject unknown name", "reject no match"):
        s = stats[name]
        out.append(ratio_goal(f"{name} p50 <= 2 x floor", s.p50_ms, floor.p50_ms, 2.0, True,
                              f"{s.p50_ms:.2f} / {floor.p50_ms:.2f} ms"))
    # issue 24: closer to the floor, measured in this run
    out.append(ratio_goal("correlate p50 (W=100) <= 404 round trip + 2 x floor", small.p50_ms,
                          rt.p50_ms + 2 * floor.p50_ms, 1.0, True,
                          f"{small.p50_ms:.2f} / ({rt.p50_ms:.2f} + 2 x {floor.p50_ms:.2f}) ms"))
    for name in ("reject unknown name", "reject no match"):
        s = stats[name]
        out.append(ratio_goal(f"{name} p50 <= 1.5 x 404 round trip", s.p50_ms, rt.p50_ms, 1.5, True,
                              f"{s.p50_ms:.2f} / {rt.p50_ms:.2f} ms"))
    for label, workers in (("sqlite", 1), ("postgresql", 2)):
        goal = f"throughput {label} {workers}w >= 2 x the baseline's, 8 clients"
        now, base = tput.get(f"{label} {workers}w"), tput.get(f"base {label} {workers}w")
        if now and base:
            out.append(ratio_goal(goal, now.msgs_per_s, base.msgs_per_s, 2.0, False,
                                  f"{now.msgs_per_s:.1f} / {base.msgs_per_s:.1f} msgs/s"))
        else:
            out.append(Goal(goal, "not measured", None, 2.0, None, "needs --baseline-plugin"
                            + ("" if label == "sqlite" else " and --pg-url")))
    goal = "PostgreSQL 2 workers >= 1.6 x 1 worker, 8 clients"
    one, two = tput.get("postgresql 1w"), tput.get("postgresql 2w")
    if one and two:
        out.append(ratio_goal(goal, two.msgs_per_s, one.msgs_per_s, 1.6, False,
                              f"{two.msgs_per_s:.1f} / {one.msgs_per_s:.1f} msgs/s"))
    else:
        out.append(Goal(goal, "not measured", None, 1.6, None, "needs --pg-url"))
    if memory:
        peak = max(memory.values())
        out.append(Goal("peak RSS per worker, 100,000 waiting <= 150 MB", f"VmHWM {peak:.1f} MB",
                        round(peak / 150, 3), 150, peak <= 150, short))
    return out


# -- main ----------------------------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: W up to 10,000, 100 requests, 500 per throughput run")
    parser.add_argument("--requests", type=int, default=None,
                        help="timed requests per latency scenario (default 300; engine floor iterations too)")
    parser.add_argument("--throughput-requests", type=int, default=None, help="requests per throughput run (2000)")
    parser.add_argument("--max-waiting", type=int, default=None, help="largest W (100000; 10000 with --quick)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of the throughput runs")
    parser.add_argument("--pg-url", default=None,
                        help="administrative PostgreSQL URL; scratch databases are created and dropped there")
    parser.add_argument("--output", type=Path, default=None, help="also write the results as JSON to this file")
    parser.add_argument("--baseline-plugin", type=Path, default=None,
                        help="the plugin/ folder of another version (e.g. a git archive of the base commit): its "
                             "servers run the throughput scenarios too, in turns with this code's, for the "
                             "throughput goals of issue 24")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (databases, server logs)")
    parser.add_argument("--scale-out", action="store_true",
                        help="only PostgreSQL throughput: 1 worker, 2 workers, 2 serve processes (needs --pg-url)")
    args = parser.parse_args()
    if args.scale_out and not args.pg_url:
        parser.error("--scale-out needs --pg-url")
    args.requests = args.requests or (100 if args.quick else 300)
    args.throughput_requests = args.throughput_requests or (500 if args.quick else 2000)
    args.max_waiting = args.max_waiting or (10_000 if args.quick else 100_000)
    if args.max_waiting < 100:
        parser.error("--max-waiting must be at least 100")
    if args.requests < 1 or args.clients < 1 or args.throughput_requests < args.clients:
        parser.error("--requests and --clients must be positive, --throughput-requests at least --clients")
    return args


def start_sites(specs: list[tuple[str, str, int, Path | None]], folder: Path, loop: asyncio.AbstractEventLoop,
                sites: list[Site], processes: dict[str, int] | None = None) -> list[Site]:
    """Start servers together, then wait for each; every started one goes into ``sites`` (stopped by the caller).

    A spec's last field: the plugin/ folder of another version to serve (None: this code)."""
    new = []
    for name, url, workers, plugin in specs:
        saved = os.environ.get("PYTHONPATH")
        if plugin is not None:  # the server (and its workers) import the baseline's quart_spiff_messages
            os.environ["PYTHONPATH"] = str(plugin)
        try:
            site = Site(name, url, workers, folder, loop, (processes or {}).get(name, 1))
        finally:
            if plugin is not None:
                if saved is None:
                    del os.environ["PYTHONPATH"]
                else:
                    os.environ["PYTHONPATH"] = saved
        sites.append(site)
        new.append(site)
    t0 = time.monotonic()
    for site in new:
        site.ready()
    say(f"{len(new)} servers ready in {time.monotonic() - t0:.1f}s: "
        + ", ".join(f"{s.name} ({s.workers}w)" for s in new))
    return new


def latency(args: argparse.Namespace, counts: list[int], folder: Path, loop: asyncio.AbstractEventLoop,
            problems: dict[str, dict[str, int]]) -> tuple[dict[str, Stat], dict[str, float]]:
    sites: list[Site] = []
    try:
        specs: list[tuple[str, str, int, Path | None]] = [("misc", f"sqlite:///{folder / 'misc.db'}", 1, None)]
        specs += [(f"W={w:,}", f"sqlite:///{folder / f'waiting-{w}.db'}", 1, None) for w in counts]
        misc, *by_w = start_sites(specs, folder, loop, sites)
        lanes = [Lane("engine floor", floor_op()), Lane("http roundtrip (404, no database)", roundtrip_op(misc))]
        for count, site in zip(counts, by_w, strict=True):
            info = site.fill(count)
            lane = Lane(f"correlate W={count:,}", correlate_op(site))
            lane.extra = {"waiting_before": site.waiting_in_db(), **info}
            if info["seeded"]:
                say(f"seeded {info['seeded']:,} waiters for W={count:,} in {info['seed_seconds']} s "
                    f"({info['seed_rows_per_s']:,} rows/s); {lane.extra['waiting_before']:,} wait")
            lanes.append(lane)
        lanes.append(Lane("reject unknown name", message_op(
            misc, "no_such_message", lambda: {"order_id": misc.new_id("X")}, not_accepted)))
        lanes.append(Lane("reject no match", message_op(
            misc, "payment_received", lambda: {"order_id": misc.new_id("NOBODY"), "amount": 1}, not_accepted)))
        lanes.append(Lane("start by message", message_op(
            misc, "order_received", lambda: {"order_id": misc.new_id("S")}, started)))
        t0 = time.monotonic()
        take_turns(lanes, args.requests, random.Random(7))
        say(f"latency scenarios: {args.requests} timed requests each, interleaved, in {time.monotonic() - t0:.0f}s")
        for lane, site in zip(lanes[2:2 + len(counts)], by_w, strict=True):
            lane.extra["waiting_after"] = site.waiting_in_db()
            if lane.extra["waiting_after"] != lane.extra["waiting_before"]:
                say(f"  ! {lane.title}: {lane.extra['waiting_after']} wait now, "
                    f"{lane.extra['waiting_before']} before")
        stats = {lane.title: lane.stat() for lane in lanes}
        for s in stats.values():
            say(s.line())
        memory: dict[str, float] = {}
        for site in by_w:
            for pid in site.pids():
                memory[f"{site.name} worker {pid}"] = status_mb(pid, "VmHWM")
            peak = ", ".join(f"{status_mb(pid, 'VmHWM'):.1f}" for pid in site.pids())
            rss = ", ".join(f"{status_mb(pid, 'VmRSS'):.1f}" for pid in site.pids())
            parent = status_mb(site.server.proc.pid, "VmHWM")
            say(f"memory {site.name}: VmHWM {peak} MB per worker (VmRSS now {rss} MB; serve parent VmHWM "
                f"{parent:.1f} MB)")
        largest = by_w[-1]
        worst = {k: v for k, v in memory.items() if k.startswith(largest.name + " ")}
        for site in sites:
            if site.server.proc.poll() is not None:
                say(f"  ! {site.name}: the server exited with {site.server.proc.returncode}")
        return stats, worst
    finally:
        for site in sites:
            site.stop()
            problems[f"latency {site.name}"] = log_problems(site.log)


def scale_out(args: argparse.Namespace, folder: Path, loop: asyncio.AbstractEventLoop, scratch: Scratch,
              problems: dict[str, dict[str, int]]) -> int:
    """PostgreSQL throughput of 1 worker, 2 workers of one serve and 2 serve processes, taking turns in chunks,
    with the share of busy backends waiting for a lock."""
    specs: list[tuple[str, str, int, Path | None]] = [
        (f"postgresql {shape}", loop.run_until_complete(scratch.create(shape)), workers, None)
        for shape, workers in (("1w", 1), ("2w", 2), ("2x1w", 1))]
    sites: list[Site] = []
    tput: dict[str, Stat] = {}
    try:
        start_sites(specs, folder, loop, sites, processes={"postgresql 2x1w": 2})
        for s in throughput("postgresql", sites, args.throughput_requests, args.clients):
            tput[s.extra["shape"]] = s
            share = s.extra["lock_wait_share"]
            say(s.line() + f"  server CPU {s.extra['server_cpu_ms_per_msg']} ms/msg, lock waits "
                + ("n/a" if share is None else f"{share:.1%}") + " of busy backends")
        one = tput["1w"].msgs_per_s
        say(f"2 workers / 1 worker = {tput['2w'].msgs_per_s / one:.2f}; "
            f"2 serve processes / 1 = {tput['2x1w'].msgs_per_s / one:.2f}")
    finally:
        for site in sites:
            site.stop()
            for log in site.logs:
                problems[f"throughput {site.name} {log.name}"] = log_problems(log)
    for where, found in problems.items():
        say(f"server log, {where}: " + ("; ".join(f"{n} x {line}" for line, n in found.items()) if found
                                        else "no errors"))
    if args.output:
        args.output.write_text(json.dumps({"throughput": [asdict(s) for s in tput.values()]}, indent=2) + "\n")
    return 1 if any(s.unexpected for s in tput.values()) or any(problems.values()) else 0


def main() -> int:
    args = parse_args()
    began = time.monotonic()
    # The servers get their settings from the command line and the defaults only: no inherited API key, TTL...
    inherited = sorted(k for k in os.environ if k.startswith("SPIFF_MESSAGES_"))
    for name in inherited:
        del os.environ[name]
    info = machine_info()
    say(f"date     {info['date']}")
    say(f"machine  {info['machine']}, {info['cpu']}, {info['cpus']} CPUs")
    say(f"python   {info['python']}, SpiffWorkflow {info['spiffworkflow']}")
    say(f"code     {info['code']}")
    if inherited:
        say(f"ignored  {', '.join(inherited)} (the servers run with their defaults)")
    counts = [w for w in WAITER_COUNTS if w < args.max_waiting] + [args.max_waiting]
    say(f"settings {args.requests} timed requests per latency scenario, W in {', '.join(f'{w:,}' for w in counts)};"
        f" {args.throughput_requests} per throughput run, {args.clients} clients; "
        + ("SQLite and PostgreSQL" if args.pg_url else "SQLite only"))
    say()

    folder = Path(tempfile.mkdtemp(prefix="spiff-bench-"))
    loop = asyncio.new_event_loop()
    problems: dict[str, dict[str, int]] = {}
    tput: dict[str, Stat] = {}
    scratch = Scratch(args.pg_url) if args.pg_url else None
    try:
        if args.scale_out:
            assert scratch is not None
            return scale_out(args, folder, loop, scratch, problems)
        stats, memory = latency(args, counts, folder, loop, problems)

        say()
        for label in ("sqlite", "postgresql") if scratch is not None else ("sqlite",):
            specs: list[tuple[str, str, int, Path | None]] = []
            for code, plugin in [("", None), *([("base ", args.baseline_plugin)] if args.baseline_plugin else [])]:
                for workers in (1, 2):
                    if scratch is None or label == "sqlite":
                        url = f"sqlite:///{folder / f'throughput-{code.strip()}{workers}w.db'}"
                    else:
                        url = loop.run_until_complete(scratch.create(f"{code.strip()}{workers}w"))
                    specs.append((f"{code}{label} {workers}w", url, workers, plugin))
            sites: list[Site] = []
            try:
                start_sites(specs, folder, loop, sites)
                t0 = time.monotonic()
                for s in throughput(label, sites, args.throughput_requests, args.clients):
                    tput[s.extra["site"]] = s
                    say(s.line() + f"  server CPU {s.extra['server_cpu_ms_per_msg']} ms/msg, client CPU "
                        f"{s.extra['client_cpu_share']:.0%} of a core")
                one, two = tput[f"{label} 1w"], tput[f"{label} 2w"]
                say(f"{label}: 2 workers / 1 worker = {two.msgs_per_s / one.msgs_per_s:.2f} "
                    f"(runs alternating in chunks of {CHUNK}, {time.monotonic() - t0:.0f}s with seeding)")
                for workers in (1, 2) if args.baseline_plugin else ():
                    now, base = tput[f"{label} {workers}w"], tput[f"base {label} {workers}w"]
                    say(f"{label} {workers}w: this code / baseline = {now.msgs_per_s / base.msgs_per_s:.2f}")
                for site in sites:
                    if site.server.proc.poll() is not None:
                        say(f"  ! {site.name}: the server exited with {site.server.proc.returncode}")
            finally:
                for site in sites:
                    site.stop()
                    problems[f"throughput {site.name}"] = log_problems(site.log)

        say()
        say("goals")
        results = goals(stats, counts[-1], memory, tput)
        for g in results:
            say("  " + g.line())
        say()
        for where, found in problems.items():
            say(f"server log, {where}: "
                + ("; ".join(f"{n} x {line}" for line, n in found.items()) if found else "no errors"))
        elapsed = time.monotonic() - began
        say(f"done in {elapsed:.0f} s")
        if args.output:
            settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                        if k not in ("pg_url", "output")}
            args.output.write_text(json.dumps({
                "machine": info, "settings": {**settings, "postgresql": bool(args.pg_url)},
                "latency": [asdict(s) for s in stats.values()], "throughput": [asdict(s) for s in tput.values()],
                "memory_vmhwm_mb": memory, "goals": [asdict(g) for g in results],
                "server_log_problems": problems, "elapsed_seconds": round(elapsed),
            }, indent=2) + "\n")
            say(f"results written to {args.output}")
        unexpected = sum(s.unexpected for s in [*stats.values(), *tput.values()])
        return 1 if unexpected or any(problems.values()) else 0
    finally:
        if scratch is not None:
            loop.run_until_complete(scratch.drop_all())
        loop.close()
        if args.keep:
            say(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
