"""Matching rules that need their own diagrams: exact before accept-any, and thrown messages that wait."""

from __future__ import annotations

from typing import Any

import pytest

from quart_spiff_messages import SpiffMessages

from .conftest import CASES

pytestmark = pytest.mark.bpmn(CASES / "ping")


async def instance_status(client: Any, instance_id: int) -> str:
    body = await (await client.get(f"/v1.0/process-instances/{instance_id}")).get_json()
    status: str = body["process_instance"]["status"]
    return status


async def test_exact_match_beats_an_older_accept_any_wait(ext: SpiffMessages, client: Any) -> None:
    anyone = await ext.start_process("any_ping_waiter", {})
    keyed = await ext.start_process("keyed_ping_waiter", {"key": "K"})
    assert anyone.instance and keyed.instance
    got = await ext.send_message("ping", {"key": "K", "n": 1})
    assert got.instance and got.instance.id == keyed.instance.id
    # The accept-any waiter, older, takes a message whose key nobody expects.
    got = await ext.send_message("ping", {"key": "other", "n": 2})
    assert got.instance and got.instance.id == anyone.instance.id


async def test_thrown_message_nobody_wants_stays_ready(ext: SpiffMessages, client: Any) -> None:
    sent = await ext.start_process("ping_sender", {"key": "K", "n": 1})
    assert sent.instance and sent.instance.status == "complete"
    listed = await (await client.get("/v1.0/messages", query_string={"name": "ping"})).get_json()
    [row] = listed["results"]
    assert (row["status"], row["message_type"], row["process_instance_id"]) == ("ready", "send", sent.instance.id)
    assert row["payload"] == {"key": "K", "n": 1}


async def test_ready_message_reaches_the_first_receiver_that_waits(ext: SpiffMessages, client: Any) -> None:
    await ext.start_process("ping_sender", {"key": "K", "n": 1})
    other = await ext.start_process("keyed_ping_waiter", {"key": "nope"})
    assert other.instance and other.instance.status == "waiting"
    taker = await ext.start_process("keyed_ping_waiter", {"key": "K"})
    assert taker.instance and taker.instance.status == "complete"
    assert taker.task_data and taker.task_data["got"] == {"key": "K", "n": 1}
    listed = await (await client.get("/v1.0/messages", query_string={"name": "ping"})).get_json()
    statuses = sorted((r["message_type"], r["status"], r["process_instance_id"]) for r in listed["results"])
    # the taker's receive row, the other still listed as a waiting receiver, and the message
    assert statuses == [("receive", "completed", taker.instance.id), ("receive", "ready", other.instance.id),
                        ("send", "completed", statuses[2][2])]


async def test_ready_messages_are_taken_oldest_first(ext: SpiffMessages) -> None:
    for n in (1, 2):
        await ext.start_process("ping_sender", {"key": f"K{n}", "n": n})
    first = await ext.start_process("any_ping_waiter", {})
    second = await ext.start_process("any_ping_waiter", {})
    assert first.task_data and first.task_data["got"]["n"] == 1
    assert second.task_data and second.task_data["got"]["n"] == 2
    third = await ext.start_process("any_ping_waiter", {})
    assert third.instance and third.instance.status == "waiting"


async def test_waiting_receiver_prefers_its_exact_ready_message(ext: SpiffMessages) -> None:
    await ext.start_process("ping_sender", {"key": "A", "n": 1})
    await ext.start_process("ping_sender", {"key": "B", "n": 2})
    keyed = await ext.start_process("keyed_ping_waiter", {"key": "B"})
    assert keyed.task_data and keyed.task_data["got"]["n"] == 2


async def test_thrown_message_reaches_a_waiting_instance_at_once(ext: SpiffMessages) -> None:
    keyed = await ext.start_process("keyed_ping_waiter", {"key": "K"})
    await ext.start_process("ping_sender", {"key": "K", "n": 5})
    assert keyed.instance
    instance_id = keyed.instance.id
    row = await ext.runtime.store.read(lambda tx: tx.instance(instance_id))
    assert row and row.status == "complete"
