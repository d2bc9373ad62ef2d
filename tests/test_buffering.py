"""Buffered messages: time to live, idempotency keys, expiry, cancellation and retention (issue 3)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from quart_spiff_messages import SpiffMessages

from .conftest import CASES, Clock, make_app

PING = CASES / "ping"


def u() -> str:
    return str(uuid.uuid4())


async def send(client: Any, name: str, payload: Any, **query: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/v1.0/messages/{name}", json=payload, query_string=query or None)
    return resp.status_code, await resp.get_json()


async def messages(client: Any, **query: Any) -> list[dict[str, Any]]:
    body = await (await client.get("/v1.0/messages", query_string=query or None)).get_json()
    rows: list[dict[str, Any]] = body["results"]
    return rows


# -- the query parameters ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("query", "code"), [
    ({"time_to_live_in_seconds": 301, "message_instance_uuid": str(uuid.UUID(int=1))}, "invalid_time_to_live"),
    ({"time_to_live_in_seconds": -1}, "invalid_time_to_live"),
    ({"time_to_live_in_seconds": "soon"}, "invalid_time_to_live"),
    ({"time_to_live_in_seconds": 60}, "message_instance_uuid_required"),
    ({"time_to_live_in_seconds": 60, "message_instance_uuid": "approval-1001"}, "invalid_message_instance_uuid"),
    ({"message_instance_uuid": "0" * 41}, "invalid_message_instance_uuid"),
    ({"message_instance_uuid": "{12345678-1234-1234-1234-123456789abc}"}, "invalid_message_instance_uuid"),
])
async def test_bad_query_parameters(client: Any, query: dict[str, Any], code: str) -> None:
    status, body = await send(client, "payment_received", {"order_id": "A"}, **query)
    assert status == 400 and body["error_code"] == code
    assert await messages(client) == []  # nothing written


async def test_unmatched_message_with_ttl_is_kept(client: Any, clock: Clock) -> None:
    key = u().upper()
    status, body = await send(client, "payment_received", {"order_id": "A-1", "amount": 5},
                              time_to_live_in_seconds=60, message_instance_uuid=key)
    assert status == 202
    mi = body["message_instance"]
    assert mi["status"] == "ready" and mi["name"] == "payment_received" and mi["message_type"] == "send"
    assert mi["message_instance_uuid"] == key.lower()
    assert mi["expires_at_in_seconds"] == int(clock.now) + 60
    assert isinstance(mi["id"], int)


# -- delivery the moment an instance comes to wait --------------------------------------------------------------
async def test_delivered_to_an_instance_started_by_another_message(client: Any) -> None:
    await send(client, "payment_received", {"order_id": "A-1", "amount": 5},
               time_to_live_in_seconds=60, message_instance_uuid=u())
    status, body = await send(client, "order_received", {"order_id": "A-1"})
    assert status == 200
    assert body["process_instance"]["status"] == "complete"
    assert body["task_data"]["paid_amount"] == 5
    rows = {(r["name"], r["message_type"]): r for r in await messages(client)}
    assert rows[("payment_received", "send")]["status"] == "completed"
    assert rows[("payment_received", "receive")]["process_instance_id"] == body["process_instance"]["id"]


async def test_delivered_to_an_instance_started_by_the_api(client: Any) -> None:
    await send(client, "shipment_confirmed", {"shipment_id": "S-1"}, time_to_live_in_seconds=60,
               message_instance_uuid=u())
    resp = await client.post("/v1.0/process-instances/shipping_process", json={"shipment_id": "S-1"})
    body = await resp.get_json()
    assert resp.status_code == 201 and body["process_instance"]["status"] == "complete"
    assert body["task_data"]["confirmation"] == {"shipment_id": "S-1"}


@pytest.mark.bpmn(PING)
async def test_delivered_when_a_delivery_moves_an_instance_to_its_next_catch(ext: SpiffMessages) -> None:
    started = await ext.start_process("two_step", {"key": "K"})
    await ext.send_message("pong", {"key": "K", "n": 2}, ttl=60, message_instance_uuid=u())
    moved = await ext.send_message("ping", {"key": "K", "n": 1})
    assert moved.instance and started.instance and moved.instance.id == started.instance.id
    assert moved.instance.status == "complete"
    assert moved.task_data and moved.task_data["second"] == {"key": "K", "n": 2}


@pytest.mark.bpmn(PING)
async def test_delivered_to_an_instance_reached_by_a_thrown_message(ext: SpiffMessages) -> None:
    started = await ext.start_process("two_step", {"key": "K"})
    await ext.send_message("pong", {"key": "K", "n": 2}, ttl=60, message_instance_uuid=u())
    await ext.start_process("ping_sender", {"key": "K", "n": 1})  # throws ping: reaches two_step
    assert started.instance
    instance_id = started.instance.id
    row = await ext.runtime.store.read(lambda tx: tx.instance(instance_id))
    assert row and row.status == "complete"


async def test_buffered_reply_taken_when_the_requester_reaches_its_catch(client: Any) -> None:
    await send(client, "quote_reply", {"request_id": "Q-7", "price": 1}, time_to_live_in_seconds=60,
               message_instance_uuid=u())
    resp = await client.post("/v1.0/process-instances/quote_requester", json={"request_id": "Q-7", "item": "x"})
    pid = (await resp.get_json())["process_instance"]["id"]
    shown = (await (await client.get(f"/v1.0/process-instances/{pid}")).get_json())["process_instance"]
    assert shown["status"] == "complete"
    assert shown["data"]["reply"] == {"request_id": "Q-7", "price": 1}  # the buffered (older) reply


async def test_oldest_buffered_message_first(client: Any) -> None:
    for n in (1, 2):
        await send(client, "payment_received", {"order_id": "A-1", "amount": n}, time_to_live_in_seconds=60,
                   message_instance_uuid=u())
    _, body = await send(client, "order_received", {"order_id": "A-1"})
    assert body["task_data"]["paid_amount"] == 1
    ready = await messages(client, status="ready")
    assert [r["payload"]["amount"] for r in ready] == [2]


@pytest.mark.bpmn(PING)
async def test_exact_buffered_message_beats_an_older_one_for_anyone(ext: SpiffMessages) -> None:
    await ext.send_message("ping", {"key": "other", "n": 1}, ttl=60, message_instance_uuid=u())
    await ext.send_message("ping", {"key": "K", "n": 2}, ttl=60, message_instance_uuid=u())
    keyed = await ext.start_process("keyed_ping_waiter", {"key": "K"})
    assert keyed.task_data and keyed.task_data["got"]["n"] == 2
    anyone = await ext.start_process("any_ping_waiter", {})
    assert anyone.task_data and anyone.task_data["got"]["n"] == 1


# -- replay and conflicts ---------------------------------------------------------------------------------------
async def test_replay_while_buffered_then_after_delivery(client: Any) -> None:
    key = u()
    payload = {"order_id": "A-1", "amount": 5}
    first = await send(client, "payment_received", payload, time_to_live_in_seconds=60, message_instance_uuid=key)
    again = await send(client, "payment_received", payload, time_to_live_in_seconds=60, message_instance_uuid=key)
    assert first[0] == again[0] == 202
    assert first[1]["message_instance"]["id"] == again[1]["message_instance"]["id"]
    _, started = await send(client, "order_received", {"order_id": "A-1"})
    status, body = await send(client, "payment_received", payload, time_to_live_in_seconds=60,
                              message_instance_uuid=key)
    assert status == 200
    assert body["message_instance"]["id"] == first[1]["message_instance"]["id"]
    assert body["process_instance"]["id"] == started["process_instance"]["id"]
    assert body["process_instance"]["status"] == "complete"
    assert len(await messages(client, name="payment_received", message_type="send")) == 1


async def test_replay_of_a_delivered_message(client: Any) -> None:
    key = u()
    first = await send(client, "order_received", {"order_id": "A-9"}, message_instance_uuid=key)
    again = await send(client, "order_received", {"order_id": "A-9"}, message_instance_uuid=key)
    assert first[0] == again[0] == 200
    assert first[1]["message_instance"]["id"] == again[1]["message_instance"]["id"]
    assert first[1]["process_instance"]["id"] == again[1]["process_instance"]["id"]
    listed = await (await client.get("/v1.0/process-instances")).get_json()
    assert listed["pagination"]["total"] == 1


async def test_replay_of_a_refused_message(client: Any) -> None:
    key = u()
    first = await send(client, "payment_received", {"order_id": "nobody"}, message_instance_uuid=key)
    again = await send(client, "payment_received", {"order_id": "nobody"}, message_instance_uuid=key)
    assert first[0] == again[0] == 400
    assert again[1]["error_code"] == "message_not_accepted"
    assert again[1]["message_instance"]["id"] == first[1]["message_instance"]["id"]
    assert len(await messages(client)) == 1


async def test_replay_of_an_expired_message(client: Any, ext: SpiffMessages, clock: Clock) -> None:
    key = u()
    await send(client, "payment_received", {"order_id": "A"}, time_to_live_in_seconds=1, message_instance_uuid=key)
    clock.advance(2)
    await ext.runtime.upkeep.sweep()
    status, body = await send(client, "payment_received", {"order_id": "A"}, time_to_live_in_seconds=1,
                              message_instance_uuid=key)
    assert status == 202 and body["message_instance"]["status"] == "cancelled"


@pytest.mark.parametrize(("name", "payload"), [("payment_received", {"order_id": "B"}),
                                               ("order_received", {"order_id": "A"}),
                                               ("orders:payment_received", {"order_id": "A"})])
async def test_same_key_for_another_message_is_a_conflict(client: Any, name: str, payload: dict[str, Any]) -> None:
    key = u()
    await send(client, "payment_received", {"order_id": "A"}, time_to_live_in_seconds=60, message_instance_uuid=key)
    status, body = await send(client, name, payload, time_to_live_in_seconds=60, message_instance_uuid=key)
    assert status == 409 and body["error_code"] == "message_instance_uuid_conflict"
    assert len(await messages(client)) == 1


# -- expiry -----------------------------------------------------------------------------------------------------
async def test_never_delivered_after_expiry_even_before_the_sweep(client: Any, clock: Clock) -> None:
    await send(client, "payment_received", {"order_id": "A-1", "amount": 5}, time_to_live_in_seconds=10,
               message_instance_uuid=u())
    clock.advance(11)
    _, body = await send(client, "order_received", {"order_id": "A-1"})
    assert body["process_instance"]["status"] == "waiting"


async def test_expiry_shows_without_any_traffic(bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    app, _ = make_app(bpmn_dir, database_url, clock, SPIFF_MESSAGES_SWEEP_INTERVAL_SECONDS=0.05)
    async with app.test_app():
        client = app.test_client()
        await send(client, "payment_received", {"order_id": "A"}, time_to_live_in_seconds=5,
                   message_instance_uuid=u())
        clock.advance(6)
        for _ in range(100):  # waiting for the background task, not for time to pass
            rows = await messages(client)
            if rows[0]["status"] != "ready":
                break
            await asyncio.sleep(0.05)
        assert (rows[0]["status"], rows[0]["cancellation_reason"]) == ("cancelled", "expired")
        assert rows[0]["failure_cause"] is None  # no error icon in Arena's list: an expiry is not a failure


async def test_sweep_works_in_bounded_batches(ext: SpiffMessages, clock: Clock) -> None:
    for n in range(5):
        await ext.send_message("payment_received", {"order_id": f"X{n}"}, ttl=1, message_instance_uuid=u())
    clock.advance(2)
    assert await ext.runtime.upkeep.sweep(batch=2) == (5, 0)
    assert await ext.runtime.upkeep.sweep(batch=2) == (0, 0)


# -- cancellation and retention ---------------------------------------------------------------------------------
async def test_cancel_a_buffered_message(client: Any) -> None:
    key = u()
    await send(client, "payment_received", {"order_id": "A-1"}, time_to_live_in_seconds=60, message_instance_uuid=key)
    resp = await client.delete(f"/v1.0/messages/{key}")
    body = await resp.get_json()
    assert resp.status_code == 200
    assert (body["message_instance"]["status"], body["message_instance"]["cancellation_reason"]) == (
        "cancelled", "cancelled by request")
    assert body["message_instance"]["failure_cause"] is None
    _, started = await send(client, "order_received", {"order_id": "A-1"})
    assert started["process_instance"]["status"] == "waiting"  # the cancelled message was not delivered
    assert (await client.delete(f"/v1.0/messages/{key}")).status_code == 200  # idempotent


async def test_cancel_errors(client: Any) -> None:
    resp = await client.delete(f"/v1.0/messages/{u()}")
    assert resp.status_code == 404 and (await resp.get_json())["error_code"] == "message_not_found"
    resp = await client.delete("/v1.0/messages/not-a-uuid")
    assert resp.status_code == 400 and (await resp.get_json())["error_code"] == "invalid_message_instance_uuid"
    key = u()
    await send(client, "order_received", {"order_id": "A"}, message_instance_uuid=key)
    resp = await client.delete(f"/v1.0/messages/{key}")
    assert resp.status_code == 409 and (await resp.get_json())["error_code"] == "message_not_cancellable"


async def test_retention_purges_only_old_finished_rows(ext: SpiffMessages, client: Any, clock: Clock) -> None:
    await ext.send_message("payment_received", {"order_id": "old"})  # not_accepted
    await ext.send_message("payment_received", {"order_id": "buffered"}, ttl=300, message_instance_uuid=u())
    clock.advance(3 * 86400)
    await ext.send_message("payment_received", {"order_id": "new"})
    assert await ext.runtime.upkeep.sweep(retention_seconds=2 * 86400) == (1, 1)
    left = sorted(r["payload"]["order_id"] for r in await messages(client))
    assert left == ["buffered", "new"]  # the buffered one expired just now: finished, but not old


# -- configuration ----------------------------------------------------------------------------------------------
@pytest.fixture
async def app_with_max_ttl(bpmn_dir: Path, database_url: str, clock: Clock) -> AsyncIterator[Quart]:
    app, _ = make_app(bpmn_dir, database_url, clock, SPIFF_MESSAGES_MAX_TTL_SECONDS=3600)
    async with app.test_app():
        yield app


async def test_max_ttl_follows_configuration(app_with_max_ttl: Quart) -> None:
    client = app_with_max_ttl.test_client()
    doc = await (await client.get("/v1.0/openapi.json")).get_json()
    params = doc["paths"]["/v1.0/messages/{modified_message_name}"]["post"]["parameters"]
    ttl = next(p for p in params if p["name"] == "time_to_live_in_seconds")
    assert ttl["schema"]["maximum"] == 3600
    status, _ = await send(client, "payment_received", {"order_id": "A"}, time_to_live_in_seconds=3600,
                           message_instance_uuid=u())
    assert status == 202
    status, body = await send(client, "payment_received", {"order_id": "A"}, time_to_live_in_seconds=3601,
                              message_instance_uuid=u())
    assert status == 400 and body["error_code"] == "invalid_time_to_live"
