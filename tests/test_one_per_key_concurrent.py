"""One instance per correlation key under races: ``spiff-messages serve --workers 2`` and 50 starts at once.

Which start wins is for the database to decide (the unique index of ``spiff_active_key``, and on PostgreSQL the
correlation key's lock), never for timing: exactly one instance per key, every other start refused with the reason
naming that instance, or delivered to it where it waits; a start kept with a TTL while its key is held is never
left kept once the key is free. Runs on a SQLite file, or on PostgreSQL when ``SPIFF_MESSAGES_TEST_DATABASE`` is
set.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from quart_spiff_messages.races import Call, every_row, race, server_errors
from quart_spiff_messages.testing import invariant_violations, serving

from .conftest import CASES

STARTS = 50
KEYS = 5
CLIENTS = 25


def _post(name: str, payload: dict[str, Any]) -> Call:
    return Call("POST", f"/messages/{name}", json=payload)


async def _instances(url: str, process: str, keys: set[str], field: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        rows = await every_row(http, "/process-instances", process_id=process)
    return [r for r in rows if (r["correlations"].get(field) or {}).get(field.replace("_key", "_id")) in keys]


async def refused_but_one(url: str) -> list[str]:
    """50 ticket_opened at once, 10 for each of 5 ticket ids: one instance per ticket id, 45 refusals naming it."""
    failures = []
    tag = uuid.uuid4().hex[:6]
    tickets = [f"T-{tag}-{i % KEYS}" for i in range(STARTS)]
    done = await race(url, [[_post("ticket_opened", {"ticket_id": t, "n": i})] for i, t in enumerate(tickets)],
                      CLIENTS)
    replies = done.replies
    answers = Counter(r.label for r in replies)
    if answers != Counter({"200": KEYS, "400 message_not_accepted": STARTS - KEYS}):
        failures.append(f"{KEYS} starts and {STARTS - KEYS} refusals: {dict(answers)}\n"
                        + "\n".join(str(r) for r in replies if r.status not in (200, 400))[:3000])
    started = {r.call.json["ticket_id"]: r.instance.get("id") for r in replies  # type: ignore[index]
               if r.status == 200}
    if sorted(started) != sorted(set(tickets)):
        failures.append(f"one start per ticket id: {sorted(started)}")
    wrong = [str(r) for r in replies if r.status == 400 and (
        (r.body.get("reason") or {}).get("kind") != "instance_active"
        or r.body["reason"].get("process_instance_id") != started.get(r.call.json["ticket_id"]))]  # type: ignore[index]
    if wrong:
        failures.append(f"each refusal is instance_active naming its ticket's instance ({len(wrong)} are not):\n"
                        + "\n".join(wrong[:3]))
    rows = await _instances(url, "ticket_process", set(tickets), "ticket_key")
    if len(rows) != KEYS or {r["id"] for r in rows} != set(started.values()):
        failures.append(f"{KEYS} ticket_process instances, the started ones: {[(r['id'], r['status']) for r in rows]}")
    return failures


async def taken_in_turn(url: str) -> list[str]:
    """50 case_event at once for one case id: they alternate, a start then a delivery to that waiting instance, so
    25 instances each take exactly two, and none is refused."""
    failures = []
    case = f"C-{uuid.uuid4().hex[:6]}"
    done = await race(url, [[_post("case_event", {"case_id": case, "n": i})] for i in range(STARTS)], CLIENTS)
    replies = done.replies
    answers = Counter(r.label for r in replies)
    if answers != Counter({"200": STARTS}):
        failures.append(f"every case_event is 200: {dict(answers)}\n"
                        + "\n".join(str(r) for r in replies if r.status != 200)[:3000])
    per_instance = Counter(r.instance.get("id") for r in replies if r.status == 200)
    if set(per_instance.values()) != {2} or len(per_instance) != STARTS // 2:
        failures.append(f"{STARTS // 2} instances took two messages each: {dict(per_instance)}")
    rows = await _instances(url, "case_process", {case}, "case_key")
    statuses = Counter(r["status"] for r in rows)
    if statuses != Counter({"complete": STARTS // 2}):
        failures.append(f"{STARTS // 2} case_process instances, all complete: {dict(statuses)}")
    return failures


async def kept_until_released(url: str) -> list[str]:
    """For each of 25 open tickets, its ticket_closed and a new ticket_opened with a TTL sent at the same moment:
    the new one starts at once (the key was free) or is kept and started when the close releases the key; never
    kept with its key free."""
    failures = []
    tag = uuid.uuid4().hex[:6]
    tickets = [f"K-{tag}-{i}" for i in range(STARTS // 2)]
    opened = await race(url, [[_post("ticket_opened", {"ticket_id": t})] for t in tickets], CLIENTS)
    if Counter(r.label for r in opened.replies) != Counter({"200": len(tickets)}):
        failures.append(f"every first ticket_opened starts: {Counter(r.label for r in opened.replies)}")
    jobs = []
    for i, t in enumerate(tickets):
        again = Call("POST", "/messages/ticket_opened", json={"ticket_id": t, "again": True},
                     params={"time_to_live_in_seconds": 60, "message_instance_uuid": str(uuid.uuid4())})
        close = _post("ticket_closed", {"ticket_id": t})
        jobs.append([close, again] if i % 2 else [again, close])
    done = await race(url, jobs, 2 * CLIENTS)
    answers = Counter(r.label for r in done.replies)
    if set(answers) - {"200", "202"}:
        failures.append(f"every answer is 200 or 202: {dict(answers)}")
    await asyncio.sleep(1.0)  # a kept message is routed right after the close's commit
    rows = await _instances(url, "ticket_process", set(tickets), "ticket_key")
    statuses = Counter(r["status"] for r in rows)
    if statuses != Counter({"complete": len(tickets), "waiting": len(tickets)}):
        failures.append(f"each ticket's first instance complete and a second one waiting: {dict(statuses)}")
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        kept = await every_row(http, "/messages", name="ticket_opened", status="ready")
    ours = [r for r in kept if r["payload"].get("ticket_id") in set(tickets)]
    if ours:
        failures.append(f"no ticket_opened left kept: {ours[:3]}")
    return failures


@pytest.mark.parametrize("scenario", [refused_but_one, taken_in_turn, kept_until_released])
def test_fifty_concurrent_starts_on_two_workers(database_url: str, tmp_path: Path, scenario: Any) -> None:
    log = tmp_path / "serve.log"
    with serving(CASES / "one_per_key", database_url, log, workers=2) as server:
        failures = asyncio.run(scenario(server.url))
        alive = server.proc.poll() is None
    failures += [f"invariant: {v}" for v in asyncio.run(invariant_violations(database_url))]
    errors = server_errors(log)
    if errors:
        failures.append(f"no errors in the server log: {errors}")
    if not alive:
        failures.append("the server kept running")
    assert not failures, "\n".join(failures)
