"""Service tasks as external work: the instance waits at the task, the host's handler is called after the commit,
its result completes the task in a transaction of its own; retries, incidents, the callback route and retry."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from quart_spiff_messages import ServiceCall, SpiffMessages
from quart_spiff_messages.pytest_plugin import BpmnHarness

from .conftest import CASES

pytestmark = pytest.mark.bpmn(CASES / "services")


@pytest.fixture
def spiff_config() -> dict[str, Any]:
    return {"SPIFF_MESSAGES_SERVICE_BACKOFF_SECONDS": 0, "SPIFF_MESSAGES_SERVICE_ATTEMPTS": 3}


async def test_a_handler_gets_the_evaluated_parameters_and_its_result_completes_the_task(
        client: Any, ext: SpiffMessages) -> None:
    calls: list[ServiceCall] = []

    @ext.service_handler("http/GetRequestV2")
    async def fetch(call: ServiceCall) -> dict[str, Any]:
        calls.append(call)
        return {"status": "shipped", "url": call.params["url"]}

    resp = await client.post("/v1.0/messages/svc_order_placed", json={"order_id": "S-1"})
    body = await resp.get_json()
    assert resp.status_code == 200, body
    instance = body["process_instance"]
    assert instance["status"] == "waiting"  # the answer comes before the handler is called
    await ext.settle_services()
    [call] = calls
    assert call.params == {"url": "https://shop.example/orders/S-1", "timeout": 5}
    assert (call.process_instance_id, call.element_id, call.attempt) == (instance["id"], "svc_order_call", 1)
    shown = (await (await client.get(f"/v1.0/process-instances/{instance['id']}")).get_json())["process_instance"]
    assert shown["status"] == "complete", shown
    assert shown["data"]["response"] == {"status": "shipped", "url": "https://shop.example/orders/S-1"}
    assert shown["data"]["shipped"] is True
    assert [(s["operator"], s["status"], s["attempts"]) for s in shown["service_tasks"]] == [
        ("http/GetRequestV2", "completed", 0)]
    kinds = [e["kind"] for e in (await (await client.get("/v1.0/events")).get_json())["results"]]
    assert "service_task_waiting" in kinds and kinds[-1] == "instance_completed"


async def test_a_handler_that_raises_twice_completes_on_the_third_attempt(spiff: BpmnHarness) -> None:
    attempts: list[int] = []

    def flaky(call: ServiceCall) -> dict[str, Any]:  # a plain function works too
        attempts.append(call.attempt)
        if call.attempt < 3:
            raise ConnectionError(f"refused ({call.attempt})")
        return {"n": call.params["n"]}

    spiff.extension.service_handlers["flaky/op"] = flaky
    started = await spiff.start_process("svc_flaky", {"n": 21})
    await spiff.extension.settle_services()
    view = await spiff.assert_status(started, "complete")
    assert attempts == [1, 2, 3] and view.data["doubled"] == 42
    [service] = view.service_tasks
    assert (service["status"], service["attempts"], service["last_error"]) == (
        "completed", 2, "ConnectionError: refused (2)")


async def test_a_handler_that_always_raises_stops_the_instance_and_retry_runs_it_again(
        client: Any, ext: SpiffMessages) -> None:
    def broken(call: ServiceCall) -> Any:
        raise RuntimeError("backend down")

    ext.service_handlers["flaky/op"] = broken
    resp = await client.post("/v1.0/process-instances/svc_flaky", json={"n": 2})
    instance_id = (await resp.get_json())["process_instance"]["id"]
    await ext.settle_services()
    shown = (await (await client.get(f"/v1.0/process-instances/{instance_id}")).get_json())["process_instance"]
    assert shown["status"] == "error", shown
    error = shown["error"]
    assert (error["operator"], error["attempts"], error["last_error"]) == ("flaky/op", 3, "RuntimeError: backend down")
    assert "flaky/op" in error["message"] and error["task"] == "svc_flaky_call"

    ext.service_handlers["flaky/op"] = lambda call: {"n": call.params["n"]}  # fixed
    resp = await client.post(f"/v1.0/process-instances/{instance_id}/retry")
    assert resp.status_code == 200, await resp.get_json()
    await ext.settle_services()
    shown = (await (await client.get(f"/v1.0/process-instances/{instance_id}")).get_json())["process_instance"]
    assert (shown["status"], shown["data"]["doubled"], shown["error"]) == ("complete", 4, None)

    again = await client.post(f"/v1.0/process-instances/{instance_id}/retry")
    assert (again.status_code, (await again.get_json())["error_code"]) == (409, "process_instance_not_in_error")
    missing = await client.post("/v1.0/process-instances/999/retry")
    assert missing.status_code == 404


async def test_retry_runs_a_failed_script_on_the_reloaded_spec(spiff: BpmnHarness, tmp_path: Any) -> None:
    folder = tmp_path / "bpmn"
    folder.mkdir()
    source = (CASES / "services" / "services.bpmn").read_text()
    (folder / "services.bpmn").write_text(source.replace('doubled = flaky_result["n"] * 2', "doubled = 1 / 0"))
    spiff.extension.app.config["SPIFF_MESSAGES_BPMN_DIR"] = str(folder)
    state = spiff.extension._state()
    state.settings = type(state.settings).from_mapping(spiff.extension.app.config)
    await spiff.extension.reload()
    spiff.extension.service_handlers["flaky/op"] = lambda call: {"n": call.params["n"]}
    started = await spiff.start_process("svc_flaky", {"n": 5})
    await spiff.extension.settle_services()
    view = await spiff.assert_status(started, "error")
    assert view.error is not None and view.error["error_type"] == "ZeroDivisionError"

    (folder / "services.bpmn").write_text(source)  # the fix
    await spiff.extension.reload()
    retried = await spiff.extension.retry(view.id)
    assert retried.kind == "retried"
    view = await spiff.assert_status(view.id, "complete")
    assert view.data["doubled"] == 10


async def test_a_remote_worker_completes_a_waiting_service_task_with_the_callback(client: Any) -> None:
    resp = await client.post("/v1.0/process-instances/svc_remote", json={"job": "J-1"})
    instance_id = (await resp.get_json())["process_instance"]["id"]
    shown = (await (await client.get(f"/v1.0/process-instances/{instance_id}")).get_json())["process_instance"]
    assert shown["status"] == "waiting"
    [wait] = shown["waiting_for"]
    assert (wait["type"], wait["operator"], wait["params"], wait["element_id"]) == (
        "service_task", "remote/worker", {"job": "J-1"}, "svc_remote_call")

    url = f"/v1.0/tasks/{instance_id}/{wait['task_guid']}/callback"
    done = await client.put(url, json={"ok": True})
    body = await done.get_json()
    assert done.status_code == 200, body
    assert body["process_instance"]["status"] == "complete" and body["task_data"]["done"] is True
    again = await client.put(url, json={"ok": False})
    assert (again.status_code, (await again.get_json())["error_code"]) == (409, "service_task_not_waiting")
    unknown = await client.put(f"/v1.0/tasks/{instance_id}/00000000-0000-0000-0000-000000000000/callback", json={})
    assert (unknown.status_code, (await unknown.get_json())["error_code"]) == (404, "task_not_found")
    nobody = await client.put(f"/v1.0/tasks/999/{wait['task_guid']}/callback", json={})
    assert nobody.status_code == 404


async def test_the_callback_and_retry_have_actions_of_their_own(client: Any, ext: SpiffMessages) -> None:
    asked: list[str] = []
    ext.authorize = lambda request, action: asked.append(action) or action not in (
        "complete_service_task", "retry_process_instance")
    resp = await client.post("/v1.0/process-instances/svc_remote", json={"job": "J-2"})
    instance_id = (await resp.get_json())["process_instance"]["id"]
    shown = (await (await client.get(f"/v1.0/process-instances/{instance_id}")).get_json())["process_instance"]
    callback = await client.put(f"/v1.0/tasks/{instance_id}/{shown['waiting_for'][0]['task_guid']}/callback",
                                json={"ok": True})
    retry = await client.post(f"/v1.0/process-instances/{instance_id}/retry")
    assert (callback.status_code, retry.status_code) == (403, 403)
    assert asked[-2:] == ["complete_service_task", "retry_process_instance"]


class TestThePytestPluginMocksServices:
    @pytest.fixture
    def spiff_service_results(self) -> dict[str, Any]:
        def flaky(call: ServiceCall) -> dict[str, Any]:
            if call.attempt == 1:
                raise TimeoutError("slow")
            return {"n": call.params["n"] + 1}

        return {"http/GetRequestV2": {"status": "shipped"}, "flaky/op": flaky}

    async def test_a_value_and_a_callable_per_operator(self, spiff: BpmnHarness) -> None:
        order = await spiff.send_message("svc_order_placed", {"order_id": "P-1"})
        await spiff.assert_data(order, shipped=True, response={"status": "shipped"})
        flaky = await spiff.start_process("svc_flaky", {"n": 1})
        view = await spiff.assert_data(flaky, doubled=4)
        assert view.service_tasks[0]["attempts"] == 1

    async def test_an_operator_without_a_result_waits_for_the_callback(self, spiff: BpmnHarness) -> None:
        remote = await spiff.start_process("svc_remote", {"job": "J-9"})
        view = await spiff.assert_status(remote, "waiting")
        assert [(s["operator"], s["status"]) for s in view.service_tasks] == [("remote/worker", "waiting")]
        await spiff.complete_service_task(remote, "svc_remote_call", {"ok": True})
        await spiff.assert_data(remote, done=True)


async def test_a_healthy_service_task_logs_no_error_state_and_a_failed_one_does(
        spiff: BpmnHarness, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 23: SpiffWorkflow logged ``State changed to ERROR`` at INFO for every service task that waits."""
    caplog.set_level(logging.INFO, logger="spiff.task")
    remote = await spiff.start_process("svc_remote", {"job": "J-7"})
    await spiff.assert_status(remote, "waiting")
    changes = [r.getMessage() for r in caplog.records if r.name == "spiff.task"]
    assert "State changed to STARTED" in changes  # SpiffWorkflow's own records still come through
    assert "State changed to ERROR" not in changes
    await spiff.complete_service_task(remote, "svc_remote_call", {"ok": True})
    await spiff.assert_status(remote, "complete")
    assert "State changed to ERROR" not in [r.getMessage() for r in caplog.records if r.name == "spiff.task"]

    def broken(call: ServiceCall) -> None:
        raise RuntimeError("backend down")

    spiff.extension.service_handlers["flaky/op"] = broken
    caplog.clear()
    failed = await spiff.start_process("svc_flaky", {"n": 2})
    await spiff.assert_status(failed, "error")
    assert "State changed to ERROR" in [r.getMessage() for r in caplog.records if r.name == "spiff.task"]
