"""Events to the host: blinker signals after each commit, and the durable feed (``GET /v1.0/events``)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from quart_spiff_messages import events
from quart_spiff_messages.testing import serving

from .conftest import CASES, FIXTURES, Clock


async def feed(client: Any, after: int = 0, limit: int = 1000) -> dict[str, Any]:
    resp = await client.get("/v1.0/events", query_string={"after": after, "limit": limit})
    assert resp.status_code == 200
    body: dict[str, Any] = await resp.get_json()
    return body


async def test_a_completion_receiver_is_called_once_and_a_raising_one_changes_no_answer(app: Any, client: Any) -> None:
    completed: list[dict[str, Any]] = []

    async def on_completed(sender: Any, event: dict[str, Any]) -> None:
        completed.append(event)

    def broken(sender: Any, event: dict[str, Any]) -> None:
        raise RuntimeError("a host's receiver fails")

    events.instance_completed.connect(on_completed, sender=app)
    events.message_delivered.connect(broken, sender=app)
    try:
        started = await client.post("/v1.0/messages/order_received", json={"order_id": "EV-1"})
        assert started.status_code == 200
        paid = await client.post("/v1.0/messages/payment_received", json={"order_id": "EV-1", "amount": 5})
        assert paid.status_code == 200
    finally:
        events.instance_completed.disconnect(on_completed, sender=app)
        events.message_delivered.disconnect(broken, sender=app)
    instance = (await paid.get_json())["process_instance"]["id"]
    assert [(e["kind"], e["process_instance_id"]) for e in completed] == [("instance_completed", instance)]
    assert completed[0]["data"]["process_model_identifier"] == "order_process"


async def test_the_feed_tells_the_order_flow_in_commit_order_with_a_cursor(client: Any) -> None:
    await client.post("/v1.0/messages/order_received", json={"order_id": "EV-2"})
    first = await feed(client)
    assert [e["kind"] for e in first["results"]] == ["instance_started", "message_delivered", "instance_waiting"]
    await client.post("/v1.0/messages/payment_received", json={"order_id": "EV-2", "amount": 1})
    await client.post("/v1.0/messages/payment_received", json={"order_id": "nobody"})
    later = await feed(client, after=first["next_after"])
    assert [e["kind"] for e in later["results"]] == ["message_delivered", "instance_completed",
                                                     "message_not_accepted"]
    ids = [e["id"] for e in first["results"] + later["results"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert (await feed(client, after=later["next_after"]))["results"] == []
    paged = await feed(client, after=0, limit=2)
    assert [e["id"] for e in paged["results"]] == ids[:2] and paged["next_after"] == ids[1]


# the app's own sweeper sweeps once at start-up, then not again during the test: the test's sweep takes all 100
@pytest.mark.parametrize("spiff_config", [{"SPIFF_MESSAGES_SWEEP_INTERVAL_SECONDS": 3600}])
async def test_an_expiry_sweep_of_100_buffered_messages_gives_100_expired_events(client: Any, ext: Any,
                                                                                clock: Clock) -> None:
    buffered = []
    for i in range(105):
        query = {"time_to_live_in_seconds": 60, "message_instance_uuid": str(uuid.uuid4())}
        resp = await client.post("/v1.0/messages/payment_received", json={"order_id": f"LATE-{i}"},
                                 query_string=query)
        assert resp.status_code == 202
        buffered.append((await resp.get_json())["message_instance"]["id"])
    for i in range(5):  # five of them find their order: delivered, never expired
        await client.post("/v1.0/messages/order_received", json={"order_id": f"LATE-{i}"})
    clock.advance(61)
    assert (await ext.runtime.upkeep.sweep()) == (100, 0)
    kinds = Counter(e["kind"] for e in (await feed(client))["results"])
    expired = [e["message_instance_id"] for e in (await feed(client))["results"] if e["kind"] == "message_expired"]
    assert sorted(expired) == sorted(buffered[5:])
    assert kinds["message_buffered"] == 105 and kinds["message_expired"] == 100


@pytest.mark.bpmn(CASES / "human")
async def test_a_task_that_becomes_ready_is_an_event(client: Any) -> None:
    resp = await client.post("/v1.0/messages/approval_requested", json={"order_id": "EV-3"})
    instance = (await resp.get_json())["process_instance"]["id"]
    ready = [e for e in (await feed(client))["results"] if e["kind"] == "task_ready"]
    assert [(e["process_instance_id"], e["data"]["element_id"]) for e in ready] == [(instance, "approve")]


def test_a_reader_following_the_feed_under_load_on_2_workers_misses_nothing(database_url: str,
                                                                            tmp_path: Path) -> None:
    """Ids are handed out in commit order: a reader that asks for ``after=last id`` while 2 workers commit
    concurrently sees every event exactly once."""

    async def run(url: str) -> tuple[list[int], list[int]]:
        seen: list[int] = []
        done = asyncio.Event()

        async def follow() -> None:
            cursor = 0
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                while True:
                    finished = done.is_set()
                    body = (await http.get("/events", params={"after": cursor, "limit": 1000})).json()
                    seen.extend(e["id"] for e in body["results"])
                    cursor = body["next_after"]
                    if finished and not body["results"]:
                        return
                    await asyncio.sleep(0.005)

        async def client(k: int) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                for i in range(25):
                    order = f"FEED-{k}-{i}"
                    await http.post("/messages/order_received", json={"order_id": order})
                    await http.post("/messages/payment_received", json={"order_id": order, "amount": 1})

        reader = asyncio.create_task(follow())
        await asyncio.gather(*(client(k) for k in range(8)))
        done.set()
        await reader
        every: list[int] = []
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            while page := (await http.get("/events", params={"after": every[-1] if every else 0})).json()["results"]:
                every += [e["id"] for e in page]
        return seen, every

    with serving(FIXTURES, database_url, tmp_path / "serve.log", workers=2) as server:
        seen, every = asyncio.run(run(server.url))
    assert len(every) == 8 * 25 * 5  # per order: started, delivered, waiting, delivered, completed
    assert seen == every, f"the reader missed {sorted(set(every) - set(seen))[:10]}"
