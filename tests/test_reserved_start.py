"""An asynchronous start answers with its reserved instance (Spiff Arena's contract): ``200`` with the instance
``not_started`` and ``task_data == {}``; the routing loop then starts exactly that instance. A start that no longer
takes when routed ends the reservation ``terminated`` (its ``error`` says why) and the message goes the normal way.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from quart_spiff_messages.clock import Clock
from quart_spiff_messages.testing import invariant_violations, start_server

from .conftest import CASES, FIXTURES, make_app
from .test_async_messages import ASYNC, drained, rows
from .test_reload import LATE

QUIET = {"SPIFF_MESSAGES_ROUTE_QUEUED": "0"}  # nothing routes until the test says so


async def post(client: Any, name: str, payload: dict[str, Any], **query: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/v1.0/messages/{name}", json=payload, query_string={**ASYNC, **query})
    body: dict[str, Any] = await resp.get_json()
    return resp.status_code, body


async def get(client: Any, path: str) -> dict[str, Any]:
    resp = await client.get(f"/v1.0{path}")
    assert resp.status_code == 200, await resp.get_data()
    body: dict[str, Any] = await resp.get_json()
    return body


async def test_an_asynchronous_start_answers_with_its_reserved_instance_which_the_worker_starts(
        bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    app, ext = make_app(bpmn_dir, database_url, clock, **QUIET)
    async with app.test_app():
        client = app.test_client()
        key = str(uuid.uuid4())
        status, body = await post(client, "order_received", {"order_id": "R-1"}, message_instance_uuid=key)
        assert status == 200, body
        reserved = body["process_instance"]
        assert (reserved["status"], reserved["process_model_identifier"]) == ("not_started", "order_process")
        assert body["task_data"] == {}
        assert (body["message_instance"]["status"], body["message_instance"]["process_instance_id"]) == (
            "running", reserved["id"])

        # every view of it copes: nothing ran, nothing is waited for, no element has a state
        shown = (await get(client, f"/process-instances/{reserved['id']}"))["process_instance"]
        assert (shown["status"], shown["data"], shown["waiting_for"]) == ("not_started", {}, [])
        page = await get(client, f"/process-instances/order_process/{reserved['id']}")
        assert (page["status"], page["start_in_seconds"], page["end_in_seconds"]) == ("not_started", None, None)
        assert await get(client, f"/process-instances/order_process/{reserved['id']}/task-info") == []
        assert (await get(client, f"/tasks/{reserved['id']}/instruction"))["task"] is None
        listed = await get(client, "/process-instances?status=not_started")
        assert [r["id"] for r in listed["results"]] == [reserved["id"]]
        console = await client.get(f"/v1.0/console/instances/{reserved['id']}")
        assert console.status_code == 200 and "not_started" in (await console.get_data(as_text=True))
        status, replayed = await post(client, "order_received", {"order_id": "R-1"}, message_instance_uuid=key)
        assert (status, replayed["process_instance"]["id"], replayed["process_instance"]["status"]) == (
            200, reserved["id"], "not_started")

        assert await ext.runtime.queued.route_all(20, 100) == 1
        started = (await get(client, f"/process-instances/{reserved['id']}"))["process_instance"]
        assert started["status"] == "waiting"  # the same id: the order process waits for its payment
        assert [w["message_name"] for w in started["waiting_for"]] == ["payment_received"]
        msg = (await get(client, f"/messages/{key}"))["message_instance"]
        assert (msg["status"], msg["process_instance_id"]) == ("completed", reserved["id"])
        receive = (await get(client, f"/messages/{msg['counterpart_id']}"))["message_instance"]
        assert receive["process_instance_id"] == reserved["id"]
        status, replayed = await post(client, "order_received", {"order_id": "R-1"}, message_instance_uuid=key)
        assert (status, replayed["process_instance"]["id"], replayed["process_instance"]["status"]) == (
            200, reserved["id"], "waiting")
        listed = await get(client, "/process-instances")
        assert [r["id"] for r in listed["results"]] == [reserved["id"]]  # exactly one instance for the message

        # a message for the waiting instance is no start: accepted as before (202), and it completes that instance
        status, body = await post(client, "payment_received", {"order_id": "R-1", "amount": 2})
        assert status == 202 and "process_instance" not in body, body
        assert await ext.runtime.queued.route_all(20, 100) == 1
        done = (await get(client, f"/process-instances/{reserved['id']}"))["process_instance"]
        assert done["status"] == "complete"
        assert await ext.runtime.reads.invariant_violations() == []


@pytest.mark.bpmn(CASES / "one_per_key")
async def test_a_reserved_start_that_no_longer_takes_ends_terminated_and_its_message_goes_the_normal_way(
        bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    app, ext = make_app(bpmn_dir, database_url, clock, **QUIET)
    async with app.test_app():
        client = app.test_client()
        status, first = await post(client, "ticket_opened", {"ticket_id": "T-1"})
        assert status == 200 and first["process_instance"]["status"] == "not_started"
        # routed after the first, this one finds the key held (one instance per key): it is kept with its TTL
        key = str(uuid.uuid4())
        status, second = await post(client, "ticket_opened", {"ticket_id": "T-1", "note": "2"},
                                    time_to_live_in_seconds=60, message_instance_uuid=key)
        assert status == 200 and second["process_instance"]["status"] == "not_started"
        status, refused = await post(client, "ticket_opened", {"ticket_id": "T-1", "note": "3"})
        assert status == 200  # and this one, without a TTL, is refused
        assert await ext.runtime.queued.route_all(20, 100) == 3

        holder = first["process_instance"]["id"]
        assert (await get(client, f"/process-instances/{holder}"))["process_instance"]["status"] == "waiting"
        for ended, final in ((second, "ready"), (refused, "not_accepted")):
            row = (await get(client, f"/process-instances/{ended['process_instance']['id']}"))["process_instance"]
            assert row["status"] == "terminated", row
            assert row["error"]["reason"] == "start_not_taken"
            assert row["error"]["message_instance_id"] == ended["message_instance"]["id"]
            assert f"process instance {holder}" in row["error"]["message"]
            msg = (await get(client, f"/messages/{ended['message_instance']['id']}"))["message_instance"]
            assert (msg["status"], msg["process_instance_id"]) == (final, None)  # no longer that instance's
        page = await get(client, f"/process-instances/ticket_process/{second['process_instance']['id']}")
        assert page["end_in_seconds"] is not None and page["start_in_seconds"] is not None
        status, replayed = await post(client, "ticket_opened", {"ticket_id": "T-1", "note": "2"},
                                      time_to_live_in_seconds=60, message_instance_uuid=key)
        assert (status, replayed["message_instance"]["status"]) == (202, "ready")  # its stored outcome now

        # the key is held now: an asynchronous start for it reserves nothing (202), and is kept or refused later
        status, body = await post(client, "ticket_opened", {"ticket_id": "T-1", "note": "4"})
        assert status == 202 and "process_instance" not in body, body
        assert await ext.runtime.queued.route_all(20, 100) == 1

        # the kept message starts a new instance once the holder completes (not the terminated reservation)
        resp = await client.post("/v1.0/messages/ticket_closed", json={"ticket_id": "T-1"})
        assert resp.status_code == 200
        msg = (await get(client, f"/messages/{key}"))["message_instance"]
        assert msg["status"] == "completed"
        receive = (await get(client, f"/messages/{msg['counterpart_id']}"))["message_instance"]
        assert receive["process_instance_id"] not in (holder, second["process_instance"]["id"])
        assert await ext.runtime.reads.invariant_violations() == []


async def test_a_reservation_whose_start_a_reload_removed_ends_terminated(tmp_path: Path, database_url: str,
                                                                          clock: Clock) -> None:
    bpmn = tmp_path / "bpmn"
    shutil.copytree(FIXTURES, bpmn)
    (bpmn / "late.bpmn").write_text(LATE)
    app, ext = make_app(bpmn, database_url, clock, **QUIET)
    async with app.test_app():
        client = app.test_client()
        key = str(uuid.uuid4())
        status, body = await post(client, "late_message", {"n": 1}, time_to_live_in_seconds=120,
                                  message_instance_uuid=key)
        assert (status, body["process_instance"]["status"]) == (200, "not_started"), body
        (bpmn / "late.bpmn").unlink()
        assert (await client.post("/v1.0/catalog/reload")).status_code == 200
        assert await ext.runtime.queued.route_all(20, 100) == 1
        row = (await get(client, f"/process-instances/{body['process_instance']['id']}"))["process_instance"]
        assert (row["status"], row["error"]["reason"]) == ("terminated", "start_not_taken")
        assert "no process starts on message 'late_message' any more" in row["error"]["message"]
        msg = (await get(client, f"/messages/{key}"))["message_instance"]
        assert (msg["status"], msg["process_instance_id"]) == ("ready", None)  # kept with its TTL, as any other
        assert await ext.runtime.reads.invariant_violations() == []


async def test_concurrent_asynchronous_starts_on_two_workers_start_exactly_their_reserved_instances(
        database_url: str, tmp_path: Path) -> None:
    count = 80
    server = start_server(FIXTURES, database_url, 2, tmp_path / "serve.log")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            async def start(n: int) -> tuple[int, dict[str, Any]]:
                resp = await http.post("/messages/order_received", json={"order_id": f"CR-{n}"}, params=ASYNC)
                return resp.status_code, resp.json()

            answers = await asyncio.gather(*(start(n) for n in range(count)))
            assert {status for status, _ in answers} == {200}, answers
            assert {body["process_instance"]["status"] for _, body in answers} == {"not_started"}
            reserved = {body["process_instance"]["id"] for _, body in answers}
            assert len(reserved) == count
            await drained(http)
            instances = [r for r in await rows(http, "/process-instances")
                         if r["process_model_identifier"] == "order_process"]
            assert sorted(r["id"] for r in instances) == sorted(reserved)  # each the reserved id, no other
            assert {r["status"] for r in instances} == {"waiting"}  # none left not_started
            sends = {r["id"]: r for r in await rows(http, "/messages", message_type="send,receive")}
            for _, body in answers:
                send = sends[body["message_instance"]["id"]]
                assert send["status"] == "completed"
                assert sends[send["counterpart_id"]]["process_instance_id"] == body["process_instance"]["id"]
    finally:
        server.stop()
    assert await invariant_violations(database_url) == []
