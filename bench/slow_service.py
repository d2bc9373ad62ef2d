"""Does a slow service handler delay other requests? (issue 13)

Starts the real server (one worker, SQLite, ``quart_spiff_messages.testing``) on the service-task fixtures with a
handler for ``http/GetRequestV2`` that sleeps (2 s by default). It sends ``--slow`` messages whose instances reach
that handler, then at once ``--messages`` concurrent messages that start other instances, and prints the latency
of the latter (p50/p95/max), and how long until every instance completed (each after its handler returned).

    python bench/slow_service.py [--messages 50] [--slow 10] [--sleep 2.0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from quart_spiff_messages.testing import start_server

ROOT = Path(__file__).resolve().parent.parent
BPMN = ROOT / "tests" / "bpmn_cases" / "services"
HANDLERS = '''
import asyncio, os

async def fetch(call):
    await asyncio.sleep(float(os.environ["BENCH_SERVICE_SLEEP"]))
    return {"status": "shipped"}

HANDLERS = {"http/GetRequestV2": fetch}
'''


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bench_handlers.py").write_text(HANDLERS)
        os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])
        os.environ["BENCH_SERVICE_SLEEP"] = str(args.sleep)
        os.environ["SPIFF_MESSAGES_SERVICE_HANDLERS"] = "bench_handlers:HANDLERS"
        server = start_server(BPMN, f"sqlite:///{folder / 'bench.db'}", 1, folder / "serve.log")
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                for _ in range(5):  # warm up the worker
                    await http.get("/message-models")
                t0 = time.perf_counter()
                await asyncio.gather(*(http.post("/messages/svc_order_placed", json={"order_id": f"SLOW-{i}"})
                                       for i in range(args.slow)))

                async def timed(i: int) -> float:
                    start = time.perf_counter()
                    resp = await http.post("/messages/svc_order_placed", json={"order_id": f"O-{i}"})
                    assert resp.status_code == 200, resp.text
                    return (time.perf_counter() - start) * 1000

                latencies = sorted(await asyncio.gather(*(timed(i) for i in range(args.messages))))
                sent_in = time.perf_counter() - t0
                total = args.slow + args.messages
                while True:
                    done = (await http.get("/process-instances", params={"status": "complete",
                                                                         "per_page": 1})).json()
                    if done["pagination"]["total"] == total:
                        break
                    await asyncio.sleep(0.05)
                all_done = time.perf_counter() - t0
        finally:
            server.stop()
    p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]
    print(f"{args.slow} instances at a {args.sleep:g} s handler, then {args.messages} concurrent messages "
          f"(each reaching the handler too), one worker, SQLite")
    print(f"  latency of the {args.messages}: p50 {statistics.median(latencies):.1f} ms, p95 {p95:.1f} ms, "
          f"max {latencies[-1]:.1f} ms (all sent within {sent_in:.2f} s)")
    print(f"  all {total} instances complete after {all_done:.2f} s")
    goal = p95 < 50
    print(f"  goal p95 < 50 ms: {'PASS' if goal else 'FAIL'}")
    return 0 if goal else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--slow", type=int, default=10)
    parser.add_argument("--sleep", type=float, default=2.0)
    sys.exit(asyncio.run(main(parser.parse_args())))
