"""Timers on the app's clock: what fires when, that an overdue timer beats a late message, and that each fires once.

The clock is the test's (``clock.advance`` instead of sleeping) and the app's timer loop is off here, so nothing
fires behind a test's back: the harness fires what is due before it acts or looks, ``spiff.fire_timers()`` when a
test asks over HTTP, and a message fires its instance's overdue timers itself (the precedence rule). The timer loop,
real time and several workers are in ``test_timers_server.py``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest

from quart_spiff_messages import SpiffMessages
from quart_spiff_messages.clock import ManualClock
from quart_spiff_messages.pytest_plugin import BpmnHarness

from .conftest import CASES

pytestmark = pytest.mark.bpmn(CASES / "timers")


@pytest.fixture
def spiff_config() -> dict[str, Any]:
    return {"SPIFF_MESSAGES_TIMER_INTERVAL_SECONDS": 0}


async def _json(resp: Any) -> Any:
    return await resp.get_json()


async def _instance(client: Any, instance_id: int) -> dict[str, Any]:
    resp = await client.get(f"/v1.0/process-instances/{instance_id}")
    assert resp.status_code == 200
    found: dict[str, Any] = (await _json(resp))["process_instance"]
    return found


async def _state_of(client: Any, instance_id: int, element_id: str) -> str:
    """The state of the element's task; ``absent`` when the instance has none (a branch not taken is pruned)."""
    resp = await client.get(f"/v1.0/tasks/{instance_id}/{element_id}")
    if resp.status_code == 404:
        return "absent"
    assert resp.status_code == 200, await _json(resp)
    return str((await _json(resp))["state"])


async def _fired(ext: SpiffMessages, instance_id: int) -> list[str]:
    return [e.data["element_id"] for e in await ext.events(0, 10_000)
            if e.kind == "timer_fired" and e.process_instance_id == instance_id]


async def test_a_waiting_timer_is_shown_and_fires_when_the_clock_reaches_it(
        client: Any, spiff: BpmnHarness, clock: ManualClock, ext: SpiffMessages) -> None:
    resp = await client.post("/v1.0/process-instances/tick", json={})
    started = (await _json(resp))["process_instance"]
    shown = await _instance(client, started["id"])
    assert shown["status"] == "waiting"
    due_at = shown["waiting_for"][0].pop("due_at")  # the same time for people (ISO 8601, UTC)
    assert datetime.fromisoformat(due_at.replace("Z", "+00:00")).timestamp() == clock.now + 1
    assert shown["waiting_for"] == [{"kind": "timer", "element_id": "tick_wait", "timer_type": "duration",
                                     "due_at_in_seconds": clock.now + 1}]
    clock.advance(0.5)
    assert await spiff.fire_timers() == 0
    assert (await _instance(client, started["id"]))["status"] == "waiting"
    clock.advance(0.5)
    assert await spiff.fire_timers() == 1
    done = await _instance(client, started["id"])
    assert (done["status"], done["data"], done["waiting_for"]) == ("complete", {"ticked": True}, [])
    assert await _fired(ext, started["id"]) == ["tick_wait"]
    metrics = (await (await client.get("/metrics")).get_data()).decode()
    assert 'spiff_timer_fired_total{kind="instance"}' in metrics
    assert "spiff_timers_pending 0.0" in metrics


async def test_a_boundary_timeout_runs_once_and_a_later_message_is_refused(
        client: Any, clock: ManualClock, spiff: BpmnHarness, ext: SpiffMessages) -> None:
    order = await spiff.start_process("boundary", {"order_id": "B-1"})
    await spiff.assert_timer_waiting(order, "boundary_timeout")
    clock.advance(2)
    view = await spiff.assert_status(order, "complete")
    await spiff.assert_completed(view, "boundary_timed_out")
    assert await _state_of(client, view.id, "boundary_replied") != "COMPLETED"
    assert view.data["outcome"] == "timeout"
    resp = await client.post("/v1.0/messages/boundary_reply", json={"order_id": "B-1"})
    assert resp.status_code == 400
    assert (await _json(resp))["error_code"] == "message_not_accepted"
    clock.advance(60)
    await spiff.fire_timers()
    assert await _fired(ext, view.id) == ["boundary_timeout"]


async def test_a_reply_before_the_timeout_cancels_the_timer(
        client: Any, clock: ManualClock, spiff: BpmnHarness, ext: SpiffMessages) -> None:
    order = await spiff.start_process("boundary", {"order_id": "B-2"})
    clock.advance(1.5)
    resp = await client.post("/v1.0/messages/boundary_reply", json={"order_id": "B-2"})
    assert resp.status_code == 200, await _json(resp)
    view = await spiff.assert_status(order, "complete")
    await spiff.assert_completed(view, "boundary_replied")
    assert view.data["outcome"] == "reply"
    clock.advance(60)
    await spiff.fire_timers()
    assert await _fired(ext, view.id) == []
    assert await _state_of(client, view.id, "boundary_timed_out") != "COMPLETED"


