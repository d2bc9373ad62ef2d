"""A worker killed with SIGKILL in the middle of a burst: nothing answered is lost, nothing half-written stays.

Hypercorn stops the whole server when a worker dies; the test then starts it again on the same database and checks
that every message answered 200 reached its instance, no message is left ``running`` and no instance stays locked
(each one takes its next message at once).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from quart_spiff_messages.testing import start_server, worker_pids

from .conftest import FIXTURES

COUNT = 500
CLIENTS = 16
KILL_AFTER = 150


async def burst(url: str, tag: str, kill: Any) -> dict[str, int]:
    """Send COUNT order_received from CLIENTS clients; call ``kill`` once KILL_AFTER answers came back."""
    answers: dict[str, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(COUNT):
        queue.put_nowait(i)
    killed = False

    async def client() -> None:
        nonlocal killed
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            while not queue.empty():
                i = queue.get_nowait()
                order = f"{tag}-{i}"
                try:
                    resp = await http.post("/messages/order_received", json={"order_id": order})
                    answers[order] = resp.status_code
                except httpx.HTTPError:
                    answers[order] = 0  # no answer: the request may or may not have been committed
                if len(answers) >= KILL_AFTER and not killed:
                    killed = True
                    kill()

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return answers


async def test_sigkill_of_a_worker_loses_nothing_answered(database_url: str, tmp_path: Path) -> None:
    server = start_server(FIXTURES, database_url, 2, tmp_path / "serve-1.log")
    victims = worker_pids(server.proc.pid)
    assert len(victims) == 2, victims
    tag = f"K{int(time.time())}"
    try:
        answers = await burst(server.url, tag, lambda: os.kill(victims[0], signal.SIGKILL))
    finally:
        server.stop()
    answered = sorted(o for o, status in answers.items() if status == 200)
    others = {o: s for o, s in answers.items() if s != 200}
    assert set(others.values()) <= {0, 503}, others  # connections cut by the kill, never a 4xx or a 500
    assert len(answered) >= KILL_AFTER - CLIENTS

    t0 = time.monotonic()
    server = start_server(FIXTURES, database_url, 2, tmp_path / "serve-2.log")
    recovery = time.monotonic() - t0
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            running = (await http.get("/messages", params={"status": "running"})).json()
            assert running["pagination"]["total"] == 0
            receives = (await http.get("/messages", params={"name": "order_received", "message_type": "receive",
                                                            "per_page": 1000})).json()
            instances = (await http.get("/process-instances", params={"per_page": 1000})).json()
            # nothing half-written: every instance has its delivered start message, and the other way round
            assert instances["pagination"]["total"] == receives["pagination"]["total"]
            assert all(i["status"] == "waiting" for i in instances["results"])
            stored = {i["correlations"]["order_key"]["order_id"] for i in instances["results"]}
            assert set(answered) <= stored
            # no instance stays locked: each takes its payment at once
            for order in sorted(stored):
                resp = await http.post("/messages/payment_received", json={"order_id": order, "amount": 1})
                assert resp.status_code == 200, (order, resp.text)
        print(f"\nkill test: {len(answered)} answered 200, {len(others)} cut off "
              f"({sum(1 for s in others.values() if s == 0)} without answer), {len(stored)} instances stored, "
              f"restart ready in {recovery:.1f}s")
    finally:
        server.stop()
