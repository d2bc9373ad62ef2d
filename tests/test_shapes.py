"""Ordinary BPMN shapes over HTTP: each message must reach the instance (and the task) its correlation names.

The diagrams are in ``tests/bpmn_cases/shapes/``, one file per shape, names prefixed per shape (``ca_``, ``sp_``,
...). Every correlation is on a key whose property reads a payload field (``order_id`` or ``group_id``).
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import CASES, make_app
from .test_messages_http import instance

SHAPES = CASES / "shapes"
pytestmark = pytest.mark.bpmn(SHAPES)


# -- HTTP helpers ------------------------------------------------------------------------------------------------
async def send(client: Any, name: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/v1.0/messages/{name}", json=payload)
    return resp.status_code, await resp.get_json()


async def delivered(client: Any, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Send a message that must be answered 200; the answer's process instance."""
    status, body = await send(client, name, payload)
    assert status == 200, (name, payload, status, body)
    pi: dict[str, Any] = body["process_instance"]
    return pi


async def refused(client: Any, name: str, payload: dict[str, Any]) -> None:
    status, body = await send(client, name, payload)
    assert (status, body.get("error_code")) == (400, "message_not_accepted"), (name, payload, status, body)


async def start(client: Any, process: str, data: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post(f"/v1.0/process-instances/{process}", json=data)
    assert resp.status_code == 201, await resp.get_data()
    pi: dict[str, Any] = (await resp.get_json())["process_instance"]
    return pi


def waits_for(shown: dict[str, Any]) -> list[str]:
    return sorted(w["message_name"] for w in shown["waiting_for"])


async def assert_waits_keyed(client: Any, instance_id: int, message: str, key: str, prop: str, value: Any) -> None:
    """The instance waits for ``message``, keyed on its own value (not accepting any message of that name)."""
    shown = await instance(client, instance_id)
    assert shown["status"] == "waiting", shown
    mine = [w for w in shown["waiting_for"] if w["message_name"] == message]
    assert mine, shown
    for wait in mine:
        assert wait["accepts_any"] is False, shown
        assert wait["correlation_keys"] == {key: {prop: value}}, shown


async def assert_no_waiting_instance_without_waits(client: Any) -> None:
    """An instance that is ``waiting`` always says what it waits for."""
    listed = await (await client.get("/v1.0/process-instances", query_string={"per_page": 1000})).get_json()
    for row in listed["results"]:
        shown = await instance(client, row["id"])
        if shown["status"] == "waiting":
            assert shown["waiting_for"], shown


# -- 1. call activity --------------------------------------------------------------------------------------------
async def test_call_activity_catch_takes_only_its_own_parents_message(client: Any) -> None:
    c1 = await delivered(client, "ca_start", {"order_id": "C-1"})
    c2 = await delivered(client, "ca_start", {"order_id": "C-2"})
    assert c1["id"] != c2["id"] and c1["status"] == c2["status"] == "waiting"
    await assert_waits_keyed(client, c1["id"], "ca_inner_done", "ca_key", "ca_order_id", "C-1")
    await assert_waits_keyed(client, c2["id"], "ca_inner_done", "ca_key", "ca_order_id", "C-2")

    got = await delivered(client, "ca_inner_done", {"order_id": "C-2"})
    assert got["id"] == c2["id"]
    shown = await instance(client, c2["id"])
    assert shown["status"] == "complete"
    assert shown["data"]["inner"] == {"order_id": "C-2"} and shown["data"]["inner_order_id"] == "C-2"
    assert (await instance(client, c1["id"]))["status"] == "waiting"

    await refused(client, "ca_inner_done", {"order_id": "C-9"})
    assert (await instance(client, c1["id"]))["status"] == "waiting"

    got = await delivered(client, "ca_inner_done", {"order_id": "C-1"})
    assert got["id"] == c1["id"] and got["status"] == "complete"
    assert (await instance(client, c1["id"]))["data"]["inner_order_id"] == "C-1"


# -- 2. embedded subprocess --------------------------------------------------------------------------------------
async def test_embedded_subprocess_catch_takes_only_its_own_instances_message(client: Any) -> None:
    s1 = await delivered(client, "sp_start", {"order_id": "S-1"})
    s2 = await delivered(client, "sp_start", {"order_id": "S-2"})
    await assert_waits_keyed(client, s1["id"], "sp_done", "sp_key", "sp_order_id", "S-1")
    await assert_waits_keyed(client, s2["id"], "sp_done", "sp_key", "sp_order_id", "S-2")

    got = await delivered(client, "sp_done", {"order_id": "S-2"})
    assert got["id"] == s2["id"] and got["status"] == "complete"
    assert (await instance(client, s2["id"]))["data"]["done"] == {"order_id": "S-2"}
    assert (await instance(client, s1["id"]))["status"] == "waiting"

    await refused(client, "sp_done", {"order_id": "S-9"})
    got = await delivered(client, "sp_done", {"order_id": "S-1"})
    assert got["id"] == s1["id"] and got["status"] == "complete"


# -- 3. event subprocess -----------------------------------------------------------------------------------------
async def test_event_subprocess_message_start_interrupts_only_its_own_instance(client: Any) -> None:
    e1 = await delivered(client, "es_start", {"order_id": "E-1"})
    e2 = await delivered(client, "es_start", {"order_id": "E-2"})
    for pi in (e1, e2):
        assert "es_proceed" in waits_for(await instance(client, pi["id"]))

    got = await delivered(client, "es_cancel", {"order_id": "E-2"})
    assert got["id"] == e2["id"]
    shown = await instance(client, e2["id"])
    assert shown["status"] == "complete", shown
    assert shown["data"]["outcome"] == "cancelled" and shown["data"]["cancelled_order_id"] == "E-2"

    shown = await instance(client, e1["id"])
    assert shown["status"] == "waiting" and "es_proceed" in waits_for(shown), shown
    assert "outcome" not in shown["data"]

    await refused(client, "es_cancel", {"order_id": "E-9"})
    await refused(client, "es_proceed", {"order_id": "E-2"})  # E-2 ended through the event subprocess
    got = await delivered(client, "es_proceed", {"order_id": "E-1"})
    assert got["id"] == e1["id"] and got["status"] == "complete"
    assert (await instance(client, e1["id"]))["data"]["outcome"] == "proceeded"


# -- 4. instance started over the API ----------------------------------------------------------------------------
async def test_api_started_instance_is_keyed_by_its_data(client: Any) -> None:
    b10 = await start(client, "api_process", {"order_id": "B-10"})
    b11 = await start(client, "api_process", {"order_id": "B-11"})
    assert b10["status"] == b11["status"] == "waiting"
    await assert_waits_keyed(client, b10["id"], "api_confirm", "api_key", "api_order_id", "B-10")
    await assert_waits_keyed(client, b11["id"], "api_confirm", "api_key", "api_order_id", "B-11")

    got = await delivered(client, "api_confirm", {"order_id": "B-11"})
    assert got["id"] == b11["id"] and got["status"] == "complete"
    assert (await instance(client, b11["id"]))["data"]["confirm"] == {"order_id": "B-11"}
    await assert_waits_keyed(client, b10["id"], "api_confirm", "api_key", "api_order_id", "B-10")

    await refused(client, "api_confirm", {"order_id": "B-99"})
    assert (await instance(client, b10["id"]))["status"] == "waiting"


# -- 5. peers of one process -------------------------------------------------------------------------------------
async def test_thrown_message_reaches_the_peer_of_its_group(client: Any) -> None:
    g2 = await start(client, "peer_waiter", {"group_id": "G-2"})
    g3 = await start(client, "peer_waiter", {"group_id": "G-3"})
    sender = await start(client, "peer_sender", {"group_id": "G-3"})
    assert sender["status"] == "complete"

    shown = await instance(client, g3["id"])
    assert shown["status"] == "complete", shown
    assert shown["data"]["sync"] == {"group_id": "G-3"}
    shown = await instance(client, g2["id"])
    assert shown["status"] == "waiting" and waits_for(shown) == ["peer_sync"], shown
    assert "sync" not in shown["data"]
    listed = await (await client.get("/v1.0/messages", query_string={"name": "peer_sync",
                                                                     "message_type": "receive"})).get_json()
    # the delivery's receive row, and G-2 still listed as a waiting receiver
    assert [(row["process_instance_id"], row["status"]) for row in listed["results"]] == \
        [(g3["id"], "completed"), (g2["id"], "ready")]


# -- 6. and 7. multi-instance receive tasks ----------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["mi", "ms"], ids=["parallel", "sequential"])
async def test_multi_instance_receive_takes_one_message_per_child(client: Any, prefix: str) -> None:
    order = f"{prefix.upper()}-1"
    started = await delivered(client, f"{prefix}_start", {"order_id": order})
    assert started["status"] == "waiting"
    waiting = 3 if prefix == "mi" else 1  # parallel: three children wait at once; sequential: one at a time
    assert waits_for(await instance(client, started["id"])) == [f"{prefix}_item_done"] * waiting

    for n in (1, 2, 3):
        got = await delivered(client, f"{prefix}_item_done", {"order_id": order, "n": n})
        assert got["id"] == started["id"], (n, got)
        shown = await instance(client, started["id"])
        if n < 3:
            assert shown["status"] == "waiting", (n, shown)
            left = 3 - n if prefix == "mi" else 1
            assert waits_for(shown) == [f"{prefix}_item_done"] * left, (n, shown)
    assert got["status"] == "complete"
    await refused(client, f"{prefix}_item_done", {"order_id": order, "n": 4})

    shown = await instance(client, started["id"])
    assert shown["status"] == "complete"
    results = shown["data"]["results"]
    assert sorted(r["n"] for r in results) == [1, 2, 3], results
    assert all(r["order_id"] == order for r in results), results


# -- 8. boundary event and inner catch of one message name -------------------------------------------------------
async def test_one_message_is_taken_by_one_of_a_boundary_and_an_inner_catch(client: Any) -> None:
    started = await delivered(client, "bi_start", {"order_id": "BI-1"})
    assert waits_for(await instance(client, started["id"])) == ["bi_ping", "bi_ping"]

    got = await delivered(client, "bi_ping", {"order_id": "BI-1"})
    assert got["id"] == started["id"] and got["status"] == "complete"
    data = (await instance(client, started["id"]))["data"]
    paths = {name: data[name] for name in ("boundary_path", "inner_path") if name in data}
    # Exactly one of the two catches takes the message. The documented rule is "the longest-waiting catch wins":
    # the boundary starts waiting when its activity (the subprocess) starts, before the inner catch is reached,
    # so the boundary takes it and interrupts the subprocess.
    assert paths == {"boundary_path": "boundary"}, data
    assert data["boundary_ping"] == {"order_id": "BI-1"} and "inner_ping" not in data, data
    await refused(client, "bi_ping", {"order_id": "BI-1"})


# -- 9. parallel multiple start event ----------------------------------------------------------------------------
@pytest.mark.parametrize(("order", "first", "second"), [("P-1", "pm_first", "pm_second"),
                                                        ("P-2", "pm_second", "pm_first")])
async def test_parallel_multiple_start_waits_for_both_messages(client: Any, order: str, first: str,
                                                               second: str) -> None:
    half = await delivered(client, first, {"order_id": order})
    assert half["status"] == "waiting"
    shown = await instance(client, half["id"])
    assert waits_for(shown) == [second], shown
    await assert_no_waiting_instance_without_waits(client)

    done = await delivered(client, second, {"order_id": order})
    assert done["id"] == half["id"] and done["status"] == "complete"
    assert (await instance(client, half["id"]))["data"]["started"] == "both"
    listed = await (await client.get("/v1.0/process-instances",
                                     query_string={"process_id": "pm_process"})).get_json()
    assert [row["id"] for row in listed["results"]] == [half["id"]]
    await assert_no_waiting_instance_without_waits(client)


async def test_parallel_multiple_starts_keep_their_orders_apart(client: Any) -> None:
    a = await delivered(client, "pm_first", {"order_id": "P-3"})
    b = await delivered(client, "pm_first", {"order_id": "P-4"})
    assert a["id"] != b["id"]
    done = await delivered(client, "pm_second", {"order_id": "P-4"})
    assert done["id"] == b["id"] and done["status"] == "complete"
    shown = await instance(client, a["id"])
    assert shown["status"] == "waiting" and waits_for(shown) == ["pm_second"], shown
    await assert_no_waiting_instance_without_waits(client)


# -- 10. business rule task --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("amount", "tier"), [(50, "bronze"), (500, "gold")])
async def test_business_rule_task_uses_the_dmn_table(client: Any, amount: int, tier: str) -> None:
    pi = await start(client, "br_process", {"amount": amount})
    assert pi["status"] == "complete", pi
    shown = await instance(client, pi["id"])
    assert shown["data"]["tier"] == tier and shown["data"]["amount"] == amount


async def test_multi_instance_children_merge_in_a_process_that_did_not_create_them(
        database_url: str, clock: Any) -> None:
    """A worker that loads an instance whose loop children another worker (or an earlier run) created still merges
    their outputs: SpiffWorkflow 3.2 wires a loop's merge only in the process that creates its children."""
    first_app, first = make_app(SHAPES, database_url, clock)
    async with first_app.test_app():
        started = await first.send_message("mi_start", {"order_id": "M-7"})
    assert started.instance is not None
    second_app, second = make_app(SHAPES, database_url, clock)  # a fresh catalog: spec objects of its own
    async with second_app.test_app():
        for n in (1, 2, 3):
            outcome = await second.send_message("mi_item_done", {"order_id": "M-7", "n": n})
            assert (outcome.kind, outcome.instance and outcome.instance.id) == ("delivered", started.instance.id)
        view = await second.runtime.reads.instance_view(started.instance.id)
        assert view.instance.status == "complete", view
        assert sorted(r["n"] for r in view.data["results"]) == [1, 2, 3], view.data
        assert await second.runtime.reads.invariant_violations() == []


@pytest.mark.bpmn(CASES / "announce")
async def test_a_thrown_message_nobody_receives_keeps_the_keys_spiffworkflow_computed(client: Any) -> None:
    started = await start(client, "announcer", {"order_id": "T-1"})
    assert started["status"] == "complete"
    resp = await client.get("/v1.0/messages", query_string={"name": "announce"})
    rows = (await resp.get_json())["results"]
    assert [(r["status"], r["process_instance_id"], r["correlation_keys"]) for r in rows] == \
        [("ready", started["id"], {"announce_key": {"announce_order_id": "T-1"}})]
