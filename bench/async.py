"""Asynchronous execution against the synchronous path, in one run on one server (issue 24).

    python bench/async.py [--messages 2000] [--clients 8] [--workers 1] [--requests 200] [--pg-url URL]
                          [--routers K]

One ``spiff-messages serve`` (SQLite in a temporary folder, or a scratch PostgreSQL database with ``--pg-url``)
with waiting order_process instances seeded as ``run.py`` seeds them. Then, alternating in chunks of 250 messages:

  sync      ``--clients`` clients deliver distinct payments, each answered once its instance has moved (200)
  async     the same with ``execution_mode=asynchronous``: accepted/s counts until the last 202, routed/s until the
            queue is empty again (read in the database every 10 ms), both from the first request of the chunk

and, one sequential client, in turns of 10: the 404 round trip, a synchronous delivery and an asynchronous accept
(p50). Every chunk ends with every message of it completed (checked in the database). Goals (issue 24): accepted
at least 5 x sync, routed at least 2 x sync, accept p50 at most 1.5 x the 404 round trip.

``--routers K``: the workers the clients talk to do not route (``SPIFF_MESSAGES_ROUTE_QUEUED=0``) and K more
``serve`` processes of one worker on the same database route what they accepted (the deployment that keeps
routing off the workers facing clients). The run also measures the rate of 404s under the same clients: what the
HTTP stack alone serves, the ceiling of any accept.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from run import (  # the benchmark's own helpers (bench/run.py)
    BPMN_DIR,
    TEMPLATE_ID,
    Lane,
    Scratch,
    Site,
    Stat,
    code_state,
    describe,
    machine_info,
    make_stat,
    say,
    take_turns,
)
from sqlalchemy import func, select

from quart_spiff_messages.store import Tx
from quart_spiff_messages.store.statements import MESSAGES, QUEUE
from quart_spiff_messages.testing import Server, environment

CHUNK = 250
ASYNC = {"execution_mode": "asynchronous"}


async def send_all(url: str, order_ids: list[str], clients: int, mode: dict[str, str],
                   statuses: Counter[str]) -> float:
    """One payment per order id from ``clients`` keep-alive clients; seconds until the last answer."""
    queue = list(reversed(order_ids))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1)) as http:
            while queue:
                oid = queue.pop()
                resp = await http.post("/messages/payment_received", json={"order_id": oid, "amount": 1},
                                       params=mode)
                statuses[str(resp.status_code)] += 1
                if resp.status_code not in (200, 202):
                    say(f"  ! unexpected answer {describe(resp)}")

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - t0


async def get_all(url: str, count: int, clients: int) -> float:
    """``count`` GETs of an unknown path (404, no database) from ``clients`` keep-alive clients; seconds."""
    left = [count]

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1)) as http:
            while left[0] > 0:
                left[0] -= 1
                await http.get("/no-such-path")

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - t0


async def queued(site: Site) -> int:
    assert site.seeder is not None
    return int(await site.seeder.store.read(
        lambda tx: tx.conn.execute(select(func.count()).select_from(QUEUE)).scalar_one()))


async def not_completed(site: Site, order_ids: list[str]) -> int:
    """Payments of these orders that are not ``completed``."""
    assert site.seeder is not None
    wanted = set(order_ids)

    def read(tx: Tx) -> int:
        rows = tx.conn.execute(select(MESSAGES.c.payload, MESSAGES.c.status).where(
            MESSAGES.c.name == "payment_received", MESSAGES.c.message_type == "send"))
        return sum(1 for payload, status in rows if payload.get("order_id") in wanted and status != "completed")

    return await site.seeder.store.read(read)


async def async_chunk(site: Site, ids: list[str], clients: int, statuses: Counter[str]) -> tuple[float, float]:
    """(seconds until the last 202, seconds until the queue is empty), both from the first request."""
    t0 = time.perf_counter()
    accepted = await send_all(site.url, ids, clients, ASYNC, statuses)
    while await queued(site):  # another process's database: nothing to wait on but the rows  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return accepted, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000, help="messages per mode in the throughput runs")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per sequential scenario")
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--routers", type=int, default=0,
                        help="serve processes that route (the client-facing workers then do not)")
    args = parser.parse_args()
    info = machine_info()
    say(f"bench/async.py {info['date']} · {info['machine']} · {info['cpu']} · {code_state()}")
    folder = Path(tempfile.mkdtemp(prefix="spiff-async-"))
    loop = asyncio.new_event_loop()
    scratch = Scratch(args.pg_url) if args.pg_url else None
    url = loop.run_until_complete(scratch.create(f"{args.workers}w")) if scratch \
        else f"sqlite:///{folder / 'async.db'}"
    name = f"async {args.workers}w" + (f" + {args.routers} routing" if args.routers else "")
    with environment(SPIFF_MESSAGES_ROUTE_QUEUED="0" if args.routers else "1"):
        site = Site(name, url, args.workers, folder, loop)
    routers: list[Server] = []
    failed = False
    try:
        site.ready()
        with environment(SPIFF_MESSAGES_ROUTE_QUEUED="1"):
            routers = [Server(BPMN_DIR, url, workers=1, log=folder / f"router-{i}.log") for i in range(args.routers)]
        for router in routers:
            router.wait_ready(120)
        warm = args.clients * 5
        site.fill(2 * args.messages + 2 * warm + 3 * args.requests + 200)
        site.pool.remove(TEMPLATE_ID)
        rng = random.Random(7)
        rng.shuffle(site.pool)
        statuses: Counter[str] = Counter()
        loop.run_until_complete(send_all(site.url, [site.take() for _ in range(warm)], args.clients, {}, statuses))
        loop.run_until_complete(async_chunk(site, [site.take() for _ in range(warm)], args.clients, statuses))
        sync_s = accepted_s = routed_s = not_found_s = 0.0
        done, order_ids = 0, []
        while done < args.messages:
            k = min(CHUNK, args.messages - done)
            not_found_s += loop.run_until_complete(get_all(site.url, k, args.clients))
            for mode in rng.sample(["sync", "async"], 2):
                ids = [site.take() for _ in range(k)]
                order_ids += ids
                if mode == "sync":
                    sync_s += loop.run_until_complete(send_all(site.url, ids, args.clients, {}, statuses))
                else:
                    a, r = loop.run_until_complete(async_chunk(site, ids, args.clients, statuses))
                    accepted_s += a
                    routed_s += r
            done += k
        left = loop.run_until_complete(not_completed(site, order_ids))
        if left:
            say(f"  ! {left} payments are not completed")
            failed = True

        def post(mode: dict[str, str], want: int) -> tuple[float, bool, str, str]:
            assert site.http is not None
            t0 = time.perf_counter()
            resp = site.http.post("/messages/payment_received", json={"order_id": site.take(), "amount": 1},
                                  params=mode)
            return time.perf_counter() - t0, resp.status_code == want, str(resp.status_code), describe(resp)

        def roundtrip() -> tuple[float, bool, str, str]:
            assert site.http is not None
            t0 = time.perf_counter()
            resp = site.http.get("/no-such-path")
            return time.perf_counter() - t0, resp.status_code == 404, "404", describe(resp)

        lanes = [Lane("http roundtrip (404)", roundtrip), Lane("correlate, synchronous", lambda: post({}, 200)),
                 Lane("accept, asynchronous", lambda: post(ASYNC, 202))]
        take_turns(lanes, args.requests, rng)
        while loop.run_until_complete(queued(site)):
            time.sleep(0.05)
        stats: list[Stat] = [lane.stat() for lane in lanes]
        n = args.messages
        stats += [make_stat("throughput sync", [0.0] * n, sync_s), make_stat("throughput async accepted",
                                                                            [0.0] * n, accepted_s),
                  make_stat("throughput async routed", [0.0] * n, routed_s),
                  make_stat("throughput 404 (HTTP stack alone)", [0.0] * n, not_found_s)]
        say(f"\n{site.name}, {args.clients} clients, {n} messages per mode, answers {dict(statuses)} "
            f"(the machine is shared: read the ratios)")
        for stat in stats:
            say(("  " + stat.line()) if stat.name.startswith("throughput") is False else
                f"  {stat.name:<36} {stat.msgs_per_s:8.1f} msgs/s")
        by = {s.name: s for s in stats}
        sync = by["throughput sync"].msgs_per_s
        goals = [
            ("accepted >= 5 x sync throughput", by["throughput async accepted"].msgs_per_s / sync, 5.0),
            ("routed >= 2 x sync throughput", by["throughput async routed"].msgs_per_s / sync, 2.0),
        ]
        accept_ratio = by["accept, asynchronous"].p50_ms / by["http roundtrip (404)"].p50_ms
        for title, ratio, limit in goals:
            say(f"  {'PASS' if ratio >= limit else 'FAIL'}  {title}: {ratio:.2f}")
        say(f"  (the HTTP stack alone, 404s: {by['throughput 404 (HTTP stack alone)'].msgs_per_s / sync:.2f} x sync "
            "throughput: the ceiling of accepted / sync on this machine)")
        say(f"  {'PASS' if accept_ratio <= 1.5 else 'FAIL'}  accept p50 <= 1.5 x 404 round trip: {accept_ratio:.2f}")
    except BaseException:
        failed = True
        raise
    finally:
        site.stop()
        for router in routers:
            router.stop()
        if scratch is not None:
            loop.run_until_complete(scratch.drop_all())
        loop.close()
        if not failed:
            shutil.rmtree(folder, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
