"""One instance per correlation key (Zeebe's message start policy): a process that declares
``one_instance_per_correlation_key`` starts no second instance while one with the same key is active. Such a
message goes to the active instance where it waits for it, is kept (with a TTL) until that instance completes, or is
refused with the reason ``instance_active``. The races of many such starts are in ``test_one_per_key_concurrent``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from quart_spiff_messages import SpiffMessages
from quart_spiff_messages.catalog import Catalog, CatalogError
from quart_spiff_messages.check import check

from .conftest import CASES

ONE_PER_KEY = CASES / "one_per_key"
pytestmark = pytest.mark.bpmn(ONE_PER_KEY)


async def send(client: Any, name: str, payload: dict[str, Any], **query: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/v1.0/messages/{name}", json=payload, query_string=query)
    body: dict[str, Any] = await resp.get_json()
    return resp.status_code, body


async def instance(client: Any, instance_id: int) -> dict[str, Any]:
    found: dict[str, Any] = (await (await client.get(f"/v1.0/process-instances/{instance_id}")).get_json())[
        "process_instance"]
    return found


async def tickets(client: Any) -> list[dict[str, Any]]:
    listed = await (await client.get("/v1.0/process-instances", query_string={"per_page": 100})).get_json()
    return [r for r in listed["results"] if r["process_model_identifier"] == "ticket_process"]


async def test_a_second_start_for_an_active_key_is_refused_and_names_the_active_instance(
        client: Any, ext: SpiffMessages) -> None:
    status, first = await send(client, "ticket_opened", {"ticket_id": "T-1"})
    assert status == 200 and first["process_instance"]["status"] == "waiting", first
    holder = first["process_instance"]["id"]

    status, again = await send(client, "ticket_opened", {"ticket_id": "T-1", "note": "again"})
    assert (status, again["error_code"]) == (400, "message_not_accepted"), again
    assert again["reason"] == {"kind": "instance_active", "process_instance_id": holder,
                               "process_model_identifier": "ticket_process",
                               "correlation_keys": {"ticket_key": {"ticket_id": "T-1"}}}
    assert f"process instance {holder}" in again["message"]

    status, other = await send(client, "ticket_opened", {"ticket_id": "T-2"})  # another key starts at once
    assert status == 200 and other["process_instance"]["id"] != holder

    status, closed = await send(client, "ticket_closed", {"ticket_id": "T-1"})
    assert status == 200 and closed["process_instance"] == {**closed["process_instance"], "id": holder,
                                                            "status": "complete"}
    status, reopened = await send(client, "ticket_opened", {"ticket_id": "T-1"})  # the key is free again
    assert status == 200 and reopened["process_instance"]["id"] not in (holder, other["process_instance"]["id"])
    assert [(t["status"], t["correlations"]) for t in await tickets(client)] == [
        ("waiting", {"ticket_key": {"ticket_id": "T-1"}}), ("waiting", {"ticket_key": {"ticket_id": "T-2"}}),
        ("complete", {"ticket_key": {"ticket_id": "T-1"}})]
    assert await ext.runtime.reads.invariant_violations() == []


async def test_a_kept_start_message_starts_the_next_instance_when_the_active_one_completes(
        client: Any, ext: SpiffMessages) -> None:
    status, first = await send(client, "ticket_opened", {"ticket_id": "T-5"})
    assert status == 200
    key = str(uuid.uuid4())
    status, kept = await send(client, "ticket_opened", {"ticket_id": "T-5", "note": "second"},
                              time_to_live_in_seconds=60, message_instance_uuid=key)
    assert status == 202 and kept["message_instance"]["status"] == "ready", kept
    status, closed = await send(client, "ticket_closed", {"ticket_id": "T-5"})
    assert status == 200 and closed["process_instance"]["status"] == "complete"
    # the kept message started the next instance for T-5 once the first completed
    [second, done] = await tickets(client)
    assert done["id"] == first["process_instance"]["id"] and done["status"] == "complete"
    assert second["status"] == "waiting"
    assert (await instance(client, second["id"]))["data"]["opened"] == {"ticket_id": "T-5", "note": "second"}
    rows = await (await client.get("/v1.0/messages", query_string={"name": "ticket_opened"})).get_json()
    row = next(r for r in rows["results"] if r["message_instance_uuid"] == key)
    assert (row["status"], row["process_instance_id"]) == ("completed", None)
    assert await ext.runtime.reads.invariant_violations() == []


async def test_the_message_goes_to_the_active_instance_where_it_waits_for_it(client: Any, ext: SpiffMessages) -> None:
    status, first = await send(client, "case_event", {"case_id": "C-1", "n": 1})
    assert status == 200 and first["process_instance"]["status"] == "waiting"
    status, second = await send(client, "case_event", {"case_id": "C-1", "n": 2})
    assert status == 200 and second["process_instance"]["id"] == first["process_instance"]["id"]
    assert second["process_instance"]["status"] == "complete"
    assert second["task_data"]["second"] == {"case_id": "C-1", "n": 2}
    status, third = await send(client, "case_event", {"case_id": "C-1", "n": 3})
    assert status == 200 and third["process_instance"]["id"] != first["process_instance"]["id"]
    assert await ext.runtime.reads.invariant_violations() == []


# -- the declaration ----------------------------------------------------------------------------------------------
async def test_the_message_models_say_which_starts_keep_one_instance_per_key(client: Any) -> None:
    models = (await (await client.get("/v1.0/message-models")).get_json())["messages"]
    starts = {m["identifier"]: [s["one_instance_per_correlation_key"] for s in m["start_events"]] for m in models}
    assert starts == {"case_event": [True], "ticket_closed": [], "ticket_opened": [True]}


def _process(tmp_path: Path, process_props: str = "", start_props: str = "", start_def: str = "message",
             correlated: bool = True) -> Path:
    def props(value: str) -> str:
        if not value:
            return ""
        return ("<bpmn:extensionElements><spiffworkflow:properties><spiffworkflow:property "
                f'name="one_instance_per_correlation_key" value="{value}"/></spiffworkflow:properties>'
                "</bpmn:extensionElements>")

    definition = '<bpmn:messageEventDefinition id="d" messageRef="m"/>' if start_def == "message" else ""
    correlation = ('<bpmn:correlationProperty id="k" name="k"><bpmn:correlationPropertyRetrievalExpression '
                   'messageRef="m"><bpmn:formalExpression>k</bpmn:formalExpression>'
                   "</bpmn:correlationPropertyRetrievalExpression></bpmn:correlationProperty>") if correlated else ""
    (tmp_path / "p.bpmn").write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core" id="defs" targetNamespace="t">
  <bpmn:process id="p" isExecutable="true">{props(process_props)}
    <bpmn:startEvent id="s">{props(start_props)}<bpmn:outgoing>f</bpmn:outgoing>{definition}</bpmn:startEvent>
    <bpmn:endEvent id="e"><bpmn:incoming>f</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f" sourceRef="s" targetRef="e"/>
  </bpmn:process>
  <bpmn:message id="m" name="m"/>{correlation}
</bpmn:definitions>
""")
    return tmp_path


