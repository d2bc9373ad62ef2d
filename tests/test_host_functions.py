"""Host functions: the host gives BPMN scripts functions of its own, told which instance, task and caller they run
for; payload fields never replace them and correlation retrieval expressions never see them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from quart_spiff_messages import ScriptContext, SpiffMessages
from quart_spiff_messages.pytest_plugin import BpmnHarness

from .conftest import CASES

pytestmark = pytest.mark.bpmn(CASES / "host")


def current_user(context: ScriptContext) -> Any:
    return context.caller["user"] if context.caller else None


def where_am_i(context: ScriptContext) -> dict[str, Any]:
    return {"instance": context.process_instance_id, "process": context.process_id,
            "group": context.process_group, "element": context.element_id, "task": context.task_guid}


def is_admin(context: ScriptContext) -> bool:
    return bool(context.caller and context.caller.get("role") == "admin")


@pytest.fixture
def spiff_script_functions() -> dict[str, Callable[..., Any]]:
    return {"current_user": current_user, "where_am_i": where_am_i, "is_admin": is_admin}


async def test_a_script_reads_the_caller_the_hosts_identify_hook_names(client: Any, ext: SpiffMessages) -> None:
    ext.identify = lambda request: {"user": request.headers.get("X-User"), "role": request.headers.get("X-Role")}

    @ext.script_function("greet")
    def hello(name: str) -> str:
        return f"hello {name}"

    resp = await client.post("/v1.0/process-instances/host_calls", json={"greet": "not a function"},
                             headers={"X-User": "ann", "X-Role": "admin"})
    body = await resp.get_json()
    assert resp.status_code == 201, body
    data, instance = body["task_data"], body["process_instance"]
    assert instance["status"] == "complete"
    assert (data["who"], data["greeting"], data["path"]) == ("ann", "hello Ann", "admin")
    assert data["where"]["instance"] == instance["id"] and data["where"]["process"] == "host_calls"
    assert data["where"]["element"] == "host_calls_script" and len(data["where"]["task"]) == 36
    assert data["greet"] == "not a function"  # the field stays data, the function stays callable


async def test_the_authorize_hook_can_name_the_caller(app: Any, client: Any, ext: SpiffMessages) -> None:
    ext.authorize = lambda request, action: {"user": "bob", "role": "clerk"}
    ext.script_functions["greet"] = lambda name: name
    resp = await client.post("/v1.0/process-instances/host_calls", json={})
    data = (await resp.get_json())["task_data"]
    assert (data["who"], data["path"]) == ("bob", "other")


async def test_a_run_no_request_caused_has_no_caller(spiff: BpmnHarness) -> None:
    spiff.extension.script_functions["greet"] = lambda name: name
    done = await spiff.start_process("host_calls")
    view = await spiff.assert_status(done, "complete")
    assert view.data["who"] is None and view.data["where"]["instance"] == view.id


async def test_retrieval_expressions_do_not_see_host_functions(client: Any, ext: SpiffMessages) -> None:
    ext.script_functions["greet"] = lambda name: name
    resp = await client.post("/v1.0/messages/host_pure", json={"name": "Ann"})
    assert (resp.status_code, (await resp.get_json())["error_code"]) == (400, "message_not_accepted")


async def test_the_python_api_names_the_caller_as_identify_does_over_http(spiff: BpmnHarness) -> None:
    """Issue 23: a host calling the Python API says who the caller is; scripts see it as over HTTP."""
    spiff.extension.script_functions["greet"] = lambda name: name
    started = await spiff.extension.start_process("host_calls", caller={"user": "ann", "role": "admin"})
    await spiff.assert_data(started, who="ann", path="admin")
    through_harness = await spiff.start_process("host_calls", caller={"user": "cy", "role": "clerk"})
    await spiff.assert_data(through_harness, who="cy", path="other")
    nobody = await spiff.start_process("host_calls")  # the caller of one call does not stay for the next
    await spiff.assert_data(nobody, who=None, path="other")


async def test_a_message_and_a_task_completion_from_python_carry_their_callers(spiff: BpmnHarness) -> None:
    asked = await spiff.send_message("host_approval_requested", {"amount": 5}, caller={"user": "ann"})
    await spiff.assert_task_ready(asked, "host_approval_approve")
    await spiff.assert_data(asked, requested_by="ann")
    done = await spiff.complete_task(asked, "host_approval_approve", {"ok": True}, caller={"user": "bob"})
    assert done.kind == "task_completed"
    await spiff.assert_data(asked, requested_by="ann", approved_by="bob")
