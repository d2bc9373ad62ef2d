"""Spiff Arena's frontend one click away from the messages list, replayed over HTTP: the calls its instance page,
process-model page, Processes page and Home make (``shared/reference/arena-instance-pages.md``), with the fields
each one reads. The states the diagram is coloured with come from ``Reads.element_states``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from quart_spiff_messages import SpiffMessages

from .conftest import CASES, FIXTURES

# The fields of a task-info row the diagram and the click dialog dereference (never null where marked "must")
ROW_OBJECTS = ("task_definition_properties_json", "properties_json", "runtime_info")
HEADER = {"id", "status", "process_model_display_name", "process_model_identifier", "process_initiator_username",
          "start_in_seconds", "task_updated_at_in_seconds", "end_in_seconds", "bpmn_version_control_identifier",
          "bpmn_version_control_type", "bpmn_xml_file_contents", "bpmn_xml_file_contents_retrieval_error"}
DRAWN = {"COMPLETED", "READY", "WAITING", "STARTED", "CANCELLED", "ERROR"}  # the states the diagram colours


async def _json(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, await resp.get_data(as_text=True)
    assert resp.content_type.startswith("application/json")
    return await resp.get_json()


async def _allowed(client: Any, uri: str, method: str = "GET") -> bool:
    found = await _json(await client.post("/v1.0/permissions-check",
                                          json={"requests_to_check": {uri: [method]}}))
    return bool(found["results"][uri][method])


def coloured(rows: list[dict[str, Any]], process_ids: set[str]) -> dict[str, str]:
    """What the diagram draws: element id -> state, by the frontend's own rules (the row's bpmn_id equals its
    bpmn_identifier, the process is one the diagram shows, no repeated child, Root/Start/End never)."""
    out = {}
    for row in rows:
        assert all(isinstance(row[k], dict) for k in ROW_OBJECTS), row
        bpmn_id = row["task_definition_properties_json"]["bpmn_id"]
        if (row["bpmn_identifier"] in ("Root", "Start", "End") or not bpmn_id or bpmn_id != row["bpmn_identifier"]
                or row["bpmn_process_definition_identifier"] not in process_ids
                or "iteration" in row["runtime_info"]):
            continue
        if row["state"] in DRAWN:
            out[bpmn_id] = row["state"]
    return out


async def _instance_page(client: Any, model: str, instance_id: int, query: str = "") -> tuple[dict[str, Any],
                                                                                          list[dict[str, Any]]]:
    """The instance page's calls in its order: permissions, show, task-info (only when allowed), the tasks
    table, the banner's instruction."""
    info = f"/v1.0/process-instances/{model}/{instance_id}/task-info"
    assert await _allowed(client, info)  # otherwise the page never asks and draws the diagram uncoloured
    assert await _allowed(client, f"/v1.0/process-instances/{model}/{instance_id}")
    assert not await _allowed(client, f"/v1.0/process-instances/{model}/{instance_id}", "DELETE")
    shown = await _json(await client.get(f"/v1.0/process-instances/{model}/{instance_id}{query}"))
    assert HEADER <= set(shown) and shown["id"] == instance_id
    rows = await _json(await client.get(f"{info}?most_recent_tasks_only=true"))
    assert isinstance(rows, list)
    table = await _json(await client.get(f"/v1.0/tasks?per_page=5&page=1&process_instance_id={instance_id}"))
    assert set(table["pagination"]) == {"count", "total", "pages"}
    banner = await _json(await client.get(f"/v1.0/tasks/{instance_id}/instruction"))
    assert "task" in banner
    if banner["task"] is not None:  # the banner destructures these
        assert isinstance(banner["task"]["properties"], dict) and "type" in banner["task"]
    return shown, rows