@pytest.mark.parametrize(("where", "expected"), [
    ({"process_props": "true"}, True), ({"start_props": "TRUE"}, True),
    ({"process_props": "true", "start_props": "false"}, False), ({}, False)])
def test_the_property_on_the_process_or_the_start_event(tmp_path: Path, where: dict[str, str],
                                                        expected: bool) -> None:
    [start] = Catalog.load(_process(tmp_path, **where)).starts["m"]
    assert start.one_per_key is expected
    report = check(tmp_path)
    assert report.ok and report.starts[0]["one_instance_per_correlation_key"] is expected
    assert ("one instance per correlation key" in report.as_text()) is expected


@pytest.mark.parametrize(("where", "words", "element"), [
    ({"start_props": "yes"}, "write true or false", "s"),
    ({"process_props": "true", "correlated": False}, "no correlation property", "s"),
    ({"start_props": "true", "start_def": "none"}, "has no message", "s"),
    ({"process_props": "true", "start_def": "none"}, "has no Message Start Event", "p")])
def test_a_declaration_that_cannot_hold_stops_the_load_with_file_element_and_line(
        tmp_path: Path, where: dict[str, Any], words: str, element: str) -> None:
    with pytest.raises(CatalogError) as caught:
        Catalog.load(_process(tmp_path, **where))
    assert words in caught.value.reason
    assert (caught.value.element_id, caught.value.file) == (element, str(tmp_path / "p.bpmn"))
    assert caught.value.line is not None
    [finding] = check(tmp_path).findings
    assert (finding.level, finding.code, finding.element_id) == ("error", "load_error", element)
