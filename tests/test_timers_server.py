"""Timers on the real server with two workers and the wall clock: they fire by themselves, once, and survive a kill.

Each test serves a BPMN folder with ``spiff-messages serve --workers 2`` on the suite's database (SQLite file or
PostgreSQL) and only talks HTTP to it. Waits poll with a deadline far above what they need (liveness, not speed:
the speed is measured in ``bench/timers.py``).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from quart_spiff_messages.clock import ManualClock
from quart_spiff_messages.pytest_plugin import make_spiff_app
from quart_spiff_messages.testing import invariant_violations, start_server, worker_pids

from .conftest import CASES

DEADLINE = 30.0


async def _until(what: Any, deadline: float = DEADLINE, pause: float = 0.1) -> Any:
    """Poll ``what()`` until it returns something true; fail after ``deadline`` seconds with its last value."""
    end = time.monotonic() + deadline
    while True:
        value = await what()
        if value or time.monotonic() > end:
            assert value, f"still {value!r} after {deadline} s"
            return value
        await asyncio.sleep(pause)


async def _instance(http: httpx.AsyncClient, instance_id: int) -> dict[str, Any]:
    found: dict[str, Any] = (await http.get(f"/process-instances/{instance_id}")).json()["process_instance"]
    return found


async def _complete(http: httpx.AsyncClient, instance_id: int) -> dict[str, Any] | None:
    shown = await _instance(http, instance_id)
    return shown if shown["status"] == "complete" else None


async def _start(http: httpx.AsyncClient, process: str, data: dict[str, Any]) -> int:
    resp = await http.post(f"/process-instances/{process}", json=data)
    assert resp.status_code == 201, resp.text
    return int(resp.json()["process_instance"]["id"])


async def _fired(http: httpx.AsyncClient) -> Counter[int]:
    """Instance id -> timer_fired events in the durable feed (written in the firing's own transaction)."""
    fired: Counter[int] = Counter()
    after = 0
    while True:
        page = (await http.get("/events", params={"after": after, "limit": 1000})).json()
        for event in page["results"]:
            if event["kind"] == "timer_fired":
                fired[event["process_instance_id"]] += 1
        if not page["results"]:
            return fired
        after = page["next_after"]


async def _branch(http: httpx.AsyncClient, instance_id: int, element_id: str) -> bool:
    resp = await http.get(f"/tasks/{instance_id}/{element_id}")
    return resp.status_code == 200 and resp.json()["state"] == "COMPLETED"


async def test_timers_fire_by_themselves_and_a_late_message_loses(database_url: str, tmp_path: Path) -> None:
    server = start_server(CASES / "timers", database_url, 2, tmp_path / "serve.log")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            t0 = time.monotonic()
            tick = await _start(http, "tick", {})
            boundary = await _start(http, "boundary", {"order_id": "S-B"})
            early = await _start(http, "gateway", {"order_id": "S-early", "timeout": "PT2S"})
            late = await _start(http, "gateway", {"order_id": "S-late", "timeout": "PT2S"})

            await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - t0)))
            resp = await http.post("/messages/gateway_answer", json={"order_id": "S-early"})
            assert resp.status_code == 200, resp.text

            done = await _until(lambda: _complete(http, tick))
            ticked_after = time.monotonic() - t0
            assert done["data"] == {"ticked": True}

            done = await _until(lambda: _complete(http, boundary))
            assert done["data"]["outcome"] == "timeout"
            assert await _branch(http, boundary, "boundary_timed_out")
            resp = await http.post("/messages/boundary_reply", json={"order_id": "S-B"})
            assert resp.status_code == 400, resp.text

            await asyncio.sleep(max(0.0, 4 - (time.monotonic() - t0)))
            resp = await http.post("/messages/gateway_answer", json={"order_id": "S-late"})
            assert resp.status_code == 400, resp.text
            await _until(lambda: _complete(http, late))
            assert await _branch(http, late, "gateway_timed_out")
            assert not await _branch(http, late, "gateway_answered")
            assert await _branch(http, early, "gateway_answered")
            assert not await _branch(http, early, "gateway_timed_out")

            fired = await _fired(http)
            assert (fired[tick], fired[boundary], fired[early], fired[late]) == (1, 1, 0, 1)
        print(f"\nPT1S timer: instance complete {ticked_after:.2f} s after its start (no traffic)")
    finally:
        server.stop()
    assert await invariant_violations(database_url) == []