async def test_an_order_waiting_at_its_catch(client: Any, ext: SpiffMessages) -> None:
    started = await _json(await client.post("/v1.0/messages/order_received", json={"order_id": "P-1"}))
    pid = started["process_instance"]["id"]
    shown, rows = await _instance_page(client, "order_process", pid)
    assert shown["status"] == "waiting" and shown["process_model_display_name"] == "Order"
    assert shown["bpmn_xml_file_contents"] == (FIXTURES / "order.bpmn").read_text()
    assert shown["bpmn_xml_file_contents_retrieval_error"] is None
    assert shown["process_initiator_username"] == "message order_received"
    assert shown["start_in_seconds"] > 0 and shown["end_in_seconds"] is None
    assert shown["bpmn_version_control_identifier"] == started["process_instance"]["spec_version"]
    assert {"key": "order_key.order_id", "value": "P-1"} in shown["process_metadata"]
    assert coloured(rows, {"order_process"}) == {"order_start": "COMPLETED", "extract_order_id": "COMPLETED",
                                                 "wait_payment": "WAITING"}
    assert {r["bpmn_identifier"] for r in rows if r["state"] == "FUTURE"} >= {"record_payment", "order_end"}
    banner = await _json(await client.get(f"/v1.0/tasks/{pid}/instruction"))
    assert banner["task"]["name"] == "wait_payment" and banner["task"]["can_complete"] is False
    table = await _json(await client.get(f"/v1.0/tasks?per_page=5&page=1&process_instance_id={pid}"))
    assert table == {"results": [], "pagination": {"count": 0, "total": 0, "pages": 0}}  # the table hides

    await client.post("/v1.0/messages/payment_received", json={"order_id": "P-1", "amount": 3})
    shown, rows = await _instance_page(client, "order_process", pid)
    assert shown["status"] == "complete" and shown["end_in_seconds"] is not None
    assert set(coloured(rows, {"order_process"}).values()) == {"COMPLETED"}
    assert len(coloured(rows, {"order_process"})) == 5
    banner = await _json(await client.get(f"/v1.0/tasks/{pid}/instruction"))
    assert banner["task"]["name"] == "order_end"
    assert await ext.runtime.reads.invariant_violations() == []


async def test_a_review_at_its_user_task(client: Any, ext: SpiffMessages) -> None:
    started = await _json(await client.post("/v1.0/messages/review_requested", json={"ticket": "T-1"}))
    pid = started["process_instance"]["id"]
    shown, rows = await _instance_page(client, "review_process", pid)
    assert shown["status"] == "user_input_required"
    drawn = coloured(rows, {"review_process"})
    assert drawn["review"] == "READY" and drawn["review_cancelled_boundary"] == "WAITING"
    assert drawn["review_start"] == drawn["extract_ticket"] == "COMPLETED"
    review = next(r for r in rows if r["bpmn_identifier"] == "review")
    assert review["typename"] == "UserTask" and review["bpmn_name"] == "Review"
    table = await _json(await client.get(f"/v1.0/tasks?per_page=5&page=1&process_instance_id={pid}"))
    assert [(t["task_id"], t["task_title"], t["process_instance_id"]) for t in table["results"]] == \
        [(review["guid"], "Review", pid)]
    assert table["pagination"] == {"count": 1, "total": 1, "pages": 1}
    banner = await _json(await client.get(f"/v1.0/tasks/{pid}/instruction"))
    assert banner["task"]["id"] == review["guid"] and banner["task"]["type"] == "User Task"
    # clicking the element: its runs, the dialog reads these
    runs = await _json(await client.get(f"/v1.0/tasks/{pid}/{review['guid']}/task-instances"))
    assert [r["guid"] for r in runs] == [review["guid"]]
    assert isinstance(runs[0]["properties_json"]["last_state_change"], float) and runs[0]["runtime_info"] == {}
    missing = await client.get(f"/v1.0/tasks/{pid}/no-such-guid/task-instances")
    assert missing.status_code == 404 and (await missing.get_json())["error_code"] == "task_not_found"
    # the for-me variants answer the same
    assert (await _json(await client.get(f"/v1.0/process-instances/for-me/review_process/{pid}")))["id"] == pid
    mine = await _json(await client.get(
        f"/v1.0/process-instances/for-me/review_process/{pid}/task-info?most_recent_tasks_only=true"))
    assert mine == rows
    assert await _allowed(client, f"/v1.0/process-instances/for-me/review_process/{pid}/task-info")
    assert await ext.runtime.reads.invariant_violations() == []


