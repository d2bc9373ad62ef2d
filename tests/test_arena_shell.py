"""What Spiff Arena's frontend needs around the messages list: the shell calls, the hook behind them, problem+json
for every path under the prefix, CORS, and message rows that name their process. Over HTTP, as the frontend calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from quart import Quart, Request

from quart_spiff_messages import SpiffMessages

from .conftest import Clock

KEY = {"SpiffWorkflow-Api-Key": "k-1"}


def guarded_app(bpmn_dir: Path, database_url: str, clock: Clock, seen: list[str] | None = None,
                refuse: tuple[str, ...] = (), **config: Any) -> Quart:
    app = Quart(__name__)
    app.config.update({"SPIFF_MESSAGES_BPMN_DIR": str(bpmn_dir), "SPIFF_MESSAGES_DATABASE_URL": database_url,
                       "SPIFF_MESSAGES_API_KEY": "k-1", **config})

    def authorize(_request: Request, action: str) -> bool:
        if seen is not None:
            seen.append(action)
        return action not in refuse

    SpiffMessages(app, clock=clock, authorize=authorize)
    return app


# -- the same bad input, the same code -------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1.0/process-instances?process_id=a::b"),
    ("POST", "/v1.0/process-instances/a::b"),
    ("GET", "/v1.0/process-instances/a::b/1"),
])
async def test_a_bad_process_id_is_invalid_process_id_everywhere(client: Any, method: str, path: str) -> None:
    resp = await client.open(path, method=method, json={} if method == "POST" else None)
    body = await resp.get_json()
    assert resp.status_code == 400 and body["error_code"] == "invalid_process_id", body
    assert body["field"] in ("process_id", "modified_process_id", "modified_process_model_identifier")


# -- the shell ---------------------------------------------------------------------------------------------------
async def test_status_answers_without_a_key_and_says_whether_the_key_may_list(bpmn_dir: Path, database_url: str,
                                                                                clock: Clock) -> None:
    app = guarded_app(bpmn_dir, database_url, clock)
    async with app.test_app():
        client = app.test_client()
        anonymous = await client.get("/v1.0/status")
        assert anonymous.status_code == 200
        assert await anonymous.get_json() == {"ok": True, "can_access_frontend": False}
        keyed = await client.get("/v1.0/status", headers=KEY)
        assert await keyed.get_json() == {"ok": True, "can_access_frontend": True}


async def test_permissions_check_asks_the_hook_about_each_routes_declared_action(bpmn_dir: Path, database_url: str,
                                                                                   clock: Clock) -> None:
    seen: list[str] = []
    app = guarded_app(bpmn_dir, database_url, clock, seen, refuse=("cancel_message",))
    async with app.test_app():
        client = app.test_client()
        asked = {"/v1.0/messages": ["GET", "POST"], "/messages/x": ["POST", "DELETE"],
                 "/v1.0/process-instances/orders:eu:eu_payment_watch/7?x=1": ["GET"],
                 "/v1.0/no-such-thing": ["GET"], "/v1.0/status": ["GET"]}
        resp = await client.post("/v1.0/permissions-check", json={"requests_to_check": asked}, headers=KEY)
        assert resp.status_code == 200
        assert (await resp.get_json())["results"] == {
            "/v1.0/messages": {"GET": True, "POST": True},
            "/messages/x": {"POST": True, "DELETE": False},  # cancel_message is refused by the hook
            "/v1.0/process-instances/orders:eu:eu_payment_watch/7?x=1": {"GET": True},
            "/v1.0/no-such-thing": {"GET": False},
            "/v1.0/status": {"GET": False},  # open to all: no action to grant
        }
        assert seen == ["check_permissions", "list_messages", "list_messages", "send_message", "cancel_message",
                        "read_process_instance"]
        refused = await client.post("/v1.0/permissions-check", json={"requests_to_check": {}})
        assert refused.status_code == 401


async def test_the_hook_sees_the_action_each_route_declares(bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    seen: list[str] = []
    app = guarded_app(bpmn_dir, database_url, clock, seen)
    async with app.test_app():
        client = app.test_client()
        for method, path in [("GET", "/v1.0/messages"), ("POST", "/v1.0/messages"), ("GET", "/v1.0/console/messages"),
                             ("GET", "/v1.0/all-message-models"), ("GET", "/v1.0/message-models/orders"),
                             ("GET", "/v1.0/process-instances"), ("GET", "/v1.0/events")]:
            resp = await client.open(path, method=method, headers=KEY)
            assert resp.status_code == 200, (path, await resp.get_data(as_text=True))
    assert seen == ["list_messages"] * 3 + ["read_message_models"] * 2 + ["list_process_instances", "read_events"]


# -- problem+json for what is not a route ------------------------------------------------------------------------
async def test_unknown_paths_and_wrong_methods_are_problem_json(client: Any) -> None:
    missing = await client.get("/v1.0/no/such/path")
    assert missing.status_code == 404 and missing.content_type == "application/problem+json"
    assert (await missing.get_json())["error_code"] == "route_not_found"
    wrong = await client.put("/v1.0/messages")
    assert wrong.status_code == 405 and wrong.content_type == "application/problem+json"
    body = await wrong.get_json()
    assert body["error_code"] == "method_not_allowed" and body["allowed"] == ["GET", "POST"]
    assert wrong.headers["Allow"] == "GET, POST"
    schema_wrong = await client.post("/v1.0/openapi.json")
    assert schema_wrong.status_code == 405 and (await schema_wrong.get_json())["error_code"] == "method_not_allowed"


# -- CORS --------------------------------------------------------------------------------------------------------
async def test_cors_is_off_by_default(client: Any) -> None:
    resp = await client.get("/v1.0/messages", headers={"Origin": "http://localhost:7001"})
    assert resp.status_code == 200 and "Access-Control-Allow-Origin" not in resp.headers


# What Chromium asks in the preflight of Spiff Arena's frontend's calls (every call: it sends two custom headers)
ARENA_GET_HEADERS = "authorization,spiffworkflow-authentication-identifier"
ARENA_POST_HEADERS = "authorization,content-type,spiffworkflow-authentication-identifier"


@pytest.mark.parametrize(("method", "path", "asked"), [
    ("GET", "/v1.0/process-instances/order_process/1/task-info", ARENA_GET_HEADERS),
    ("GET", "/v1.0/status", ARENA_GET_HEADERS),
    ("POST", "/v1.0/messages?per_page=50&page=1", ARENA_POST_HEADERS),
    ("POST", "/v1.0/permissions-check", ARENA_POST_HEADERS),
])
async def test_cors_for_configured_origins_answers_the_frontends_preflight_without_a_key(
        bpmn_dir: Path, database_url: str, clock: Clock, method: str, path: str, asked: str) -> None:
    app = guarded_app(bpmn_dir, database_url, clock, SPIFF_MESSAGES_CORS_ORIGINS="http://localhost:7001")
    origin = {"Origin": "http://localhost:7001"}
    async with app.test_app():
        client = app.test_client()
        preflight = await client.options(path, headers={
            **origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": asked})
        assert preflight.status_code == 200
        assert preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:7001"
        assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
        assert method in preflight.headers["Access-Control-Allow-Methods"]
        allowed = {h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
        assert allowed == set(asked.split(","))  # every header the browser asked for, or it blocks the call
        frontend = {**origin, **KEY, "SpiffWorkflow-Authentication-Identifier": "default"}
        listed = await client.post("/v1.0/messages?per_page=50&page=1", json={}, headers=frontend)
        assert listed.status_code == 200
        assert listed.headers["Access-Control-Allow-Origin"] == "http://localhost:7001"
        refused = await client.get("/v1.0/messages", headers=origin)  # the browser can read the 401
        assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == origin["Origin"]
        other = await client.get("/v1.0/messages", headers={"Origin": "http://evil.example", **KEY})
        assert "Access-Control-Allow-Origin" not in other.headers


async def test_the_cors_headers_are_configurable(bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    app = guarded_app(bpmn_dir, database_url, clock, SPIFF_MESSAGES_CORS_ORIGINS="http://localhost:7001",
                      SPIFF_MESSAGES_CORS_HEADERS="Authorization, X-Tenant")
    async with app.test_app():
        preflight = await app.test_client().options("/v1.0/messages", headers={
            "Origin": "http://localhost:7001", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization,x-tenant,spiffworkflow-authentication-identifier"})
        allowed = {h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
        assert allowed == {"authorization", "x-tenant"}  # the identifier is no longer allowed: the browser blocks


# -- rows name their process; filters --------------------------------------------------------------------------
async def _rows(client: Any, query: str = "", **body: Any) -> list[dict[str, Any]]:
    resp = await client.post(f"/v1.0/messages{query}", json=body)
    assert resp.status_code == 200, await resp.get_data(as_text=True)
    rows: list[dict[str, Any]] = (await resp.get_json())["results"]
    return rows


async def test_rows_carry_the_process_model_and_the_filters_apply(client: Any) -> None:
    watch = await client.post("/v1.0/process-instances/orders:eu:eu_payment_watch", json={"order_id": "O-1"})
    watch_id = (await watch.get_json())["process_instance"]["id"]
    started = await client.post("/v1.0/messages/order_received", json={"order_id": "A-1"})
    order_id = (await started.get_json())["process_instance"]["id"]
    rows = await _rows(client, process_model_identifier=None, name=None, message_type=None, status=None,
                       created_after=None, created_before=None)  # the frontend's all-null body
    by_instance = {(r["process_instance_id"], r["message_type"], r["name"]): r for r in rows}
    sent = by_instance[(None, "send", "order_received")]
    assert sent["process_model_identifier"] is None and sent["process_model_display_name"] is None
    received = by_instance[(order_id, "receive", "order_received")]
    assert received["process_model_identifier"] == "order_process"
    assert received["process_model_display_name"] == "Order"  # the process's name in its BPMN file
    waiting = by_instance[(watch_id, "receive", "payment_failed")]
    assert waiting["process_model_identifier"] == "orders/eu/eu_payment_watch"

    only_order = await _rows(client, f"?process_instance_id={order_id}")
    assert {r["process_instance_id"] for r in only_order} == {order_id}
    assert await _rows(client, process_model_identifier="orders/eu/eu_payment_watch") == [waiting]
    assert await _rows(client, process_model_identifier="nonexistent") == []
    created = sent["created_at_in_seconds"]
    assert sent in await _rows(client, created_after=created - 0.5, created_before=created + 0.5)
    assert await _rows(client, created_after=created + 0.5) == []


@pytest.mark.parametrize(("query", "body", "field"), [
    ("", {"process_model": "x"}, "process_model"),  # a filter we do not know is refused, never ignored
    ("", {"created_after": True}, "created_after"),
    ("?process_instance_id=1", {"process_instance_id": 2}, "process_instance_id"),
])
async def test_a_search_we_cannot_honour_is_refused(client: Any, query: str, body: dict[str, Any],
                                                    field: str) -> None:
    resp = await client.post(f"/v1.0/messages{query}", json=body)
    problem = await resp.get_json()
    assert resp.status_code == 400 and problem["field"] == field, problem


# -- Arena's message-model and instance paths ------------------------------------------------------------------
async def test_message_models_by_arena_paths(client: Any) -> None:
    every = await (await client.get("/v1.0/all-message-models")).get_json()
    names = [m["identifier"] for m in every["messages"]]
    assert "payment_failed" in names and "order_received" in names
    assert all(isinstance(m["id"], int) and m["schema"] == {} for m in every["messages"])
    again = await (await client.get("/v1.0/message-models")).get_json()
    assert [m["id"] for m in again["messages"]] == [m["id"] for m in every["messages"]]  # stable ids
    at_eu = await (await client.get("/v1.0/message-models/orders:eu")).get_json()
    eu_names = {m["identifier"] for m in at_eu["messages"]}
    assert "payment_failed" in eu_names  # used in orders and orders/eu
    assert "invoice_issued" not in eu_names  # only in billing: not above orders/eu
    assert "order_received" in eu_names  # at the root: above every group
    slashed = await (await client.get("/v1.0/message-models/orders/eu")).get_json()
    assert slashed == at_eu


async def test_the_process_model_a_message_starts(client: Any) -> None:
    found = await client.get("/v1.0/messages/order_received/process-model")
    assert await found.get_json() == {"process_model_identifier": "order_process", "file_name": "order.bpmn"}
    none = await client.get("/v1.0/messages/no_such_message/process-model")
    assert none.status_code == 400
    assert (await none.get_json())["error_code"] == "message_triggerable_process_model_not_found"


async def test_the_arena_show_path_answers_the_flat_instance(client: Any) -> None:
    watch = await client.post("/v1.0/process-instances/orders:eu:eu_payment_watch", json={"order_id": "O-9"})
    instance_id = (await watch.get_json())["process_instance"]["id"]
    shown = await client.get(f"/v1.0/process-instances/orders:eu:eu_payment_watch/{instance_id}")
    body = await shown.get_json()
    assert shown.status_code == 200 and body["id"] == instance_id and body["status"] == "waiting"
    assert body["process_model_identifier"] == "orders/eu/eu_payment_watch"
    assert body["process_model_display_name"] == "EU payment watch"
    assert [w["message_name"] for w in body["waiting_for"]] == ["payment_failed"]
    wrong = await client.get(f"/v1.0/process-instances/order_process/{instance_id}")
    assert wrong.status_code == 404 and (await wrong.get_json())["error_code"] == "process_instance_not_found"
