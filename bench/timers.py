"""Timers: delivery latency with 100,000 pending timers against none, and timers fired per second on 1 and 2 workers.

Delivery: two apps in this process, each on a database of its own, with the same waiting ``gateway`` instances
(tests/bpmn_cases/timers: an answer message against a PT1H timeout, so every delivery also removes a timer row);
one of them also holds N other instances waiting at timers (copies of one ``alarm`` instance, seeded straight into
the database). The timed deliveries alternate between the two in blocks of 10, so the machine's slow and fast
phases fall on both alike; each timed delivery is followed by an untimed start of a new gateway, so the counts
stay constant. The ratio of their p50s is the result.

Firing: M ``tick`` instances are made in-process on a clock an hour behind, so their timers are all due; then
``spiff-messages serve`` with 1 (then 2) workers starts on that database and fires them; the ``timer_fired``
events' timestamps (each written in its firing's transaction), first to last, give timers fired per second.

    python bench/timers.py                                   # SQLite files in a temporary folder
    python bench/timers.py --pg-url postgresql://postgres@127.0.0.1:5432/postgres --timers 100000 --fire 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import httpx
from sqlalchemy import Table, insert, select

from quart_spiff_messages import SpiffMessages
from quart_spiff_messages.clock import ManualClock
from quart_spiff_messages.pytest_plugin import make_spiff_app
from quart_spiff_messages.store import Store, Tx
from quart_spiff_messages.store.models import ProcessInstance, Timer
from quart_spiff_messages.testing import Server

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "tests" / "bpmn_cases" / "timers"
BLOCK = 10
INSTANCES = cast(Table, ProcessInstance.__table__)
TIMERS = cast(Table, Timer.__table__)


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def seed_timers(ext: SpiffMessages, database_url: str, count: int) -> None:
    """``count`` copies of one alarm instance (due in a day) with their timer rows, 5,000 per transaction."""
    template = (await ext.start_process("alarm", {"due": iso(time.time() + 86400)})).instance
    assert template is not None
    store = Store(database_url, time.time)
    try:
        def read(tx: Tx) -> tuple[dict[str, Any], dict[str, Any]]:
            inst = tx.conn.execute(select(INSTANCES).where(INSTANCES.c.id == template.id)).mappings().one()
            timer = tx.conn.execute(select(TIMERS).where(TIMERS.c.process_instance_id == template.id)
                                       ).mappings().one()
            return dict(inst), dict(timer)

        inst, timer = await store.read(read)
        inst.pop("id")
        timer.pop("id")
        for at in range(0, count, 5000):
            n = min(5000, count - at)

            def write(tx: Tx, n: int = n) -> None:
                ids = tx.conn.execute(insert(INSTANCES).returning(INSTANCES.c.id, sort_by_parameter_order=True),
                                         [dict(inst) for _ in range(n)]).scalars().all()
                tx.conn.execute(insert(TIMERS), [{**timer, "process_instance_id": i} for i in ids])

            await store.run(write)
    finally:
        await store.dispose()


async def delivery(database_urls: tuple[str, str], timers: int, requests: int, waiters: int) -> dict[str, Any]:
    apps = []
    for url in database_urls:
        ext = make_spiff_app(FOLDER, url, config={"SPIFF_MESSAGES_TIMER_INTERVAL_SECONDS": 0})
        assert ext.app is not None
        await ext.app.startup()
        apps.append(ext)
    try:
        t0 = time.perf_counter()
        await seed_timers(apps[1], database_urls[1], timers)
        seeded = time.perf_counter() - t0
        pools: list[list[str]] = [[], []]
        for side, ext in enumerate(apps):
            for i in range(waiters):
                order = f"W{side}-{i}"
                await ext.start_process("gateway", {"order_id": order, "timeout": "PT1H"})
                pools[side].append(order)
        latencies: list[list[float]] = [[], []]
        fresh = 0
        for block in range(requests // BLOCK * 2):
            side = block % 2
            ext = apps[side]
            for _ in range(BLOCK):
                order = pools[side].pop(0)
                started = time.perf_counter()
                outcome = await ext.send_message("gateway_answer", {"order_id": order})
                latencies[side].append(time.perf_counter() - started)
                assert outcome.kind == "delivered", outcome
                fresh += 1
                new = f"N{side}-{fresh}"
                await ext.start_process("gateway", {"order_id": new, "timeout": "PT1H"})
                pools[side].append(new)
        none, many = latencies
        return {"pending_timers": timers, "seed_seconds": round(seeded, 1), "requests": len(none),
                "p50_ms_none": round(pct(none, 0.5), 3), "p50_ms_pending": round(pct(many, 0.5), 3),
                "p95_ms_none": round(pct(none, 0.95), 3), "p95_ms_pending": round(pct(many, 0.95), 3),
                "mean_ms_none": round(statistics.mean(none) * 1000, 3),
                "mean_ms_pending": round(statistics.mean(many) * 1000, 3),
                "ratio_p50": round(pct(many, 0.5) / pct(none, 0.5), 3)}
    finally:
        for ext in apps:
            assert ext.app is not None
            await ext.app.shutdown()


async def firing(database_url: str, count: int, workers: int, folder: Path) -> dict[str, Any]:
    # made on a clock an hour behind: their PT1S timers were due long ago when the server starts
    ext = make_spiff_app(FOLDER, database_url, clock=ManualClock(time.time() - 3600),
                         config={"SPIFF_MESSAGES_TIMER_INTERVAL_SECONDS": 0})
    assert ext.app is not None
    async with ext.app.test_app():
        for _ in range(count):
            await ext.start_process("tick")
    server = Server(FOLDER, database_url, workers=workers, log=folder / f"fire-{workers}w.log")
    try:
        server.wait_ready(120)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            while True:
                page = (await http.get("/process-instances", params={"status": "complete", "per_page": 1})).json()
                if page["pagination"]["total"] >= count:
                    break
                await asyncio.sleep(0.05)
            # the feed's timestamps are the firing transactions' own: first to last is the firing alone
            fired, after = [], 0
            while True:
                page = (await http.get("/events", params={"after": after, "limit": 1000})).json()
                fired += [e["created_at_in_seconds"] for e in page["results"] if e["kind"] == "timer_fired"]
                if not page["results"]:
                    break
                after = page["next_after"]
    finally:
        server.stop()
    span = max(fired) - min(fired)
    return {"workers": workers, "timers": count, "fired": len(fired), "first_to_last_s": round(span, 2),
            "fired_per_s": round((len(fired) - 1) / span, 1) if span > 0 else None}


async def pg_database(admin: str, name: str, drop: bool = False) -> str:
    import asyncpg

    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = admin.rpartition("/")
    return f"{base}/{name}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timers", type=int, default=100_000, help="pending timers beside the deliveries")
    parser.add_argument("--requests", type=int, default=400, help="timed deliveries per side")
    parser.add_argument("--waiters", type=int, default=200, help="gateway instances waiting on each side")
    parser.add_argument("--fire", type=int, default=2000, help="due timers for the firing runs")
    parser.add_argument("--pg-url", help="administrative PostgreSQL URL: run on scratch databases there too")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M:%S")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        kinds = ["sqlite"] + (["postgresql"] if args.pg_url else [])
        for kind in kinds:
            tag = uuid.uuid4().hex[:8]

            async def db(n: str, kind: str = kind, tag: str = tag) -> str:
                if kind == "sqlite":
                    return f"sqlite:///{folder / f'{n}-{tag}.db'}"
                return await pg_database(args.pg_url, f"spiff_bench_timers_{tag}_{n}")

            got = await delivery((await db("none"), await db("pending")), args.timers, args.requests, args.waiters)
            print(kind, "delivery", json.dumps(got), flush=True)
            results[f"{kind}_delivery"] = got
            for workers in (1, 2):
                got = await firing(await db(f"fire{workers}"), args.fire, workers, folder)
                print(kind, "firing", json.dumps(got), flush=True)
                results[f"{kind}_firing_{workers}w"] = got
            if kind == "postgresql":
                for n in ("none", "pending", "fire1", "fire2"):
                    await pg_database(args.pg_url, f"spiff_bench_timers_{tag}_{n}", drop=True)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
