"""Hostile input and access control: a clear 4xx with an error_code, and nothing written (issue 7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart, Request

from quart_spiff_messages import SpiffMessages

from .conftest import Clock, make_app

KEY = "s3cret-key"


@pytest.fixture
async def guarded(bpmn_dir: Path, database_url: str, clock: Clock) -> AsyncIterator[Quart]:
    app = Quart(__name__)
    app.config.update(SPIFF_MESSAGES_BPMN_DIR=str(bpmn_dir), SPIFF_MESSAGES_DATABASE_URL=database_url,
                      SPIFF_MESSAGES_API_KEY=f"other-key, {KEY}")

    def authorize(request: Request, action: str) -> bool:
        return request.headers.get("X-Role") != "reader" or action.startswith(("list_", "read_"))

    SpiffMessages(app, clock=clock, authorize=authorize)
    async with app.test_app():
        yield app


async def test_api_key_is_required(guarded: Quart) -> None:
    client = guarded.test_client()
    resp = await client.post("/v1.0/messages/order_received", json={"order_id": "A"})
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert (await resp.get_json())["error_code"] == "unauthorized"
    resp = await client.get("/v1.0/messages", headers={"SpiffWorkflow-Api-Key": "wrong"})
    assert resp.status_code == 401
    resp = await client.get("/v1.0/messages", headers={"SpiffWorkflow-Api-Key": KEY})
    assert resp.status_code == 200 and (await resp.get_json())["pagination"]["total"] == 0
    resp = await client.post("/v1.0/messages/order_received", json={"order_id": "A"},
                             headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status_code == 200


async def test_authorize_hook_refuses_with_403(guarded: Quart) -> None:
    client = guarded.test_client()
    headers = {"SpiffWorkflow-Api-Key": KEY, "X-Role": "reader"}
    resp = await client.post("/v1.0/messages/order_received", json={"order_id": "A"}, headers=headers)
    assert resp.status_code == 403 and (await resp.get_json())["error_code"] == "forbidden"
    assert (await client.get("/v1.0/message-models", headers=headers)).status_code == 200
    listed = await (await client.get("/v1.0/messages", headers=headers)).get_json()
    assert listed["pagination"]["total"] == 0


async def test_async_authorize_hook(bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    async def deny_cancel(request: Request, action: str) -> bool:
        return action != "cancel_message"

    app = Quart(__name__)
    app.config.update(SPIFF_MESSAGES_BPMN_DIR=str(bpmn_dir), SPIFF_MESSAGES_DATABASE_URL=database_url)
    SpiffMessages(app, clock=clock, authorize=deny_cancel)
    async with app.test_app():
        resp = await app.test_client().delete("/v1.0/messages/12345678-1234-1234-1234-123456789abc")
        assert resp.status_code == 403


async def _nothing_written(client: Any) -> None:
    assert (await (await client.get("/v1.0/messages")).get_json())["pagination"]["total"] == 0
    assert (await (await client.get("/v1.0/process-instances")).get_json())["pagination"]["total"] == 0


async def test_payload_too_large(bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    app, _ = make_app(bpmn_dir, database_url, clock, SPIFF_MESSAGES_MAX_PAYLOAD_BYTES=100)
    async with app.test_app():
        client = app.test_client()
        resp = await client.post("/v1.0/messages/order_received", json={"order_id": "A", "pad": "x" * 200})
        assert resp.status_code == 413 and (await resp.get_json())["error_code"] == "payload_too_large"
        await _nothing_written(client)


@pytest.mark.parametrize("body", [
    b'{"a":' * 40 + b"1" + b"}" * 40,  # deeper than the limit
    b"[" * 100000 + b"]" * 100000,  # deep enough to break a recursive parser
    b'{"order_id": NaN}',
    b'{"order_id": Infinity}',
    b"\xff\xfe{}",
])
async def test_hostile_bodies_are_invalid_payload(client: Any, body: bytes) -> None:
    resp = await client.post("/v1.0/messages/order_received", data=body,
                             headers={"Content-Type": "application/json"})
    assert resp.status_code in (400, 413)
    assert (await resp.get_json())["error_code"] in ("invalid_payload", "payload_too_large")
    await _nothing_written(client)


@pytest.mark.parametrize("payload", [
    {"order_id": "A", "__builtins__": {}},
    {"order_id": "A", "str": "shadow", "len": 3},
])
async def test_payload_keys_do_not_change_expressions(client: Any, payload: dict[str, Any]) -> None:
    resp = await client.post("/v1.0/messages/order_received", json=payload)
    assert resp.status_code == 200
    resp = await client.post("/v1.0/messages/payment_received", json={**payload, "amount": 1})
    assert resp.status_code == 200 and (await resp.get_json())["process_instance"]["status"] == "complete"


async def test_long_names_are_refused(client: Any) -> None:
    resp = await client.post("/v1.0/messages/" + "x" * 256, json={})
    assert resp.status_code == 400 and (await resp.get_json())["error_code"] == "invalid_message_name"
    resp = await client.post("/v1.0/process-instances/" + "y" * 256, json={})
    assert resp.status_code == 400 and (await resp.get_json())["error_code"] == "invalid_process_id"
    await _nothing_written(client)


async def test_the_openapi_document_declares_every_error_answer(client: Any) -> None:
    document = await (await client.get("/v1.0/openapi.json")).get_json()
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert operations and all({"401", "403"} <= set(op["responses"]) for op in operations)
    send = document["paths"]["/v1.0/messages/{modified_message_name}"]["post"]
    assert {"200", "202", "400", "409", "413", "503"} <= set(send["responses"])
    assert set(send["responses"]["400"]["content"]) == {"application/problem+json"}
    name = next(p for p in send["parameters"] if p["name"] == "modified_message_name")
    assert name["schema"]["maxLength"] == 255 and "pattern" in name["schema"]
    show = document["paths"]["/v1.0/process-instances/{instance_id}"]["get"]
    assert show["parameters"][0]["schema"]["type"] == "integer"
    assert (await client.get("/v1.0/process-instances/false")).status_code == 404
