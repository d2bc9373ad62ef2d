"""Reloading the BPMN folder without a restart: HTTP, Python API, another worker following, SIGHUP and the CLI."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from quart_spiff_messages.testing import Server, serving

from .conftest import BROKEN, FIXTURES, Clock, make_app

LATE = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core"
                  id="late_definitions" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="late_arrival" isExecutable="true">
    <bpmn:startEvent id="late_start">
      <bpmn:outgoing>late_f1</bpmn:outgoing>
      <bpmn:messageEventDefinition id="late_start_def" messageRef="late_msg">
        <bpmn:extensionElements>
          <spiffworkflow:messageVariable>late</spiffworkflow:messageVariable>
        </bpmn:extensionElements>
      </bpmn:messageEventDefinition>
    </bpmn:startEvent>
    <bpmn:endEvent id="late_end"><bpmn:incoming>late_f1</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="late_f1" sourceRef="late_start" targetRef="late_end" />
  </bpmn:process>
  <bpmn:message id="late_msg" name="late_message" />
</bpmn:definitions>
"""


@pytest.fixture
def bpmn(tmp_path: Path) -> Path:
    folder = tmp_path / "bpmn"
    shutil.copytree(FIXTURES, folder)
    return folder


def _buffer(key: str) -> str:
    return f"/v1.0/messages/late_message?time_to_live_in_seconds=120&message_instance_uuid={key}"


async def test_reload_swaps_the_catalog_and_starts_buffered_messages(bpmn: Path, database_url: str,
                                                                      clock: Clock) -> None:
    app, _ = make_app(bpmn, database_url, clock)
    async with app.test_app():
        client = app.test_client()
        old = await client.post("/v1.0/messages/order_received", json={"order_id": "R-OLD"})
        old_instance = (await old.get_json())["process_instance"]
        key = str(uuid.uuid4())
        buffered = await client.post(_buffer(key), json={"n": 1})
        assert buffered.status_code == 202

        (bpmn / "late.bpmn").write_text(LATE)
        order = bpmn / "order.bpmn"
        order.write_text(order.read_text().replace('paid_amount = payment.get("amount")', 'paid_amount = "new"'))
        reloaded = await client.post("/v1.0/catalog/reload")
        assert reloaded.status_code == 200
        body = await reloaded.get_json()
        assert body["buffered_messages_started"] == 1 and body["generation"] == 1

        messages = await (await client.get("/v1.0/messages?name=late_message&message_type=send")).get_json()
        assert [m["status"] for m in messages["results"]] == ["completed"]
        replay = await client.post(_buffer(key), json={"n": 1})
        assert replay.status_code == 200
        assert replay_instance(await replay.get_json())["process_id"] == "late_arrival"

        new_instance = (await (await client.post("/v1.0/messages/order_received",
                                                 json={"order_id": "R-NEW"})).get_json())["process_instance"]
        assert new_instance["spec_version"] != old_instance["spec_version"]
        paid_old = await (await client.post("/v1.0/messages/payment_received",
                                            json={"order_id": "R-OLD", "amount": 3})).get_json()
        paid_new = await (await client.post("/v1.0/messages/payment_received",
                                            json={"order_id": "R-NEW", "amount": 3})).get_json()
        assert paid_old["task_data"]["paid_amount"] == 3  # the spec it started with
        assert paid_new["task_data"]["paid_amount"] == "new"


def replay_instance(body: dict[str, Any]) -> dict[str, Any]:
    instance: dict[str, Any] = body["process_instance"]
    return instance


async def test_a_broken_folder_is_refused_and_the_old_catalog_stays(bpmn: Path, database_url: str,
                                                                    clock: Clock) -> None:
    app, _ = make_app(bpmn, database_url, clock)
    async with app.test_app():
        client = app.test_client()
        shutil.copy(BROKEN / "dangling_flow" / "dangling.bpmn", bpmn / "dangling.bpmn")
        refused = await client.post("/v1.0/catalog/reload")
        assert refused.status_code == 422
        problem = await refused.get_json()
        assert problem["error_code"] == "catalog_load_error"
        assert problem["file"].endswith("dangling.bpmn") and problem["line"] == 11
        assert (await client.post("/v1.0/messages/order_received", json={"order_id": "S"})).status_code == 200


async def test_other_workers_follow_a_reload(bpmn: Path, database_url: str, clock: Clock) -> None:
    first, ext_first = make_app(bpmn, database_url, clock)  # two apps on one database: two workers
    second, _ = make_app(bpmn, database_url, clock)
    async with first.test_app(), second.test_app():
        (bpmn / "late.bpmn").write_text(LATE)
        async with first.app_context():
            done = await ext_first.reload()
        assert "late_message" in ext_first.runtime.catalog.messages
        state = second.extensions["spiff_messages"]
        assert "late_message" not in state.runtime.catalog.messages
        await state.follow_reloads()
        assert state.generation == done.generation
        assert "late_message" in state.runtime.catalog.messages
        started = await second.test_client().post("/v1.0/messages/late_message", json={})
        assert started.status_code == 200  # the second app starts late_arrival now


@pytest.fixture
def served(bpmn: Path, database_url: str, tmp_path: Path) -> Iterator[Server]:
    # both workers up before the folder changes under them
    with serving(bpmn, database_url, tmp_path / "serve.log", workers=2) as srv:
        yield srv


def _answers(url: str, name: str) -> set[bool]:
    """Whether the workers know message ``name``, over fresh connections (the kernel spreads them)."""
    answers = set()
    for _ in range(8):
        with httpx.Client(timeout=5) as http:
            answers.add(name in {m["identifier"] for m in http.get(f"{url}/message-models").json()["messages"]})
    return answers


def _until(url: str, name: str, expected: set[bool], timeout: float = 15.0) -> set[bool]:
    deadline = time.monotonic() + timeout
    while (answers := _answers(url, name)) != expected and time.monotonic() < deadline:
        time.sleep(0.3)
    return answers


def test_sighup_and_the_cli_reload_every_worker(served: Server, bpmn: Path, database_url: str) -> None:
    env = {**os.environ, "SPIFF_MESSAGES_DATABASE_URL": database_url}
    (bpmn / "late.bpmn").write_text(LATE)
    shutil.copy(BROKEN / "dangling_flow" / "dangling.bpmn", bpmn / "dangling.bpmn")
    cli = subprocess.run([sys.executable, "-m", "quart_spiff_messages", "reload", "--bpmn-dir", str(bpmn)],
                         env=env, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 1 and "dangling.bpmn, line 11" in cli.stderr
    os.kill(served.proc.pid, signal.SIGHUP)  # a broken folder: refused, the server keeps serving
    time.sleep(2)
    assert served.proc.poll() is None
    assert _answers(served.url, "late_message") == {False}
    assert served.log is not None and "reload refused" in served.log.read_text()

    (bpmn / "dangling.bpmn").unlink()
    os.kill(served.proc.pid, signal.SIGHUP)
    assert _until(served.url, "late_message", {True}) == {True}

    (bpmn / "late.bpmn").unlink()
    cli = subprocess.run([sys.executable, "-m", "quart_spiff_messages", "reload", "--bpmn-dir", str(bpmn)],
                         env=env, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert _until(served.url, "late_message", {False}) == {False}
