"""Where an instance stands, element by element (``Reads.element_states``): the reading the console's diagram and
Spiff Arena's task-info share. Each instance is driven over HTTP; the states are read from its saved state."""

from __future__ import annotations

from typing import Any

import pytest

from quart_spiff_messages import SpiffMessages

from .conftest import CASES


def markers(rows: list[Any], process_id: str) -> dict[str, str | None]:
    """The latest marker of each element of ``process_id`` (as a diagram shows it)."""
    out: dict[str, tuple[float, str | None]] = {}
    for r in rows:
        if r.element_id and r.process_id == process_id:
            seen = out.get(r.element_id)
            if seen is None or r.last_state_change >= seen[0]:
                out[r.element_id] = (r.last_state_change, r.marker)
    return {k: v[1] for k, v in out.items()}


@pytest.mark.bpmn(CASES / "shapes")
async def test_a_call_activity_shows_its_parent_and_the_called_process(client: Any, ext: SpiffMessages) -> None:
    resp = await client.post("/v1.0/messages/ca_start", json={"order_id": "C-1"})
    pid = (await resp.get_json())["process_instance"]["id"]
    row, rows = await ext.runtime.reads.element_states(pid)
    assert row.id == pid
    parent = markers(rows, "ca_parent")
    assert parent["ca_parent_start"] == "completed" and parent["ca_parent_extract"] == "completed"
    assert parent["ca_call"] == "active" and parent.get("ca_parent_end") is None
    child = markers(rows, "ca_child")
    assert child["ca_child_start"] == "completed" and child["ca_child_wait"] == "waiting"
    call = next(r for r in rows if r.element_id == "ca_call")
    assert call.called_process == "ca_child" and call.typename == "CallActivity"
    assert {r.process_guid for r in rows if r.process_id == "ca_child"} == {call.guid}
    assert all(r.state not in ("MAYBE", "LIKELY") for r in rows)

    await client.post("/v1.0/messages/ca_inner_done", json={"order_id": "C-1"})
    _, rows = await ext.runtime.reads.element_states(pid)
    assert set(markers(rows, "ca_parent").values()) == {"completed"}
    assert markers(rows, "ca_child")["ca_child_record"] == "completed"


@pytest.mark.bpmn(CASES / "failing")
async def test_the_task_that_failed_shows_error(client: Any, ext: SpiffMessages) -> None:
    started = await (await client.post("/v1.0/process-instances/divider", json={})).get_json()
    pid = started["process_instance"]["id"]
    assert markers((await ext.runtime.reads.element_states(pid))[1], "divider")["wait_divisor"] == "waiting"
    await client.post("/v1.0/messages/divisor", json={"value": 0})
    found = markers((await ext.runtime.reads.element_states(pid))[1], "divider")
    assert found["wait_divisor"] == "completed" and found["divide"] == "error"
    assert found.get("divider_end") is None


@pytest.mark.bpmn(CASES / "human")
async def test_a_human_task_shows_ready(client: Any, ext: SpiffMessages) -> None:
    resp = await client.post("/v1.0/messages/approval_requested", json={"order_id": "H-1", "total": 12})
    assert resp.status_code == 200, await resp.get_data()
    pid = (await resp.get_json())["process_instance"]["id"]
    rows = (await ext.runtime.reads.element_states(pid))[1]
    assert markers(rows, "approval")["approve"] == "ready"
    assert all(r.manual and r.state == "READY" for r in rows if r.marker == "ready")
