"""Human steps: a READY user or manual task is completed over HTTP, in Python or with the pytest plugin, through the
transaction core, and the instance runs on to its next wait."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from quart_spiff_messages.pytest_plugin import BpmnHarness

from .conftest import CASES

pytestmark = pytest.mark.bpmn(CASES / "human")


async def test_approve_then_pay_with_the_pytest_plugin(spiff: BpmnHarness) -> None:
    order = await spiff.send_message("approval_requested", {"order_id": "H-1", "total": 30})
    await spiff.assert_task_ready(order, "approve")
    await spiff.complete_task(order, "approve", {"approved": True})
    await spiff.assert_waiting_for(order, "approval_paid", correlation={"approval_order_id": "H-1"})
    await spiff.send_message("approval_paid", {"order_id": "H-1", "amount": 30})
    await spiff.complete_task(order, "ship")
    await spiff.assert_status(order, "complete")
    await spiff.assert_data(order, approved=True, payment={"order_id": "H-1", "amount": 30})


async def test_the_python_api_completes_a_task_by_guid(spiff: BpmnHarness) -> None:
    order = await spiff.send_message("approval_requested", {"order_id": "H-2"})
    assert order.instance is not None
    tasks = await spiff.extension.list_tasks(order.instance.id)
    assert [(t.element_id, t.type, t.state) for t in tasks] == [("approve", "UserTask", "READY")]
    assert tasks[0].form == {"json_schema": "approve-schema.json", "ui_schema": "approve-uischema.json"}
    done = await spiff.extension.complete_task(order.instance.id, tasks[0].id, {"approved": False})
    assert done.kind == "task_completed"
    assert done.task_data == {"request": {"order_id": "H-2"}, "order_id": "H-2", "approved": False}
    assert await spiff.extension.list_tasks(order.instance.id) == []


async def _json(resp: Any) -> Any:
    return await resp.get_json()


async def test_approve_then_pay_over_http(client: Any) -> None:
    resp = await client.post("/v1.0/messages/approval_requested", json={"order_id": "H-3", "total": 12})
    instance = (await _json(resp))["process_instance"]
    assert instance["status"] == "user_input_required"
    shown = (await _json(await client.get(f"/v1.0/process-instances/{instance['id']}")))["process_instance"]
    [approve] = shown["tasks"]
    assert (approve["element_id"], approve["type"], approve["state"]) == ("approve", "UserTask", "READY")

    task = await _json(await client.get(f"/v1.0/tasks/{instance['id']}/{approve['id']}"))
    assert task["name"] == "Approve the order"
    assert task["properties"]["formJsonSchemaFilename"] == "approve-schema.json"
    assert task["data"] == {"request": {"order_id": "H-3", "total": 12}, "order_id": "H-3"}

    resp = await client.put(f"/v1.0/tasks/{instance['id']}/{approve['id']}", json={"approved": True})
    body = await _json(resp)
    assert resp.status_code == 200, body
    assert body["task_data"]["approved"] is True
    assert body["process_instance"]["status"] == "waiting"
    again = await client.put(f"/v1.0/tasks/{instance['id']}/{approve['id']}", json={"approved": False})
    assert (again.status_code, (await _json(again))["error_code"]) == (409, "task_not_ready")

    paid = await client.post("/v1.0/messages/approval_paid", json={"order_id": "H-3", "amount": 12})
    assert (await _json(paid))["process_instance"]["id"] == instance["id"]
    shipped = await client.put(f"/v1.0/tasks/{instance['id']}/ship", json={})  # by element id: one is READY
    assert (await _json(shipped))["process_instance"]["status"] == "complete"
    after = await _json(await client.get(f"/v1.0/tasks/{instance['id']}/{approve['id']}"))
    assert after["state"] == "COMPLETED"
    assert after["data"]["approved"] is True  # the first completion's data, not the refused second one's


async def test_task_errors(client: Any) -> None:
    resp = await client.post("/v1.0/messages/approval_requested", json={"order_id": "H-4"})
    instance = (await _json(resp))["process_instance"]["id"]

    async def put(path: str, **kwargs: Any) -> tuple[int, str | None]:
        answer = await client.put(path, **kwargs)
        return answer.status_code, (await _json(answer)).get("error_code")

    assert await put("/v1.0/tasks/999/approve", json={}) == (404, "process_instance_not_found")
    assert await put(f"/v1.0/tasks/{instance}/no_such_task", json={}) == (404, "task_not_found")
    assert await put(f"/v1.0/tasks/{instance}/00000000-0000-0000-0000-000000000000", json={}) == \
        (404, "task_not_found")
    assert await put(f"/v1.0/tasks/{instance}/ship", json={}) == (409, "task_not_ready")  # not reached yet
    assert await put(f"/v1.0/tasks/{instance}/approve", json=[1, 2]) == (400, "invalid_payload")
    assert await put(f"/v1.0/tasks/{instance}/approve", data=b'{"amount": 1e400}',
                     headers={"Content-Type": "application/json"}) == (400, "invalid_payload")
    assert (await client.get("/v1.0/tasks/abc/approve")).status_code == 404
    shown = (await _json(await client.get(f"/v1.0/process-instances/{instance}")))["process_instance"]
    assert [t["element_id"] for t in shown["tasks"]] == ["approve"]  # nothing above changed it


async def test_two_completions_at_once_one_wins(client: Any) -> None:
    resp = await client.post("/v1.0/messages/approval_requested", json={"order_id": "H-5"})
    instance = (await _json(resp))["process_instance"]["id"]
    answers = await asyncio.gather(*(client.put(f"/v1.0/tasks/{instance}/approve", json={"approved": n})
                                     for n in (1, 2)))
    assert sorted(a.status_code for a in answers) == [200, 409]
    shown = (await _json(await client.get(f"/v1.0/process-instances/{instance}")))["process_instance"]
    winner = next(a for a in answers if a.status_code == 200)
    assert shown["data"]["approved"] == (await _json(winner))["task_data"]["approved"]


async def test_reading_and_completing_tasks_are_authorized_actions(spiff: BpmnHarness) -> None:
    asked: list[str] = []

    def authorize(request: Any, action: str) -> bool:
        asked.append(action)
        return action != "complete_task"

    spiff.extension.authorize = authorize
    client = spiff.app.test_client()
    resp = await client.post("/v1.0/messages/approval_requested", json={"order_id": "H-6"})
    instance = (await resp.get_json())["process_instance"]["id"]
    assert (await client.get(f"/v1.0/tasks/{instance}/approve")).status_code == 200
    refused = await client.put(f"/v1.0/tasks/{instance}/approve", json={"approved": True})
    assert (refused.status_code, (await refused.get_json())["error_code"]) == (403, "forbidden")
    assert asked[-2:] == ["read_task", "complete_task"]
    await spiff.assert_task_ready(instance, "approve")