@pytest.mark.bpmn(CASES / "failing")
async def test_an_instance_that_failed(client: Any, ext: SpiffMessages) -> None:
    started = await _json(await client.post("/v1.0/process-instances/divider", json={}), 201)
    pid = started["process_instance"]["id"]
    await client.post("/v1.0/messages/divisor", json={"value": 0})
    shown, rows = await _instance_page(client, "divider", pid)
    assert shown["status"] == "error"
    assert shown["bpmn_xml_file_contents"] == (CASES / "failing" / "failing.bpmn").read_text()
    assert shown["process_initiator_username"] == "API"
    drawn = coloured(rows, {"divider"})
    assert drawn["divide"] == "ERROR" and drawn["wait_divisor"] == "COMPLETED"
    banner = await _json(await client.get(f"/v1.0/tasks/{pid}/instruction"))
    assert banner["task"]["name"] == "divide" and banner["task"]["error_message"]
    assert await ext.runtime.reads.invariant_violations() == []


@pytest.mark.bpmn(CASES / "shapes")
async def test_an_instance_inside_a_call_activity_and_its_drill_down(client: Any, ext: SpiffMessages) -> None:
    started = await _json(await client.post("/v1.0/messages/ca_start", json={"order_id": "D-1"}))
    pid = started["process_instance"]["id"]
    shown, rows = await _instance_page(client, "ca_parent", pid)
    ca_file = (CASES / "shapes" / "ca.bpmn").read_text()
    assert shown["bpmn_xml_file_contents"] == ca_file
    call = next(r for r in rows if r["bpmn_identifier"] == "ca_call")
    assert call["state"] == "STARTED" and call["typename"] == "CallActivity"  # the drill-down arrow
    assert call["task_definition_properties_json"]["spec"] == "ca_child"
    assert coloured(rows, {"ca_parent"})["ca_parent_extract"] == "COMPLETED"
    # the drill-down: the page's URL gains process_identifier and bpmn_process_guid
    drilled = await _json(await client.get(f"/v1.0/process-instances/ca_parent/{pid}?process_identifier=ca_child"))
    assert drilled["bpmn_xml_file_contents"] == ca_file and drilled["process_model_with_diagram_identifier"] == \
        "ca_child"
    inner = await _json(await client.get(f"/v1.0/process-instances/ca_parent/{pid}/task-info"
                                         f"?most_recent_tasks_only=true&bpmn_process_guid={call['guid']}"))
    assert {r["bpmn_process_definition_identifier"] for r in inner} == {"ca_child"}
    assert coloured(inner, {"ca_child"}) == {"ca_child_start": "COMPLETED", "ca_child_wait": "WAITING"}
    bad = await client.get(f"/v1.0/process-instances/ca_parent/{pid}/task-info?bpmn_process_guid=nope")
    assert bad.status_code == 400 and (await bad.get_json())["error_code"] == "bpmn_process_not_found"
    unknown = await client.get(f"/v1.0/process-instances/ca_parent/{pid}?process_identifier=no_such_process")
    assert unknown.status_code == 404
    past = await client.get(f"/v1.0/process-instances/ca_parent/{pid}/task-info?to_task_guid={call['guid']}")
    assert past.status_code == 400 and (await past.get_json())["field"] == "to_task_guid"
    assert await ext.runtime.reads.invariant_violations() == []


@pytest.mark.bpmn(CASES / "shapes")
async def test_an_embedded_subprocess_colours_in_the_same_answer(client: Any) -> None:
    started = await _json(await client.post("/v1.0/messages/sp_start", json={"order_id": "S-1"}))
    pid = started["process_instance"]["id"]
    rows = await _json(await client.get(f"/v1.0/process-instances/sp_process/{pid}/task-info"))
    inner = [r for r in rows if r["bpmn_process_definition_identifier"] not in ("sp_process",)
             and r["task_definition_properties_json"]["bpmn_id"]]
    assert inner, rows  # the subprocess's own rows, named by its element id (a process id of the diagram)
    sub_ids = {r["bpmn_process_definition_identifier"] for r in inner}
    shown = await _json(await client.get(f"/v1.0/process-instances/sp_process/{pid}"))
    assert all(f'id="{s}"' in shown["bpmn_xml_file_contents"] for s in sub_ids)
    assert "WAITING" in coloured(rows, {"sp_process", *sub_ids}).values()


