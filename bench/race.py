"""The races of tests/test_concurrency.py against a real ``spiff-messages serve``, at counts of your choosing.

Starts the server (Hypercorn with --workers processes) on --database-url and runs, from --clients HTTP clients
that each keep one connection:

  one-receiver  --count identical correlated payment_received for one waiting order: exactly one 200
  same-uuid     --count first sends of one buffered message with one message_instance_uuid: one row, one answer
  distinct      --count order_received, then --count distinct payment_received: each delivered exactly once
  rendezvous    --count pairs of (buffered payment_received, order_received) sent together: each order completes

and prints, for each, the answers by status, the rows and instances it found, the seconds it took and every
guarantee it checked (the races are in quart_spiff_messages.races). The races compare totals with those before
them, so the database need not be empty; the rows they write stay (use a scratch database). Exits 1 when a guarantee
did not hold.

    python bench/race.py                                # SQLite file in a temporary folder, 2 workers
    createdb -h 127.0.0.1 -U postgres race
    python bench/race.py --database-url postgresql://postgres@127.0.0.1:5432/race --count 3000 --clients 32
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from quart_spiff_messages.races import Checks, distinct, log_excerpt, one_receiver, rendezvous, same_uuid
from quart_spiff_messages.testing import start_server

ROOT = Path(__file__).resolve().parent.parent

Race = Callable[..., Awaitable[Checks]]
RACES: dict[str, Race] = {"one-receiver": one_receiver, "same-uuid": same_uuid, "distinct": distinct,
                          "rendezvous": rendezvous}


def status_counts(checks: Checks) -> str:
    """Every answer of a race by class: 200, 202, 400, 409, other 4xx, 5xx, anything else, and requests that got
    no answer at all."""
    classes = {"200": 0, "202": 0, "400": 0, "409": 0, "4xx": 0, "5xx": 0, "other": 0, "no answer": 0}
    for reply in checks.replies:
        if reply.status == 0:
            classes["no answer"] += 1
        elif reply.status >= 500:
            classes["5xx"] += 1
        elif str(reply.status) in classes:
            classes[str(reply.status)] += 1
        else:
            classes["4xx" if reply.status >= 400 else "other"] += 1
    return "  ".join(f"{name}={n}" for name, n in classes.items())


async def run(url: str, names: list[str], clients: int, count: int) -> list[Checks]:
    done: list[Checks] = []
    for name in names:
        started = time.monotonic()
        checks = await RACES[name](url, clients=clients, count=count)
        checks.facts["elapsed_seconds"] = round(time.monotonic() - started, 2)
        checks.facts["status_counts"] = status_counts(checks)
        print(checks.report(), flush=True)
        done.append(checks)
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None,
                        help="sqlite:///file.db or postgresql://user@host/db (default: a SQLite file in a temporary "
                             "folder)")
    parser.add_argument("--workers", type=int, default=2, help="Hypercorn worker processes")
    parser.add_argument("--clients", type=int, default=16, help="HTTP clients sending at once (at least 2)")
    parser.add_argument("--count", type=int, default=1000, help="messages (or pairs) per race")
    parser.add_argument("--bpmn-dir", type=Path, default=ROOT / "bpmn_fixtures")
    parser.add_argument("--race", dest="races", action="append", choices=list(RACES),
                        help="run only this race (repeatable; default: all of them)")
    parser.add_argument("--log", type=Path, default=None, help="server log (default: in a temporary folder)")
    args = parser.parse_args()
    if args.clients < 2 or args.count < 1 or args.workers < 1:
        parser.error("--clients must be at least 2, --count and --workers at least 1")

    folder = Path(tempfile.mkdtemp(prefix="spiff-race-"))
    url = args.database_url or f"sqlite:///{folder / 'race.db'}"
    log = args.log or folder / "serve.log"
    print(f"serving {args.bpmn_dir} with {args.workers} workers on {url}; server log {log}", flush=True)
    t0 = time.monotonic()
    try:
        server = start_server(args.bpmn_dir, url, args.workers, log)
    except RuntimeError as exc:
        print(f"the server did not start: {exc}", file=sys.stderr)
        return 1
    print(f"server ready in {time.monotonic() - t0:.1f}s at {server.url}", flush=True)
    try:
        results = asyncio.run(run(server.url, args.races or list(RACES), args.clients, args.count))
    finally:
        exited = server.proc.poll()
        server.stop()
    errors = log_excerpt(server)
    print(f"server log {log}: " + (f"(count x line)\n{errors}" if errors else "no errors"))
    if exited is not None:
        print(f"the server exited with {exited} during the races")
    failed = [(checks.title, what) for checks in results for what in checks.failures]
    for title, what in failed:
        print(f"FAILED: {title}: {what}")
    print("all guarantees held" if not failed and exited is None else f"{len(failed)} guarantees did not hold")
    return 1 if failed or exited is not None else 0


if __name__ == "__main__":
    sys.exit(main())
