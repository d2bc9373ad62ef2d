"""A script that fails after delivery: the instance is stored in error, the message failed, the caller told."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import CASES, FIXTURES

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


async def test_an_exception_spiffworkflow_raises_while_a_message_is_caught_is_a_process_error(
        client: Any, ext: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule holds for every action, not only where a script runs: here the catch itself raises (as a data input
    a catch needs and cannot find would). The instance is stored in error naming the task, nothing is a 500."""
    from SpiffWorkflow.bpmn.exceptions import WorkflowDataException

    from quart_spiff_messages.engine import Engine

    started = await (await client.post("/v1.0/process-instances/divider", json={})).get_json()
    pid = started["process_instance"]["id"]

    def catch_raises(self: Engine, task: Any, message_name: str, payload: Any) -> bool:
        raise WorkflowDataException("Missing data input", task=task)

    monkeypatch.setattr(Engine, "_catch", catch_raises)
    resp = await client.post("/v1.0/messages/divisor", json={"value": 4})
    body = await resp.get_json()
    assert (resp.status_code, body["error_code"], body["task"]) == (400, "process_error", "wait_divisor"), body
    assert body["error_type"] == "WorkflowDataException"
    monkeypatch.undo()
    shown = (await (await client.get(f"/v1.0/process-instances/{pid}")).get_json())["process_instance"]
    assert (shown["status"], shown["error"]["task"], shown["waiting_for"]) == ("error", "wait_divisor", [])
    rows = (await (await client.get("/v1.0/messages")).get_json())["results"]
    assert {(r["message_type"], r["status"]) for r in rows} == {("send", "failed"), ("receive", "failed")}
    assert await ext.runtime.reads.invariant_violations() == []
    # a retry makes the catch wait again, and the next message completes the instance
    retried = await (await client.post(f"/v1.0/process-instances/{pid}/retry")).get_json()
    assert retried["process_instance"]["status"] == "waiting", retried
    done = await (await client.post("/v1.0/messages/divisor", json={"value": 4})).get_json()
    assert done["process_instance"]["status"] == "complete" and done["task_data"]["result"] == 25
    assert await ext.runtime.reads.invariant_violations() == []


@pytest.mark.bpmn(FIXTURES)
async def test_an_exception_spiffworkflow_raises_while_a_start_message_is_caught_is_a_process_error(
        client: Any, ext: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start too: the new instance is stored in error naming its start event, the request answers 400."""
    from SpiffWorkflow.bpmn.exceptions import WorkflowDataException

    from quart_spiff_messages.engine import Engine

    def catch_raises(self: Engine, task: Any, message_name: str, payload: Any) -> bool:
        raise WorkflowDataException("Missing data input", task=task)

    monkeypatch.setattr(Engine, "_catch", catch_raises)
    resp = await client.post("/v1.0/messages/order_received", json={"order_id": "E-1"})
    body = await resp.get_json()
    assert (resp.status_code, body["error_code"], body["error_type"]) == (400, "process_error",
                                                                          "WorkflowDataException"), body
    shown = (await (await client.get(f"/v1.0/process-instances/{body['process_instance']['id']}")).get_json())
    assert (shown["process_instance"]["status"], shown["process_instance"]["error"]["task"]) == (
        "error", body["task"])
    assert body["task"] is not None
    assert await ext.runtime.reads.invariant_violations() == []


@pytest.mark.bpmn(CASES / "services")
async def test_an_exception_spiffworkflow_raises_on_a_service_result_is_a_process_error(
        client: Any, ext: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from uuid import UUID

    from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException

    from quart_spiff_messages.engine import Engine

    started = await (await client.post("/v1.0/process-instances/svc_remote", json={"job": "J-9"})).get_json()
    pid = started["process_instance"]["id"]
    shown = (await (await client.get(f"/v1.0/process-instances/{pid}")).get_json())["process_instance"]
    [wait] = shown["waiting_for"]

    def result_raises(self: Engine, inst: Any, task_ref: str, result: Any) -> str:
        raise WorkflowTaskException("the result does not fit", task=inst.workflow.get_task_from_id(UUID(task_ref)))

    monkeypatch.setattr(Engine, "complete_service", result_raises)
    resp = await client.put(f"/v1.0/tasks/{pid}/{wait['task_guid']}/callback", json={"ok": True})
    body = await resp.get_json()
    assert (resp.status_code, body["error_code"], body["task"]) == (400, "process_error", "svc_remote_call"), body
    shown = (await (await client.get(f"/v1.0/process-instances/{pid}")).get_json())["process_instance"]
    assert (shown["status"], shown["error"]["task"], shown["waiting_for"]) == ("error", "svc_remote_call", [])
    assert await ext.runtime.reads.invariant_violations() == []
