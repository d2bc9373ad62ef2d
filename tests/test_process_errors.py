"""A script that fails after delivery: the instance is stored in error, the message failed, the caller told."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import CASES

pytestmark = pytest.mark.bpmn(CASES / "failing")


async def test_failing_script_marks_instance_error_and_message_failed(client: Any) -> None:
    started = await (await client.post("/v1.0/process-instances/divider", json={})).get_json()
    pid = started["process_instance"]["id"]
    resp = await client.post("/v1.0/messages/divisor", json={"value": 0})
    assert resp.status_code == 400
    body = await resp.get_json()
    assert body["error_code"] == "process_error"
    assert body["task"] == "divide"
    assert body["error_type"] == "ZeroDivisionError"
    assert body["process_instance"]["id"] == pid and body["process_instance"]["status"] == "error"
    shown = (await (await client.get(f"/v1.0/process-instances/{pid}")).get_json())["process_instance"]
    assert shown["status"] == "error"
    assert shown["error"]["task"] == "divide"
    assert shown["waiting_for"] == []
    rows = (await (await client.get("/v1.0/messages")).get_json())["results"]
    assert {(r["message_type"], r["status"]) for r in rows} == {("send", "failed"), ("receive", "failed")}
    assert all("division by zero" in r["failure_cause"] for r in rows)
    # An instance in error takes no more messages.
    resp = await client.post("/v1.0/messages/divisor", json={"value": 5})
    assert (await resp.get_json())["error_code"] == "message_not_accepted"


async def test_good_message_still_completes(client: Any) -> None:
    await client.post("/v1.0/process-instances/divider", json={})
    resp = await client.post("/v1.0/messages/divisor", json={"value": 4})
    body = await resp.get_json()
    assert resp.status_code == 200 and body["task_data"]["result"] == 25