async def test_timeouts_racing_replies_each_take_one_branch(database_url: str, tmp_path: Path) -> None:
    """200 gateways with PT1S timeouts, each answered between 0.8 s and 1.2 s after its start: whichever came
    first won, the answer says which, and nothing else ran."""
    count, rng = 200, random.Random(7)
    server = start_server(CASES / "timers", database_url, 2, tmp_path / "serve.log")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                     limits=httpx.Limits(max_connections=50)) as http:
            answers: dict[int, int] = {}

            async def one(i: int) -> None:
                order = f"RACE-{i}"
                instance = await _start(http, "gateway", {"order_id": order, "timeout": "PT1S"})
                await asyncio.sleep(rng.uniform(0.8, 1.2))
                resp = await http.post("/messages/gateway_answer", json={"order_id": order})
                answers[instance] = resp.status_code

            sem = asyncio.Semaphore(20)

            async def bounded(i: int) -> None:
                async with sem:
                    await one(i)

            await asyncio.gather(*(bounded(i) for i in range(count)))
            assert set(answers.values()) <= {200, 400}, Counter(answers.values())

            async def all_complete() -> bool:
                page = (await http.get("/process-instances", params={"status": "complete", "per_page": 1})).json()
                return bool(page["pagination"]["total"] == count)

            await _until(all_complete)
            fired = await _fired(http)
            for instance, status in answers.items():
                shown = await _instance(http, instance)
                answered = await _branch(http, instance, "gateway_answered")
                timed_out = await _branch(http, instance, "gateway_timed_out")
                assert answered != timed_out, (instance, shown)
                assert answered == (status == 200), (instance, status, shown)
                assert fired[instance] == (0 if answered else 1), (instance, status, fired[instance])
                assert shown["data"]["outcome"] == ("answer" if answered else "timeout")
        won = Counter("reply" if s == 200 else "timeout" for s in answers.values())
        print(f"\nrace: {dict(won)}")
    finally:
        server.stop()
    assert await invariant_violations(database_url) == []


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


async def test_a_killed_worker_leaves_every_due_timer_to_fire_exactly_once(database_url: str,
                                                                           tmp_path: Path) -> None:
    """1,000 instances wait at timers that are all due when the server starts; one of its two workers is killed
    in the burst. After a restart every timer has fired exactly once: one ``timer_fired`` event each (the event is
    written in the firing's own transaction, so a firing the kill rolled back left none)."""
    count = 1000
    # made before any server runs, on a clock an hour behind: their PT1S timers are long due when it starts
    ext = make_spiff_app(CASES / "timers", database_url, clock=ManualClock(time.time() - 3600),
                         config={"SPIFF_MESSAGES_TIMER_INTERVAL_SECONDS": 0})
    assert ext.app is not None
    async with ext.app.test_app():
        ids = [(await ext.start_process("tick")).instance.id for _ in range(count)]  # type: ignore[union-attr]

    server = start_server(CASES / "timers", database_url, 2, tmp_path / "serve-1.log")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            async def some_fired() -> bool:
                page = (await http.get("/process-instances", params={"status": "complete", "per_page": 1})).json()
                return bool(50 <= page["pagination"]["total"])

            await _until(some_fired, pause=0.01)
            os.kill(worker_pids(server.proc.pid)[0], signal.SIGKILL)
    finally:
        server.stop()

    server = start_server(CASES / "timers", database_url, 2, tmp_path / "serve-2.log")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            async def all_complete() -> bool:
                page = (await http.get("/process-instances", params={"status": "complete", "per_page": 1})).json()
                return bool(page["pagination"]["total"] == count)

            await _until(all_complete, deadline=90)
            fired = await _fired(http)
            assert {i: fired[i] for i in ids if fired[i] != 1} == {}
            assert sum(fired.values()) == count
    finally:
        server.stop()
    assert await invariant_violations(database_url) == []


async def test_a_timer_start_cycle_starts_exactly_three_instances_across_two_workers(database_url: str,
                                                                                   tmp_path: Path) -> None:
    server = start_server(CASES / "timer_start", database_url, 2, tmp_path / "serve.log")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            async def total() -> int:
                page = (await http.get("/process-instances", params={"per_page": 100})).json()
                return int(page["pagination"]["total"])

            await _until(lambda: _at_least(total, 3), deadline=20)
            await asyncio.sleep(3)  # a fourth would be due by now
            assert await total() == 3
            listed = (await http.get("/process-instances", params={"per_page": 100})).json()["results"]
            assert {i["status"] for i in listed} == {"complete"}
    finally:
        server.stop()


async def _at_least(total: Any, n: int) -> bool:
    return bool(await total() >= n)
