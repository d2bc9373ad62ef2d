"""Where one delivery's time goes, in-process: a timer around each router, store and engine function.

    python bench/phases.py [--count 200] [--database-url sqlite:///x.db]

Inner functions are counted inside their callers too (``Router.route`` includes the store calls it makes).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quart import Quart

from quart_spiff_messages import SpiffMessages
from quart_spiff_messages import core as core_module
from quart_spiff_messages import engine as engine_module
from quart_spiff_messages import router as router_module
from quart_spiff_messages import store as store_module
from quart_spiff_messages.store import sqlite as sqlite_module

ROOT = Path(__file__).resolve().parent.parent
SPENT: collections.defaultdict[str, float] = collections.defaultdict(float)
WRITES: list[float] = []
TIMED = {
    engine_module.Engine: ["load", "deliver", "run", "dump", "waits", "drain", "task_data"],
    store_module.Tx: ["find_waiting_tasks", "lock_instance", "sync_subscriptions", "save_message", "add_message",
                      "ready_messages_for"],
    router_module.Router: ["route", "message_keys"],
    core_module.Core: ["apply", "_settle", "_received"],
    sqlite_module.SqliteStore: ["write_group"],
}


def writer_cpu() -> None:
    """CPU time of the writer thread's transactions: steadier than wall time on a shared machine."""
    original = sqlite_module.SqliteStore.write_group

    def write_group(self: Any, jobs: list[Any]) -> None:
        started = time.thread_time()
        try:
            original(self, jobs)
        finally:
            spent = time.thread_time() - started
            SPENT["writer thread CPU"] += spent
            WRITES.extend([spent / max(1, len(jobs))] * len(jobs))

    sqlite_module.SqliteStore.write_group = write_group  # type: ignore[method-assign]


def timed(cls: type, name: str) -> None:
    original: Callable[..., Any] = getattr(cls, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            SPENT[f"{cls.__name__}.{name}"] += time.perf_counter() - started

    setattr(cls, name, wrapper)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--cpu-only", action="store_true", help="time nothing but the writer thread's CPU")
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/phases.db"
    app = Quart(__name__)
    app.config.update(SPIFF_MESSAGES_BPMN_DIR=str(ROOT / "bpmn_fixtures"), SPIFF_MESSAGES_DATABASE_URL=url,
                      SPIFF_MESSAGES_SWEEP_INTERVAL_SECONDS=3600)
    ext = SpiffMessages(app)
    async with app.test_app():
        for i in range(args.count):
            await ext.send_message("order_received", {"order_id": f"p-{i}"})
        writer_cpu()
        if not args.cpu_only:
            for cls, names in TIMED.items():
                for name in names:
                    timed(cls, name)
        started = time.perf_counter()
        for i in range(args.count):
            await ext.send_message("payment_received", {"order_id": f"p-{i}", "amount": 1})
        total = (time.perf_counter() - started) / args.count * 1000
    print(f"one delivery, in-process: {total:.2f} ms; writer thread CPU per transaction, median "
          f"{statistics.median(WRITES) * 1000:.3f} ms")
    for name, seconds in sorted(SPENT.items(), key=lambda item: -item[1]):
        print(f"  {name:32s} {seconds / args.count * 1000:6.3f} ms")


if __name__ == "__main__":
    asyncio.run(main())
