"""``execution_mode=asynchronous``: answered at once, routed by a worker's work loop, exactly once, in order per
correlation key, and nothing lost when a worker is killed between the accept and the routing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from quart_spiff_messages.testing import invariant_violations, start_server, worker_pids

from .conftest import FIXTURES

ASYNC = {"execution_mode": "asynchronous"}


async def routed(http: Any, ref: int | str, timeout: float = 20.0) -> dict[str, Any]:
    """The message once it left ``running`` (GET /messages/{id}), through the app's test client."""
    deadline = time.monotonic() + timeout
    while True:
        resp = await http.get(f"/v1.0/messages/{ref}")
        assert resp.status_code == 200, await resp.get_data()
        msg: dict[str, Any] = (await resp.get_json())["message_instance"]
        if msg["status"] != "running" or time.monotonic() > deadline:
            return msg
        await asyncio.sleep(0.02)


async def drained(http: httpx.AsyncClient, timeout: float = 60.0) -> None:
    """Until no message is ``running`` any more (every accepted one was routed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = (await http.get("/messages", params={"status": "running"})).json()
        if running["pagination"]["total"] == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"messages still running after {timeout}s")


async def test_async_send_answers_at_once_and_a_worker_routes_it(client: Any) -> None:
    resp = await client.post("/v1.0/messages/order_received", json={"order_id": "AS-1"}, query_string=ASYNC)
    assert resp.status_code == 200, await resp.get_data()  # a start: its instance is reserved (Spiff Arena's)
    reserved = await resp.get_json()
    accepted = reserved["message_instance"]
    assert (accepted["status"], reserved["process_instance"]["status"]) == ("running", "not_started")
    msg = await routed(client, accepted["id"])
    assert msg["status"] == "completed"
    instance_id = (await routed(client, msg["counterpart_id"]))["process_instance_id"]
    assert instance_id == reserved["process_instance"]["id"]
    resp = await client.post("/v1.0/messages/payment_received", json={"order_id": "AS-1", "amount": 3},
                             query_string=ASYNC)
    assert resp.status_code == 202
    paid = await routed(client, (await resp.get_json())["message_instance"]["id"])
    assert paid["status"] == "completed"
    instance = await (await client.get(f"/v1.0/process-instances/{instance_id}")).get_json()
    assert instance["process_instance"]["status"] == "complete"


async def test_async_message_nobody_takes_is_refused_or_buffered_when_routed(client: Any) -> None:
    resp = await client.post("/v1.0/messages/payment_received", json={"order_id": "nobody"}, query_string=ASYNC)
    assert resp.status_code == 202
    refused = await routed(client, (await resp.get_json())["message_instance"]["id"])
    assert refused["status"] == "not_accepted"
    assert "No waiting process instance correlates" in refused["failure_cause"]
    key = str(uuid.uuid4())
    resp = await client.post("/v1.0/messages/payment_received", json={"order_id": "later"},
                             query_string={**ASYNC, "time_to_live_in_seconds": 60, "message_instance_uuid": key})
    assert resp.status_code == 202
    assert (await routed(client, key))["status"] == "ready"  # by its message_instance_uuid too
    await client.post("/v1.0/messages/order_received", json={"order_id": "later"})
    taken = await (await client.get(f"/v1.0/messages/{key}")).get_json()
    assert taken["message_instance"]["status"] == "completed"
    resp = await client.get("/v1.0/messages/no-such-message")
    assert resp.status_code == 404
    assert (await resp.get_json())["error_code"] == "message_not_found"


async def send_pairs(url: str, keys: list[str], clients: int, kill: Callable[[], None] | None = None,
                     kill_after: int = 0, reserved: dict[str, int] | None = None) -> dict[str, int]:
    """For each key, an asynchronous ``order_received`` then ``payment_received``, from ``clients`` clients;
    the status of each answer (0: none, the connection was cut). ``kill`` is called once ``kill_after`` answers
    came back. ``reserved`` collects the instance each start's answer reserved, by key."""
    queue = list(reversed(keys))
    answers: dict[str, int] = {}
    killed = False

    async def client() -> None:
        nonlocal killed
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            while queue:
                key = queue.pop()
                if kill is not None and not killed and len(answers) >= kill_after:
                    killed = True
                    kill()
                for name, payload in (("order_received", {"order_id": key}),
                                      ("payment_received", {"order_id": key, "amount": 1})):
                    try:
                        resp = await http.post(f"/messages/{name}", json=payload, params=ASYNC)
                        answers[f"{name}:{key}"] = resp.status_code
                        if reserved is not None and resp.status_code == 200:
                            reserved[key] = resp.json()["process_instance"]["id"]
                    except httpx.HTTPError:
                        answers[f"{name}:{key}"] = 0
                        break  # no payment after a start that may not have been written

    await asyncio.gather(*(client() for _ in range(clients)))
    return answers


