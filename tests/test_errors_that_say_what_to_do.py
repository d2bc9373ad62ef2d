"""Refusals that say what to do (issue 23): the ``group:process`` a bare process id probably meant, the READY tasks
when a task name is wrong, no traceback for a 4xx (over HTTP, in a host's own view, in a harness test), and timer
due times people can read beside the epoch seconds."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import pytest
from quart import Quart

from quart_spiff_messages import SpiffMessages
from quart_spiff_messages.errors import ProcessNotFound, TaskNotFound, TaskNotReady
from quart_spiff_messages.pytest_plugin import BpmnHarness

from .conftest import CASES, FIXTURES

HUMAN = CASES / "human"


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_a_process_id_without_its_group_is_told_the_group(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    resp = await client.post("/v1.0/process-instances/payment_recovery", json={})
    body = await resp.get_json()
    assert (resp.status_code, body["error_code"]) == (404, "process_not_found")
    assert body["did_you_mean"] == ["orders:payment_recovery"]
    assert "did you mean `orders:payment_recovery`?" in body["message"]
    retried = await client.post(f"/v1.0/process-instances/{body['did_you_mean'][0]}", json={})
    assert retried.status_code != 404  # the suggestion is a process the API knows

    typo = await (await client.post("/v1.0/process-instances/shiping_process", json={})).get_json()
    assert typo["did_you_mean"] == ["shipping_process"] and "`shipping_process`" in typo["message"]
    nothing = await (await client.post("/v1.0/process-instances/zzz", json={})).get_json()
    assert nothing["did_you_mean"] == [] and "did you mean" not in nothing["message"]
    assert not _tracebacks(caplog)


@pytest.mark.bpmn(HUMAN)
async def test_a_wrong_task_name_lists_the_ready_tasks_without_a_traceback(
        client: Any, caplog: pytest.LogCaptureFixture) -> None:
    started = await (await client.post("/v1.0/messages/approval_requested", json={"order_id": "E-1"})).get_json()
    instance = started["process_instance"]["id"]
    caplog.clear()
    resp = await client.put(f"/v1.0/tasks/{instance}/aprove", json={"approved": True})
    body = await resp.get_json()
    assert (resp.status_code, body["error_code"]) == (404, "task_not_found")
    [ready] = body["ready_tasks"]
    assert (ready["element_id"], ready["name"]) == ("approve", "Approve the order")
    assert "READY tasks: 'approve' (Approve the order)" in body["message"]
    done = await client.put(f"/v1.0/tasks/{instance}/{ready['task_guid']}", json={"approved": False})
    assert done.status_code == 200  # the guid it names completes the task
    again = await (await client.put(f"/v1.0/tasks/{instance}/{ready['task_guid']}", json={})).get_json()
    assert again["error_code"] == "task_not_ready" and again["ready_tasks"] == []
    assert again["message"].endswith("it has no READY task")
    assert not _tracebacks(caplog)


@pytest.mark.spiff_bpmn(str(HUMAN))
async def test_a_refusal_in_a_harness_test_points_at_the_tests_line(spiff: BpmnHarness) -> None:
    order = await spiff.send_message("approval_requested", {"order_id": "E-2"})
    with pytest.raises(TaskNotFound, match=r"READY tasks: 'approve'") as refused:
        await spiff.complete_task(order, "aprove")
    shown = refused.traceback.filter(refused)  # what pytest prints: the frames not hidden
    assert [entry.name for entry in shown] == ["test_a_refusal_in_a_harness_test_points_at_the_tests_line"]
    with pytest.raises(ProcessNotFound, match="did you mean"):
        await spiff.start_process("approvals")
    await spiff.complete_task(order, "approve", {"approved": False})
    with pytest.raises(TaskNotReady, match="it has no READY task"):
        await spiff.complete_task(order, "approve")


async def test_a_refusal_in_a_host_view_is_its_4xx_not_a_500(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    app = Quart("host")
    app.config.update(SPIFF_MESSAGES_BPMN_DIR=str(HUMAN),
                      SPIFF_MESSAGES_DATABASE_URL=f"sqlite:///{tmp_path / 'host.db'}")
    messages = SpiffMessages(app)

    @app.post("/approve/<int:instance_id>/<task>")
    async def approve(instance_id: int, task: str) -> dict[str, Any]:
        outcome = await messages.complete_task(instance_id, task, {"approved": True})
        return {"kind": outcome.kind}

    async with app.test_app():
        client = app.test_client()
        started = await messages.send_message("approval_requested", {"order_id": "E-3"})
        assert started.instance is not None
        caplog.clear()
        wrong = await client.post(f"/approve/{started.instance.id}/aprove")
        body = await wrong.get_json()
        assert (wrong.status_code, body["error_code"]) == (404, "task_not_found")
        assert body["ready_tasks"][0]["element_id"] == "approve"
        right = await client.post(f"/approve/{started.instance.id}/approve")
        assert (right.status_code, await right.get_json()) == (200, {"kind": "task_completed"})
    assert not _tracebacks(caplog)


async def test_a_hosts_own_handler_for_refusals_wins(tmp_path: Any) -> None:
    from quart_spiff_messages import SpiffMessagesError

    app = Quart("host")
    app.config.update(SPIFF_MESSAGES_BPMN_DIR=str(FIXTURES),
                      SPIFF_MESSAGES_DATABASE_URL=f"sqlite:///{tmp_path / 'host.db'}")

    @app.errorhandler(SpiffMessagesError)
    async def mine(exc: SpiffMessagesError) -> tuple[dict[str, str], int]:
        return {"mine": exc.error_code}, 418

    messages = SpiffMessages(app)

    @app.post("/start")
    async def start() -> dict[str, Any]:
        await messages.start_process("nowhere")
        return {}

    async with app.test_app():
        resp = await app.test_client().post("/start")
        assert (resp.status_code, await resp.get_json()) == (418, {"mine": "process_not_found"})


def _from_iso(text: str) -> float:
    assert text.endswith("Z")
    return datetime.fromisoformat(text[:-1] + "+00:00").timestamp()


async def test_timer_due_times_are_readable_beside_the_epoch(client: Any, spiff: BpmnHarness) -> None:
    invoice = await spiff.send_message("billing:invoice_issued", {"invoice_id": "I-9"})
    view = await spiff.assert_timer_waiting(invoice, "invoice_timeout")
    [timer] = view.timers
    assert timer["due_at_in_seconds"] == spiff.clock.now + 3600  # the number stays, for programs
    assert _from_iso(timer["due_at"]) == timer["due_at_in_seconds"]
    assert timer["due_at"] in view.describe()

    resp = await client.get(f"/v1.0/process-instances/{view.id}")
    [wait] = [w for w in (await resp.get_json())["process_instance"]["waiting_for"] if w["kind"] == "timer"]
    assert wait["due_at_in_seconds"] == timer["due_at_in_seconds"] and wait["due_at"] == timer["due_at"]
    document = await (await client.get("/v1.0/openapi.json")).get_json()
    assert "due_at" in document["components"]["schemas"]["WaitOut"]["properties"]