@pytest.mark.parametrize("answer_at, branch", [(0.5, "gateway_answered"), (4, "gateway_timed_out")])
async def test_an_event_based_gateway_takes_exactly_one_branch(
        client: Any, clock: ManualClock, spiff: BpmnHarness, ext: SpiffMessages, answer_at: float,
        branch: str) -> None:
    order = await spiff.start_process("gateway", {"order_id": "G-1", "timeout": "PT2S"})
    clock.advance(answer_at)
    resp = await client.post("/v1.0/messages/gateway_answer", json={"order_id": "G-1", "ok": True})
    assert resp.status_code == (200 if branch == "gateway_answered" else 400), await _json(resp)
    clock.advance(10)
    await spiff.fire_timers()
    view = await spiff.assert_status(order, "complete")
    other = {"gateway_answered": "gateway_timed_out", "gateway_timed_out": "gateway_answered"}[branch]
    assert await _state_of(client, view.id, branch) == "COMPLETED"
    assert await _state_of(client, view.id, other) != "COMPLETED"
    assert view.data["outcome"] == ("answer" if branch == "gateway_answered" else "timeout")
    assert ("answer" in view.data) == (branch == "gateway_answered")
    assert await _fired(ext, view.id) == ([] if branch == "gateway_answered" else ["gateway_timeout"])


async def test_an_overdue_timeout_sends_a_late_message_on_to_the_buffer(client: Any, clock: ManualClock,
                                                                      spiff: BpmnHarness) -> None:
    """The timeout is overdue when the message comes: it fires first, in the message's transaction, and the
    message, finding nobody waiting, is kept for its time to live."""
    order = await spiff.start_process("boundary", {"order_id": "B-3"})
    assert order.instance is not None
    clock.advance(5)
    key = str(uuid.uuid4())
    resp = await client.post(f"/v1.0/messages/boundary_reply?time_to_live_in_seconds=60&message_instance_uuid={key}",
                             json={"order_id": "B-3"})
    assert resp.status_code == 202, await _json(resp)
    shown = await _instance(client, order.instance.id)
    assert (shown["status"], shown["data"]["outcome"]) == ("complete", "timeout")


async def test_a_non_interrupting_cycle_fires_three_times_while_the_task_waits(
        clock: ManualClock, spiff: BpmnHarness, ext: SpiffMessages) -> None:
    order = await spiff.start_process("reminder", {"order_id": "R-1"})
    for _ in range(4):
        clock.advance(600)
        await spiff.assert_waiting_for(order, "reminder_done", correlation={"reminder_order_id": "R-1"})
    view = await spiff.instance(order)
    assert view.timers == []  # three cycles spent
    assert await _fired(ext, view.id) == ["reminder_cycle"] * 3
    await spiff.send_message("reminder_done", {"order_id": "R-1"})
    await spiff.assert_status(order, "complete")


async def test_a_timer_inside_a_subprocess_and_a_date_timer_from_data(clock: ManualClock,
                                                                      spiff: BpmnHarness) -> None:
    due = clock.now + 7200
    order = await spiff.start_process("nested", {"due": _iso(due)})
    await spiff.assert_timer_waiting(order, "nested_hour")
    clock.advance(3600)
    view = await spiff.assert_timer_waiting(order, "nested_date")
    assert view.timers[0]["due_at_in_seconds"] == due
    clock.advance(3599)
    await spiff.assert_status(order, "waiting")
    clock.advance(1)
    await spiff.assert_data(order, finished=True)
    await spiff.assert_status(order, "complete")


async def test_a_timer_inside_a_call_activity(clock: ManualClock, spiff: BpmnHarness) -> None:
    order = await spiff.start_process("caller")
    await spiff.assert_timer_waiting(order, "callee_wait")
    clock.advance(299)
    await spiff.assert_status(order, "waiting")
    clock.advance(1)
    await spiff.assert_status(order, "complete")
    await spiff.assert_completed(order, "callee_done")


def _iso(seconds: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


async def test_a_modeler_moves_the_clock_and_sees_the_timeout_path(spiff: BpmnHarness) -> None:
    order = await spiff.start_process("gateway", {"order_id": "M-1", "timeout": "PT1H"})
    spiff.clock.advance(3600)
    await spiff.assert_status(order, "complete")
    await spiff.assert_completed(order, "gateway_timed_out")
    await spiff.assert_data(order, outcome="timeout")


@pytest.mark.bpmn(CASES / "timer_start")
async def test_a_timer_start_event_starts_one_instance_per_due_time(client: Any, clock: ManualClock,
                                                                     spiff: BpmnHarness, ext: SpiffMessages) -> None:
    async def instances() -> int:
        return int((await _json(await client.get("/v1.0/process-instances?per_page=100")))["pagination"]["total"])

    assert await instances() == 0
    for expected in (1, 2, 3, 3):
        clock.advance(2)
        await spiff.fire_timers()
        assert await instances() == expected
    await ext.reload()  # the schedule is kept: a reload (or restart) neither repeats nor skips a due time
    clock.advance(10)
    await spiff.fire_timers()
    assert await instances() == 3
    listed = (await _json(await client.get("/v1.0/process-instances?per_page=100")))["results"]
    assert {i["status"] for i in listed} == {"complete"}