async def rows(http: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    page = 1
    while True:
        body = (await http.get(path, params={**params, "per_page": 1000, "page": page})).json()
        found += body["results"]
        if page >= body["pagination"]["pages"]:
            return found
        page += 1


def answered_as_expected(answers: dict[str, int], cut: bool = False) -> bool:
    """Each start answered 200 (its instance reserved), each payment 202 (accepted); ``cut``: or no answer."""
    wanted = {"order_received": 200, "payment_received": 202}
    return all(status == wanted[name.split(":")[0]] or (cut and status == 0) for name, status in answers.items())


async def check_every_pair(http: httpx.AsyncClient, keys: list[str], reserved: dict[str, int] | None = None) -> None:
    """Each start made one instance (the one its answer reserved, when given), each payment reached it after the
    start (so it is complete), once."""
    wanted = set(keys)
    sends = [r for r in await rows(http, "/messages", message_type="send") if r["payload"]["order_id"] in wanted]
    assert len(sends) == 2 * len(keys)
    assert [(r["name"], r["payload"], r["status"], r["failure_cause"]) for r in sends
            if r["status"] != "completed"] == []
    by_id = {r["id"]: r for r in sends}
    receives = [r for r in await rows(http, "/messages", message_type="receive") if r["counterpart_id"] in by_id]
    assert sorted(r["counterpart_id"] for r in receives) == sorted(by_id)  # exactly one receive per message
    instances = {r["process_instance_id"] for r in receives}
    assert len(instances) == len(keys)
    if reserved is not None:
        assert instances == {reserved[k] for k in keys}
    for instance_id in instances:
        body = (await http.get(f"/process-instances/{instance_id}")).json()
        assert body["process_instance"]["status"] == "complete", body


async def test_two_workers_route_each_message_once_in_order_per_key(database_url: str, tmp_path: Path) -> None:
    keys = [f"OK-{i}" for i in range(120)]
    server = start_server(FIXTURES, database_url, 2, tmp_path / "serve.log")
    try:
        reserved: dict[str, int] = {}
        answers = await send_pairs(server.url, keys, 8, reserved=reserved)
        assert answered_as_expected(answers), answers
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            await drained(http)
            await check_every_pair(http, keys, reserved)
    finally:
        server.stop()
    assert await invariant_violations(database_url) == []


async def test_a_worker_killed_between_accept_and_routing_loses_nothing(database_url: str, tmp_path: Path) -> None:
    """Accepted by workers that route nothing, which are then killed: the next server routes every message once,
    in order; and a worker killed in a burst while routing is under way: every pair accepted is routed once."""
    keys = [f"KQ-{i}" for i in range(60)]
    os.environ["SPIFF_MESSAGES_ROUTE_QUEUED"] = "0"
    try:
        server = start_server(FIXTURES, database_url, 2, tmp_path / "serve-1.log")
    finally:
        del os.environ["SPIFF_MESSAGES_ROUTE_QUEUED"]
    try:
        reserved: dict[str, int] = {}
        answers = await send_pairs(server.url, keys, 8, reserved=reserved)
        assert answered_as_expected(answers), answers
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            running = (await http.get("/messages", params={"status": "running"})).json()
            assert running["pagination"]["total"] == 2 * len(keys)  # accepted, not routed
        for pid in worker_pids(server.proc.pid):
            with contextlib.suppress(ProcessLookupError):  # the server may end its other worker on the first's death
                os.kill(pid, signal.SIGKILL)
    finally:
        server.stop()
    assert await invariant_violations(database_url) == []  # running, but queued: nothing is half-written

    more = [f"KR-{i}" for i in range(200)]
    server = start_server(FIXTURES, database_url, 2, tmp_path / "serve-2.log")
    try:
        # the queue the killed server left is routed by this one's loops; meanwhile a burst, and a kill in it
        victim = worker_pids(server.proc.pid)[0]
        answers = await send_pairs(server.url, more, 8, lambda: os.kill(victim, signal.SIGKILL), 150)
    finally:
        server.stop()
    assert answered_as_expected(answers, cut=True), answers  # cut connections, never a 4xx or a 500
    both = [k for k in more if (answers.get(f"order_received:{k}"), answers.get(f"payment_received:{k}")) == (200, 202)]
    assert len(both) >= 20
    server = start_server(FIXTURES, database_url, 2, tmp_path / "serve-3.log")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            await drained(http)
            await check_every_pair(http, keys, reserved)  # the first server's messages: each routed once, in order
            await check_every_pair(http, both)  # every pair both of whose messages were accepted
    finally:
        server.stop()
    assert await invariant_violations(database_url) == []


async def test_the_python_api_accepts_too(ext: Any, client: Any) -> None:
    outcome = await ext.send_message("order_received", {"order_id": "PY-1"}, asynchronous=True)
    assert (outcome.kind, outcome.message.status, outcome.task_data) == ("reserved", "running", {})
    assert (outcome.instance.status, outcome.message.process_instance_id) == ("not_started", outcome.instance.id)
    assert (await routed(client, outcome.message.id))["status"] == "completed"
    outcome = await ext.send_message("payment_received", {"order_id": "PY-1", "amount": 1}, asynchronous=True)
    assert (outcome.kind, outcome.message.status, outcome.instance) == ("accepted", "running", None)
    assert (await routed(client, outcome.message.id))["status"] == "completed"
