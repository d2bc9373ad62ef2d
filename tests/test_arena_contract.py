"""Spiff Arena's frontend, replayed: the calls its messages list, its Message Models tab and an instance's Messages
tab make (``shared/reference/arena-frontend-contract.md``), in their order, with the fields each one reads."""

from __future__ import annotations

from typing import Any

NULL_FILTERS = {"process_model_identifier": None, "name": None, "message_type": None, "status": None,
                "created_after": None, "created_before": None}
ROW_FIELDS = {"id", "name", "message_type", "status", "correlation_keys", "process_instance_id", "counterpart_id",
              "failure_cause", "created_at_in_seconds", "process_model_identifier", "process_model_display_name"}


def modify_process_identifier_for_path_param(identifier: str) -> str:
    """What the frontend does with a row's process_model_identifier before it links to the instance."""
    return identifier.replace("/", ":")


async def _json(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, await resp.get_data(as_text=True)
    assert resp.content_type.startswith("application/json")
    return await resp.get_json()


async def _seed(client: Any) -> dict[str, int]:
    """An external send that starts an instance, one that reaches a waiting instance, a waiter, a refusal."""
    started = await _json(await client.post("/v1.0/messages/order_received", json={"order_id": "C-1"}))
    await client.post("/v1.0/messages/payment_received", json={"order_id": "C-1", "amount": 5})
    watch = await _json(await client.post("/v1.0/process-instances/orders:eu:eu_payment_watch",
                                          json={"order_id": "C-2"}), 201)
    await client.post("/v1.0/messages/no_such_message", json={})
    return {"order": started["process_instance"]["id"], "watch": watch["process_instance"]["id"]}


async def _shell(client: Any) -> None:
    status = await _json(await client.get("/v1.0/status"))
    assert status["ok"] is True and status["can_access_frontend"] is True
    checked = await _json(await client.post("/v1.0/permissions-check", json={"requests_to_check": {
        "/v1.0/messages": ["GET", "POST"], "/v1.0/message-models": ["GET"]}}))
    assert checked["results"]["/v1.0/messages"] == {"GET": True, "POST": True}  # the side-nav entry shows


async def test_the_messages_list_page(client: Any) -> None:
    ids = await _seed(client)
    await _shell(client)
    models = await _json(await client.get("/v1.0/all-message-models"))  # the message-name filter
    assert {"order_received", "payment_received"} <= {m["identifier"] for m in models["messages"]}
    page = await _json(await client.post("/v1.0/messages?per_page=50&page=1", json=NULL_FILTERS))
    assert set(page["pagination"]) == {"count", "total", "pages"}
    rows = page["results"]
    assert rows and all(ROW_FIELDS <= set(r) for r in rows)
    assert {r["process_instance_id"] for r in rows} >= {None, ids["order"], ids["watch"]}
    for row in rows:  # every row renders: a link for an instance's row, "external call" for the others
        if row["process_instance_id"] is None:
            assert row["process_model_identifier"] is None
            continue
        assert row["process_model_display_name"]
        path = modify_process_identifier_for_path_param(row["process_model_identifier"])
        shown = await _json(await client.get(f"/v1.0/process-instances/{path}/{row['process_instance_id']}"))
        assert shown["id"] == row["process_instance_id"] and shown["process_model_identifier"] == \
            row["process_model_identifier"]
    waiting = [r for r in rows if r["message_type"] == "receive" and r["status"] == "ready"]
    assert [(r["process_instance_id"], r["name"]) for r in waiting] == [(ids["watch"], "payment_failed")]
    assert list(waiting[0]["correlation_keys"].values()) == [{"order_id": "C-2"}]  # the Correlations modal
    refused = [r for r in rows if r["status"] == "not_accepted"]
    assert refused and refused[0]["failure_cause"]
    # the filters the page offers
    chosen = await _json(await client.post("/v1.0/messages?per_page=50&page=1", json={
        **NULL_FILTERS, "name": "payment_received", "message_type": ["send"], "status": ["completed"],
        "created_after": 0, "created_before": rows[0]["created_at_in_seconds"] + 0.5}))
    assert [(r["name"], r["message_type"], r["status"]) for r in chosen["results"]] == \
        [("payment_received", "send", "completed")]
    by_model = await _json(await client.post("/v1.0/messages?per_page=50&page=1", json={
        **NULL_FILTERS, "process_model_identifier": "order_process"}))
    assert by_model["results"] and {r["process_instance_id"] for r in by_model["results"]} == {ids["order"]}


async def test_the_message_models_tab(client: Any) -> None:
    await _shell(client)
    models = await _json(await client.get("/v1.0/all-message-models"))
    for model in models["messages"]:
        assert isinstance(model["id"], int) and isinstance(model["identifier"], str)
        assert isinstance(model["location"], str) and model["schema"] == {}
        assert all({"identifier", "retrieval_expression"} <= set(p) for p in model["correlation_properties"])
    at_group = await _json(await client.get("/v1.0/message-models/orders:eu"))
    assert "payment_failed" in {m["identifier"] for m in at_group["messages"]}


async def test_an_instances_messages_tab(client: Any) -> None:
    ids = await _seed(client)
    await _shell(client)
    shown = await _json(await client.get(f"/v1.0/process-instances/order_process/{ids['order']}"))
    assert shown["status"] == "complete"
    tab = await _json(await client.post(f"/v1.0/messages?per_page=10&page=1&process_instance_id={ids['order']}",
                                        json=NULL_FILTERS))
    assert tab["results"] and {r["process_instance_id"] for r in tab["results"]} == {ids["order"]}
    assert {(r["name"], r["message_type"]) for r in tab["results"]} == {("order_received", "receive"),
                                                                        ("payment_received", "receive")}
    waiting_tab = await _json(await client.post(
        f"/v1.0/messages?per_page=10&page=1&process_instance_id={ids['watch']}", json=NULL_FILTERS))
    assert [(r["message_type"], r["status"]) for r in waiting_tab["results"]] == [("receive", "ready")]
