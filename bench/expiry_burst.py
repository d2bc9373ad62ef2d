"""A burst of expiries must not block delivery: 100,000 buffered messages expire at once while messages flow.

Seeds N expired ``ready`` messages straight into the database, then runs the expiry sweep (bounded batches, one
transaction each) while a client delivers ``payment_received`` messages to waiting ``order_process`` instances.
Prints the time to sweep and the delivery latency before and during the sweep.

    python bench/expiry_burst.py                       # SQLite file in a temporary folder
    python bench/expiry_burst.py --database-url postgresql://postgres@127.0.0.1:5432/test --count 100000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from quart import Quart
from sqlalchemy import insert

from quart_spiff_messages import SpiffMessages
from quart_spiff_messages.store.models import MessageInstance
from quart_spiff_messages.upkeep import SWEEP_BATCH

ROOT = Path(__file__).resolve().parent.parent


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def deliver(ext: SpiffMessages, prefix: str, n: int) -> list[float]:
    latencies = []
    for i in range(n):
        t0 = time.perf_counter()
        outcome = await ext.send_message("payment_received", {"order_id": f"{prefix}-{i}", "amount": 1})
        latencies.append(time.perf_counter() - t0)
        assert outcome.kind == "delivered", outcome
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--count", type=int, default=100_000, help="expired messages to sweep")
    parser.add_argument("--deliveries", type=int, default=200, help="deliveries measured before and during")
    parser.add_argument("--batch", type=int, default=SWEEP_BATCH)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    url = args.database_url or f"sqlite:///{tmp}/burst.db"

    app = Quart(__name__)
    app.config.update(SPIFF_MESSAGES_BPMN_DIR=str(ROOT / "bpmn_fixtures"), SPIFF_MESSAGES_DATABASE_URL=url,
                      SPIFF_MESSAGES_SWEEP_INTERVAL_SECONDS=3600)  # we run the sweep ourselves
    ext = SpiffMessages(app)
    async with app.test_app():
        store = ext.runtime.store
        for prefix in ("before", "during"):
            for i in range(args.deliveries):
                await ext.send_message("order_received", {"order_id": f"{prefix}-{i}"})
        now = time.time()
        rows = [{"name": "payment_received", "scope": "", "message_type": "send", "status": "ready",
                 "payload": {"order_id": f"gone-{i}"}, "message_instance_uuid": str(uuid.uuid4()),
                 "expires_at": now - 1, "created_at": now - 60, "updated_at": now - 60} for i in range(args.count)]
        t0 = time.perf_counter()
        for start in range(0, len(rows), 10_000):
            chunk = rows[start:start + 10_000]
            await store.write(lambda tx, chunk=chunk: tx.conn.execute(insert(MessageInstance), chunk))
        print(f"seeded {args.count} expired messages in {time.perf_counter() - t0:.1f}s on {store.dialect}")

        before = await deliver(ext, "before", args.deliveries)
        t0 = time.perf_counter()
        sweep = asyncio.create_task(ext.runtime.upkeep.sweep(batch=args.batch))
        during = await deliver(ext, "during", args.deliveries)
        sweep_done_during = sweep.done()
        expired, _ = await sweep
        swept = time.perf_counter() - t0
        print(f"swept {expired} expired messages in {swept:.2f}s ({expired / swept:,.0f}/s, batches of {args.batch})")
        print(f"delivery before the burst: p50 {pct(before, .5):.2f} ms  p95 {pct(before, .95):.2f} ms")
        print(f"delivery during the sweep: p50 {pct(during, .5):.2f} ms  p95 {pct(during, .95):.2f} ms  "
              f"(sweep still running when the last delivery ended: {not sweep_done_during})")
        print(f"p50 ratio during/before: {statistics.median(during) / statistics.median(before):.2f}")


if __name__ == "__main__":
    asyncio.run(main())