async def test_process_models_and_groups_from_the_catalog(client: Any, bpmn_dir: Path) -> None:
    await client.post("/v1.0/messages/order_received", json={"order_id": "M-1"})
    await client.post("/v1.0/process-instances/orders:eu:eu_payment_watch", json={"order_id": "M-2"})
    # the messages list's Process Model filter
    assert await _allowed(client, "/v1.0/process-models")
    listed = await _json(await client.get(
        "/v1.0/process-models?per_page=1500&recursive=true&include_parent_groups=true"))
    ids = {m["id"] for m in listed["results"]}
    assert {"order_process", "billing/invoice_process", "orders/eu/eu_payment_watch"} <= ids
    assert listed["pagination"]["total"] == len(ids) == listed["pagination"]["count"]
    rows = (await _json(await client.post("/v1.0/messages?per_page=50&page=1", json={})))["results"]
    assert {r["process_model_identifier"] for r in rows if r["process_model_identifier"]} <= ids
    eu = next(m for m in listed["results"] if m["id"] == "orders/eu/eu_payment_watch")
    assert eu["display_name"] == "EU payment watch"
    assert [g["id"] for g in eu["parent_groups"]] == ["orders", "orders/eu"]
    assert [g["display_name"] for g in eu["parent_groups"]] == ["orders", "eu"]
    big = await client.get("/v1.0/process-models?filter_runnable_by_user=true&recursive=true"
                           "&group_by_process_group=True&per_page=2000")
    assert big.status_code == 200
    too_big = await client.get("/v1.0/process-models?per_page=2001")
    assert too_big.status_code == 400 and (await too_big.get_json())["field"] == "per_page"
    in_orders = await _json(await client.get("/v1.0/process-models?process_group_identifier=orders&recursive=true"))
    assert {m["id"] for m in in_orders["results"]} == {i for i in ids if i.startswith("orders/")}
    # a row's process link and "Used In": the model page
    model = await _json(await client.get("/v1.0/process-models/orders:eu:eu_payment_watch"))
    assert isinstance(model["files"], list) and model["files"][0]["name"] == model["primary_file_name"]
    assert (bpmn_dir / "orders" / "eu" / model["primary_file_name"]).is_file()
    assert model["display_name"] == "EU payment watch" and model["is_executable"] is True
    assert isinstance(model["description"], str) and model["primary_process_id"] == "eu_payment_watch"
    missing = await client.get("/v1.0/process-models/no:such_process")
    assert missing.status_code == 404 and (await missing.get_json())["error_code"] == "process_not_found"
    # the Processes page and the Message Models tab: the group tree
    assert await _allowed(client, "/v1.0/process-groups")
    groups = await _json(await client.get("/v1.0/process-groups"))
    by_id = {g["id"]: g for g in groups["results"]}
    assert set(by_id) == {"billing", "orders"}
    assert all(isinstance(g["process_groups"], list) and isinstance(g["process_models"], list)
               for g in groups["results"])
    assert [g["id"] for g in by_id["orders"]["process_groups"]] == ["orders/eu"]
    assert "orders/eu/eu_payment_watch" in {m["id"] for m in by_id["orders"]["process_groups"][0]["process_models"]}
    children = await _json(await client.get("/v1.0/process-groups?process_group_identifier=orders"))
    assert [g["id"] for g in children["results"]] == ["orders/eu"]
    one = await _json(await client.get("/v1.0/process-groups/orders:eu"))
    assert one["id"] == "orders/eu" and one["process_models"] == [] and one["process_groups"] == []
    assert [g["id"] for g in one["parent_groups"]] == ["orders"]
    nogroup = await client.get("/v1.0/process-groups/nowhere")
    assert nogroup.status_code == 404 and (await nogroup.get_json())["error_code"] == "process_group_not_found"
    # the cards' counts
    stats = await _json(await client.get("/v1.0/process-models/stats"))
    assert stats["order_process"]["instance_count"] == 1 and stats["order_process"]["last_run_in_seconds"] > 0
    assert stats["orders/eu/eu_payment_watch"]["instance_count"] == 1 and "billing/invoice_process" not in stats


