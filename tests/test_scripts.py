"""Scripts see Spiff Arena's default environment: Arena's diagrams run unchanged, imports are limited to it, and a
failing script is named in the answer."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from quart_spiff_messages.pytest_plugin import BpmnHarness

from .conftest import CASES

pytestmark = pytest.mark.bpmn(CASES / "scripts")


async def test_a_conversation_whose_scripts_use_the_environment_completes_in_one_request(client: Any) -> None:
    resp = await client.post("/v1.0/messages/chat_started", json={"conversation_id": "C-1"})
    body = await resp.get_json()
    assert resp.status_code == 200, body
    assert isinstance(body["task_data"]["nonce"], int) and len(body["task_data"]["token"]) == 36
    shown = await (await client.get(f"/v1.0/process-instances/{body['process_instance']['id']}")).get_json()
    assert shown["process_instance"]["data"]["matches"] is True, shown
    listed = await (await client.get("/v1.0/process-instances")).get_json()
    assert sorted((i["process_id"], i["status"]) for i in listed["results"]) == [
        ("chat_client", "complete"), ("chat_server", "complete")]


async def test_the_python_api_runs_the_same_conversation(spiff: BpmnHarness) -> None:
    chat = await spiff.send_message("chat_started", {"conversation_id": "C-2"})
    view = await spiff.assert_status(chat, "complete")
    assert view.data["answer"]["conversation_id"] == "C-2"
    assert "reply_id" not in view.data  # the server's data stays the server's


async def start(client: Any, process: str, data: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/v1.0/process-instances/{process}", json=data or {})
    return resp.status_code, await resp.get_json()


async def test_scripts_import_the_environment_modules(client: Any) -> None:
    status, body = await start(client, "script_imports")
    assert status == 201, body
    assert body["task_data"]["encoded"] == "[1, 2]" and body["task_data"]["day"] == "2020-01-02"
    assert "j" not in body["task_data"] and "date" not in body["task_data"]  # modules and classes are not data


async def test_an_import_outside_the_environment_is_a_process_error_that_says_which_may(client: Any) -> None:
    status, body = await start(client, "script_import_refused")
    assert (status, body["error_code"]) == (400, "process_error"), body
    assert body["task"] == "script_import_refused_script"
    assert "scripts may import only" in body["detail"] and "'os'" in body["detail"]


async def test_a_start_that_fails_in_its_first_script_names_that_task(client: Any) -> None:
    status, body = await start(client, "script_first_fails")
    assert (status, body["error_code"]) == (400, "process_error"), body
    assert body["task"] == "script_first_fails_script"
    assert "failed in task 'script_first_fails_script'" in body["detail"]
    assert "ZeroDivisionError" in body["detail"]


@pytest.mark.skipif(importlib.util.find_spec("dateparser") is not None, reason="the scripts extra is installed")
async def test_dateparser_without_the_extra_names_the_extra(client: Any) -> None:
    status, body = await start(client, "script_dateparser")
    assert (status, body["error_code"]) == (400, "process_error"), body
    assert "quart-spiff-messages[scripts]" in body["detail"], body


async def test_data_never_shadows_an_environment_name(client: Any) -> None:
    status, body = await start(client, "script_shadow", {"time": 5, "json": "text"})
    assert status == 201, body
    data = body["task_data"]
    assert data["kind"] == "module" and isinstance(data["now"], float) and data["stamp"] == '{"n": 1}'
    assert (data["time"], data["json"]) == (5, "text")  # the data keeps its own values
