"""A refusal says why: ``400 message_not_accepted`` carries a structured ``reason``, and the kept row's
``failure_cause`` says the same in words (what Zeebe's and Temporal's users ask for)."""

from __future__ import annotations

from typing import Any


async def refused(client: Any, name: str, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    resp = await client.post(f"/v1.0/messages/{name}", json=payload)
    body = await resp.get_json()
    assert resp.status_code == 400 and body["error_code"] == "message_not_accepted", body
    assert body["message"] == body["message_instance"]["failure_cause"]
    listed = await (await client.get("/v1.0/messages", query_string={"status": "not_accepted"})).get_json()
    row = next(r for r in listed["results"] if r["id"] == body["message_instance"]["id"])
    assert row["failure_cause"] == body["message"]  # the row keeps the reason's words
    reason: dict[str, Any] = body["reason"]
    return reason, str(body["message"])


async def test_no_process_uses_the_name(client: Any) -> None:
    reason, text = await refused(client, "no_such_message", {})
    assert reason == {"kind": "no_receiver"} and "no_such_message" in text


async def test_only_groups_the_prefix_excludes(client: Any) -> None:
    reason, text = await refused(client, "billing:payment_failed", {"order_id": "O-1"})
    assert reason == {"kind": "out_of_scope", "groups": ["orders", "orders/eu"]}
    assert "orders/eu" in text and "billing" in text


async def test_the_payload_lacks_the_correlation_properties(client: Any) -> None:
    reason, text = await refused(client, "payment_received", {"amount": 1})
    assert reason == {"kind": "missing_correlation_properties", "properties": ["order_id"]}
    assert "order_id" in text


async def test_instances_wait_but_none_for_these_values(client: Any) -> None:
    for order in ("O-1", "O-2"):
        started = await client.post("/v1.0/process-instances/orders:eu:eu_payment_watch", json={"order_id": order})
        assert started.status_code == 201
    reason, text = await refused(client, "orders:eu:payment_failed", {"order_id": "O-3"})
    # the values computed from this payload, and how many wait: never the other instances' values
    assert (reason["kind"], reason["waiting"], list(reason["correlation_keys"].values())) == \
        ("no_matching_wait", 2, [{"order_id": "O-3"}])
    assert "O-1" not in text and "O-2" not in text and "2 process instance" in text


async def test_nobody_waits_at_all(client: Any) -> None:
    reason, _ = await refused(client, "payment_received", {"order_id": "A-1"})
    assert reason["kind"] == "no_matching_wait" and reason["waiting"] == 0
    assert list(reason["correlation_keys"].values()) == [{"order_id": "A-1"}]


async def test_the_matching_instance_no_longer_waits(client: Any) -> None:
    started = await client.post("/v1.0/process-instances/orders:eu:eu_payment_watch", json={"order_id": "O-7"})
    instance_id = (await started.get_json())["process_instance"]["id"]
    first = await client.post("/v1.0/messages/orders:eu:payment_failed", json={"order_id": "O-7"})
    assert first.status_code == 200 and (await first.get_json())["process_instance"]["id"] == instance_id
    reason, text = await refused(client, "orders:eu:payment_failed", {"order_id": "O-7"})
    assert reason["kind"] == "wait_ended" and reason["process_instance_id"] == instance_id
    assert f"instance {instance_id}" in text