async def test_home_answers_without_errors(client: Any) -> None:
    assert await _json(await client.get("/v1.0/tasks")) == \
        {"results": [], "pagination": {"count": 0, "total": 0, "pages": 0}}
    assert await _json(await client.get("/v1.0/onboarding")) == {}
    assert await _json(await client.get("/v1.0/process-models/stats")) == {}


async def test_permissions_check_answers_by_arenas_meaning(client: Any) -> None:
    asked = {
        "/v1.0/process-instances/for-me": ["POST"],  # the report list: not served, the entry stays hidden
        "/v1.0/process-instances/unique-milestone-names": ["GET"],
        "/v1.0/process-instances/order_process": ["POST"],  # Arena's create-then-run: the Start button hides
        "/v1.0/process-instances": ["GET", "POST"],
        "/v1.0/process-instances/order_process/3/task-info": ["GET"],
        "/v1.0/process-instances/order_process/3": ["GET", "POST", "DELETE"],
        "/v1.0/process-instance-suspend/order_process/3": ["POST"],
        "/v1.0/logs/order_process/3": ["GET"],
        "/v1.0/task-data/order_process/3": ["GET", "PUT"],
        "/v1.0/process-models/orders:eu:eu_payment_watch": ["GET", "PUT", "DELETE"],
        "/v1.0/process-models/orders:eu:eu_payment_watch/files": ["GET", "POST"],
        "/v1.0/process-groups/orders": ["GET", "PUT", "DELETE"],
        "/v1.0/process-groups": ["GET", "POST"],
        "/v1.0/extensions": ["GET"], "/v1.0/data-stores": ["GET"], "/v1.0/secrets": ["GET"],
        "/v1.0/messages": ["GET"],
        "/v1.0/process-instances/3/retry": ["POST"],  # ours, not Arena's force-run
    }
    found = (await _json(await client.post("/v1.0/permissions-check", json={"requests_to_check": asked})))["results"]
    assert found == {
        "/v1.0/process-instances/for-me": {"POST": False},
        "/v1.0/process-instances/unique-milestone-names": {"GET": False},
        "/v1.0/process-instances/order_process": {"POST": False},
        "/v1.0/process-instances": {"GET": False, "POST": False},
        "/v1.0/process-instances/order_process/3/task-info": {"GET": True},
        "/v1.0/process-instances/order_process/3": {"GET": True, "POST": False, "DELETE": False},
        "/v1.0/process-instance-suspend/order_process/3": {"POST": False},
        "/v1.0/logs/order_process/3": {"GET": False},
        "/v1.0/task-data/order_process/3": {"GET": False, "PUT": False},
        "/v1.0/process-models/orders:eu:eu_payment_watch": {"GET": True, "PUT": False, "DELETE": False},
        "/v1.0/process-models/orders:eu:eu_payment_watch/files": {"GET": False, "POST": False},
        "/v1.0/process-groups/orders": {"GET": True, "PUT": False, "DELETE": False},
        "/v1.0/process-groups": {"GET": True, "POST": False},
        "/v1.0/extensions": {"GET": False}, "/v1.0/data-stores": {"GET": False}, "/v1.0/secrets": {"GET": False},
        "/v1.0/messages": {"GET": True},
        "/v1.0/process-instances/3/retry": {"POST": True},
    }
    # what is answered true is served: each such call answers (not 404 route_not_found or 405)
    for uri, methods in found.items():
        for method, allowed in methods.items():
            if allowed and method == "GET":
                resp = await client.get(uri)
                assert resp.status_code != 405 and (await resp.get_json()).get("error_code") != "route_not_found"
    again = await _json(await client.post("/v1.0/permissions-check", json={"requests_to_check": asked}))
    assert again["results"] == found  # the same URI and method, the same answer
