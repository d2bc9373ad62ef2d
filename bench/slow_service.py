"""Does a slow service handler delay other requests? (issue 13)

Starts the real server (one worker, SQLite, ``quart_spiff_messages.testing``) on the service-task fixtures with a
handler for ``http/GetRequestV2`` that sleeps (2 s by default). First ``--slow`` messages start instances that
reach that handler; while the handlers sleep, ``--messages`` messages start other instances (which reach the
handler too, after their commit), sent by ``--clients`` concurrent clients. The same is measured with a handler that
does not sleep, on a server of its own, so the two runs differ only in the handler. Each line gives the latency of
the timed messages (p50/p95/max) and how long until every instance completed.

    python bench/slow_service.py [--messages 50] [--slow 10] [--sleep 2.0] [--clients 50 5]
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


async def measure(folder: Path, tag: str, args: argparse.Namespace, sleep: float, clients: int) -> dict[str, float]:
    os.environ["BENCH_SERVICE_SLEEP"] = str(sleep)
    server = start_server(BPMN, f"sqlite:///{folder / f'{tag}.db'}", 1, folder / f"{tag}.log")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            for _ in range(5):  # warm up the worker
                await http.get("/message-models")
            t0 = time.perf_counter()
            await asyncio.gather(*(http.post("/messages/svc_order_placed", json={"order_id": f"SLOW-{i}"})
                                   for i in range(args.slow)))
            queue = list(range(args.messages))
            latencies: list[float] = []

            async def client() -> None:
                while queue:
                    i = queue.pop()
                    start = time.perf_counter()
                    resp = await http.post("/messages/svc_order_placed", json={"order_id": f"O-{i}"})
                    assert resp.status_code == 200, resp.text
                    latencies.append((time.perf_counter() - start) * 1000)

            await asyncio.gather(*(client() for _ in range(clients)))
            sent_in = time.perf_counter() - t0
            total = args.slow + args.messages
            while True:
                done = (await http.get("/process-instances", params={"status": "complete", "per_page": 1})).json()
                if done["pagination"]["total"] == total:
                    break
                await asyncio.sleep(0.05)
            all_done = time.perf_counter() - t0
    finally:
        server.stop()
    latencies.sort()
    return {"p50": statistics.median(latencies), "p95": latencies[max(0, round(0.95 * len(latencies)) - 1)],
            "max": latencies[-1], "sent_in": sent_in, "all_done": all_done}


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bench_handlers.py").write_text(HANDLERS)
        os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])
        os.environ["SPIFF_MESSAGES_SERVICE_HANDLERS"] = "bench_handlers:HANDLERS"
        print(f"{args.slow} instances reach the handler, then {args.messages} messages start other instances "
              f"(each reaching the handler too), one worker, SQLite")
        ok = True
        for clients in args.clients:
            rows = {}
            for label, sleep in (("handler sleeps", args.sleep), ("handler returns at once", 0.0)):
                got = rows[label] = await measure(folder, f"c{clients}-{sleep:g}", args, sleep, clients)
                print(f"  {clients:3d} clients, {label:24s} p50 {got['p50']:6.1f} ms  p95 {got['p95']:6.1f} ms  "
                      f"max {got['max']:6.1f} ms  (sent within {got['sent_in']:.2f} s, all complete after "
                      f"{got['all_done']:.2f} s)")
            ratio = rows["handler sleeps"]["p95"] / rows["handler returns at once"]["p95"]
            print(f"      p95 with the sleeping handler / without: {ratio:.2f}")
            ok = ok and ratio <= 1.25
        print(f"  goal: the sleeping handler adds nothing to other requests (p95 ratio <= 1.25): "
              f"{'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--slow", type=int, default=10)
    parser.add_argument("--sleep", type=float, default=2.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 5])
    sys.exit(asyncio.run(main(parser.parse_args())))
