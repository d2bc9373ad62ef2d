"""The message path through the HTTP API, on the bundled fixtures."""

from __future__ import annotations

from typing import Any

import pytest

from quart_spiff_messages import SpiffMessages


async def send(client: Any, name: str, payload: Any, **query: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/v1.0/messages/{name}", json=payload, query_string=query or None)
    return resp.status_code, await resp.get_json()


async def start(client: Any, process: str, data: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post(f"/v1.0/process-instances/{process}", json=data)
    assert resp.status_code == 201, await resp.get_data()
    body: dict[str, Any] = await resp.get_json()
    return body


async def instance(client: Any, instance_id: int) -> dict[str, Any]:
    resp = await client.get(f"/v1.0/process-instances/{instance_id}")
    assert resp.status_code == 200
    body: dict[str, Any] = (await resp.get_json())["process_instance"]
    return body


async def test_message_start_event_starts_an_instance_that_waits(client: Any) -> None:
    status, body = await send(client, "order_received", {"order_id": "A-1", "total": 42})
    assert status == 200
    pi = body["process_instance"]
    assert pi["process_id"] == "order_process" and pi["process_group"] == ""
    assert pi["status"] == "waiting"
    assert body["task_data"]["order"] == {"order_id": "A-1", "total": 42}
    assert body["message_instance"]["status"] == "completed"
    shown = await instance(client, pi["id"])
    assert shown["waiting_for"] == [{"message_name": "payment_received", "element_id": "wait_payment",
                                     "correlation_keys": {"order_key": {"order_id": "A-1"}},
                                     "accepts_any": False, "kind": "message"}]


async def test_correlated_message_reaches_the_right_instance(client: Any) -> None:
    _, a = await send(client, "order_received", {"order_id": "A-1"})
    _, b = await send(client, "order_received", {"order_id": "B-2"})
    status, body = await send(client, "payment_received", {"order_id": "B-2", "amount": 7})
    assert status == 200
    assert body["process_instance"]["id"] == b["process_instance"]["id"]
    assert body["process_instance"]["status"] == "complete"
    assert body["task_data"]["paid_amount"] == 7
    assert (await instance(client, a["process_instance"]["id"]))["status"] == "waiting"


async def test_wrong_key_is_not_accepted_and_kept_for_audit(client: Any) -> None:
    _, a = await send(client, "order_received", {"order_id": "A-1"})
    status, body = await send(client, "payment_received", {"order_id": "nope", "amount": 1})
    assert status == 400
    assert body["error_code"] == "message_not_accepted"
    assert "correlates" in body["message"]
    listed = await (await client.get("/v1.0/messages", query_string={"status": "not_accepted"})).get_json()
    assert [m["payload"] for m in listed["results"]] == [{"order_id": "nope", "amount": 1}]
    assert listed["results"][0]["failure_cause"] == body["message"]
    assert (await instance(client, a["process_instance"]["id"]))["status"] == "waiting"


async def test_payload_missing_the_key_does_not_match(client: Any) -> None:
    await send(client, "order_received", {"order_id": "A-1"})
    status, body = await send(client, "payment_received", {"amount": 1})
    assert status == 400 and body["error_code"] == "message_not_accepted"


async def test_unknown_message_name_says_so(client: Any) -> None:
    status, body = await send(client, "no_such_message", {"x": 1})
    assert status == 400 and body["error_code"] == "message_not_accepted"
    assert "No process uses message 'no_such_message'" in body["message"]


async def test_key_values_compare_by_json_type(client: Any) -> None:
    await send(client, "order_received", {"order_id": 1})
    for other in (True, "1"):
        status, _ = await send(client, "payment_received", {"order_id": other})
        assert status == 400
    status, body = await send(client, "payment_received", {"order_id": 1.0})
    assert status == 200 and body["process_instance"]["status"] == "complete"


async def test_receive_task_with_process_variable_correlation(client: Any) -> None:
    started = await start(client, "shipping_process", {"shipment_id": "S-9"})
    pi = started["process_instance"]
    assert pi["status"] == "waiting"
    assert (await instance(client, pi["id"]))["waiting_for"][0]["correlation_keys"] == {
        "shipment_key": {"shipment_id": "S-9"}}
    assert (await send(client, "shipment_confirmed", {"shipment_id": "S-1"}))[0] == 400
    status, body = await send(client, "shipment_confirmed", {"shipment_id": "S-9", "carrier": "x"})
    assert status == 200
    assert body["process_instance"]["id"] == pi["id"]
    assert body["task_data"]["confirmation"] == {"shipment_id": "S-9", "carrier": "x"}


async def test_boundary_message_cancels_the_user_task(client: Any) -> None:
    _, body = await send(client, "review_requested", {"ticket": "T-1"})
    pi = body["process_instance"]
    assert pi["status"] == "user_input_required"
    shown = await instance(client, pi["id"])
    assert [w["message_name"] for w in shown["waiting_for"]] == ["review_cancelled"]
    assert (await send(client, "review_cancelled", {"ticket": "T-2"}))[0] == 400
    status, body = await send(client, "review_cancelled", {"ticket": "T-1", "why": "dup"})
    assert status == 200
    assert body["process_instance"]["status"] == "complete"
    assert body["task_data"]["cancellation"] == {"ticket": "T-1", "why": "dup"}


async def test_event_based_gateway_takes_the_message_branch(client: Any) -> None:
    _, body = await send(client, "billing:invoice_issued", {"invoice_id": "I-1"})
    pi = body["process_instance"]
    assert pi["process_group"] == "billing" and pi["status"] == "waiting"
    waits = (await instance(client, pi["id"]))["waiting_for"]
    assert [(w["kind"], w.get("message_name"), w["element_id"]) for w in waits] == [
        ("message", "invoice_paid", "invoice_gateway"), ("timer", None, "invoice_timeout")]
    assert (await send(client, "invoice_paid", {"invoice_id": "I-2"}))[0] == 400
    status, body = await send(client, "billing:invoice_paid", {"invoice_id": "I-1", "amount": 3})
    assert status == 200 and body["process_instance"]["status"] == "complete"
    assert body["task_data"]["paid"] == {"invoice_id": "I-1", "amount": 3}


async def test_conversation_between_two_processes(client: Any) -> None:
    started = await start(client, "quote_requester", {"request_id": "Q-1", "item": "widget"})
    requester = started["process_instance"]
    # The send task's message started quote_provider, whose end event replied to the requester.
    shown = await instance(client, requester["id"])
    assert shown["status"] == "complete"
    assert shown["data"]["reply"] == {"request_id": "Q-1", "price": 42}
    listed = await (await client.get("/v1.0/messages", query_string={"per_page": 50})).get_json()
    rows = {(m["name"], m["message_type"]): m for m in listed["results"]}
    assert rows[("quote_request", "send")]["status"] == "completed"
    assert rows[("quote_request", "send")]["process_instance_id"] == requester["id"]
    assert rows[("quote_reply", "receive")]["process_instance_id"] == requester["id"]
    providers = await (await client.get("/v1.0/process-instances",
                                        query_string={"process_id": "quote_provider"})).get_json()
    assert [p["status"] for p in providers["results"]] == ["complete"]


async def test_two_correlation_keys_any_one_is_enough(client: Any) -> None:
    await send(client, "case_opened", {"case_id": "K-1", "customer_id": "C-1"})
    _, other = await send(client, "case_opened", {"case_id": "K-2", "customer_id": "C-2"})
    assert (await send(client, "case_update", {"case_id": "K-9", "customer_id": "C-9"}))[0] == 400
    status, body = await send(client, "case_update", {"case_id": "K-9", "customer_id": "C-2"})
    assert status == 200
    assert body["process_instance"]["id"] == other["process_instance"]["id"]


async def test_accept_any_wait_takes_any_message_of_its_name(client: Any) -> None:
    started = await start(client, "notification_listener", {})
    status, body = await send(client, "broadcast", {"anything": True})
    assert status == 200
    assert body["process_instance"]["id"] == started["process_instance"]["id"]
    assert body["task_data"]["note"] == {"anything": True}


async def test_longest_waiting_instance_wins_among_equals(client: Any) -> None:
    first = (await start(client, "notification_listener", {}))["process_instance"]["id"]
    second = (await start(client, "notification_listener", {}))["process_instance"]["id"]
    _, body = await send(client, "broadcast", {"n": 1})
    assert body["process_instance"]["id"] == first
    _, body = await send(client, "broadcast", {"n": 2})
    assert body["process_instance"]["id"] == second
    assert (await send(client, "broadcast", {"n": 3}))[0] == 400


async def test_group_prefix_scopes_matching(client: Any) -> None:
    watcher = (await start(client, "orders:eu:eu_payment_watch", {"order_id": "O-1"}))["process_instance"]
    assert watcher["process_group"] == "orders/eu"
    # A prefix that does not cover orders/eu cannot reach the watcher, nor the start event in orders.
    status, body = await send(client, "billing:payment_failed", {"order_id": "O-1"})
    assert status == 400 and "in group 'billing'" in body["message"]
    # orders covers orders/eu: the waiting watcher wins over the start event in orders.
    status, body = await send(client, "orders:payment_failed", {"order_id": "O-1"})
    assert status == 200 and body["process_instance"]["id"] == watcher["id"]
    # Nothing waits any more: the same message now starts payment_recovery in group orders.
    status, body = await send(client, "orders:payment_failed", {"order_id": "O-1"})
    assert status == 200
    assert body["process_instance"]["process_model_identifier"] == "orders/payment_recovery"
    assert body["process_instance"]["status"] == "user_input_required"


async def test_no_prefix_means_every_group(client: Any) -> None:
    watcher = (await start(client, "orders:eu:eu_payment_watch", {"order_id": "O-7"}))["process_instance"]
    status, body = await send(client, "payment_failed", {"order_id": "O-7"})
    assert status == 200 and body["process_instance"]["id"] == watcher["id"]


async def test_waiting_instance_wins_over_message_start(client: Any) -> None:
    """A process that both waits for and starts on a name: the waiting one gets it (no second instance)."""
    watcher = (await start(client, "orders:eu:eu_payment_watch", {"order_id": "O-3"}))["process_instance"]
    _, body = await send(client, "orders:payment_failed", {"order_id": "O-3"})
    assert body["process_instance"]["id"] == watcher["id"]
    listed = await (await client.get("/v1.0/process-instances")).get_json()
    assert listed["pagination"]["total"] == 1


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b"42", b"", b"\xff\xfe"])
async def test_payload_must_be_a_json_object(client: Any, body: bytes) -> None:
    resp = await client.post("/v1.0/messages/order_received", data=body,
                             headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.content_type == "application/problem+json"
    assert (await resp.get_json())["error_code"] == "invalid_payload"
    assert (await (await client.get("/v1.0/messages")).get_json())["pagination"]["total"] == 0


@pytest.mark.parametrize("name", ["a::b", ":b", "b:", "a:..:b", "x\x01y"])
async def test_invalid_message_names(client: Any, name: str) -> None:
    status, body = await send(client, name, {"x": 1})
    assert status == 400 and body["error_code"] == "invalid_message_name"


async def test_unknown_instance_is_404(client: Any) -> None:
    resp = await client.get("/v1.0/process-instances/999")
    assert resp.status_code == 404
    assert (await resp.get_json())["error_code"] == "process_instance_not_found"


async def test_start_unknown_process_is_404(client: Any) -> None:
    resp = await client.post("/v1.0/process-instances/nope", json={})
    assert resp.status_code == 404
    assert (await resp.get_json())["error_code"] == "process_not_found"


async def test_process_without_plain_start_cannot_be_started_by_api(client: Any) -> None:
    resp = await client.post("/v1.0/process-instances/order_process", json={})
    assert resp.status_code == 400
    assert (await resp.get_json())["error_code"] == "process_not_startable"


async def test_message_list_filters_and_pagination(client: Any) -> None:
    for i in range(3):
        await send(client, "order_received", {"order_id": f"A-{i}"})
    await send(client, "payment_received", {"order_id": "none"})
    resp = await client.get("/v1.0/messages", query_string={"message_type": "send", "per_page": 2})
    body = await resp.get_json()
    assert body["pagination"] == {"count": 2, "total": 4, "pages": 2}
    assert body["results"][0]["name"] == "payment_received"  # newest first
    resp = await client.post("/v1.0/messages", query_string={"page": 1},
                             json={"name": "order_received", "message_type": ["receive"]})
    body = await resp.get_json()
    assert body["pagination"]["total"] == 3
    assert all(r["process_instance_id"] for r in body["results"])
    resp = await client.get("/v1.0/messages", query_string={"per_page": 100000})
    assert resp.status_code == 400 and (await resp.get_json())["error_code"] == "invalid_query_parameter"


async def test_message_models_lists_the_catalog(client: Any) -> None:
    body = await (await client.get("/v1.0/message-models")).get_json()
    models = {m["identifier"]: m for m in body["messages"]}
    assert models["order_received"]["start_events"][0]["process_id"] == "order_process"
    assert models["payment_received"]["correlation_properties"] == [
        {"identifier": "order_id", "retrieval_expression": "order_id", "correlation_keys": ["order_key"]}]
    kinds = {m: {c["kind"] for c in models[m]["catch_points"]}
             for m in ("payment_received", "shipment_confirmed", "review_cancelled", "invoice_paid")}
    assert kinds == {"payment_received": {"intermediate_catch"}, "shipment_confirmed": {"receive_task"},
                     "review_cancelled": {"boundary"}, "invoice_paid": {"event_based_gateway"}}
    assert models["payment_failed"]["process_groups"] == ["orders", "orders/eu"]


async def test_openapi_document_and_ui_are_served(client: Any) -> None:
    doc = await (await client.get("/v1.0/openapi.json")).get_json()
    assert "/v1.0/messages/{modified_message_name}" in doc["paths"]
    params = {p["name"]: p for p in doc["paths"]["/v1.0/messages/{modified_message_name}"]["post"]["parameters"]}
    assert params["time_to_live_in_seconds"]["schema"]["maximum"] == 300
    assert (await client.get("/v1.0/ui")).status_code == 200


async def test_python_api_matches_http(ext: SpiffMessages) -> None:
    started = await ext.start_process("shipping_process", {"shipment_id": "S-5"})
    assert started.kind == "started" and started.instance is not None
    refused = await ext.send_message("shipment_confirmed", {"shipment_id": "S-6"})
    assert refused.kind == "not_accepted" and refused.message is not None
    assert refused.message.status == "not_accepted"
    delivered = await ext.send_message("shipment_confirmed", {"shipment_id": "S-5"})
    assert delivered.kind == "delivered"
    assert delivered.instance is not None and delivered.instance.id == started.instance.id
    assert delivered.instance.status == "complete"
    opened = await ext.send_message("orders:payment_failed", {"order_id": "X"})
    assert opened.kind == "started" and opened.instance is not None
    assert opened.instance.process_group == "orders"
