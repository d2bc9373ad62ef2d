"""``spiff-messages check``: the modeler's report on a BPMN folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from quart_spiff_messages.cli import main

from .conftest import BROKEN, FIXTURES


def test_fixtures_are_clean_and_listed() -> None:
    result = CliRunner().invoke(main, ["check", str(FIXTURES), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True and report["findings"] == []
    starts = {(s["message"], s["process"]) for s in report["start_events"]}
    assert ("order_received", "order_process") in starts
    assert ("payment_failed", "orders/payment_recovery") in starts
    catch = next(c for c in report["catch_points"] if c["message"] == "payment_received")
    assert catch["kind"] == "intermediate_catch" and catch["line"] == 26
    assert catch["correlation_properties"] == [{"property": "order_id", "expression": "order_id",
                                                "keys": ["order_key"]}]


def test_load_error_exits_1_with_file_and_line() -> None:
    result = CliRunner().invoke(main, ["check", str(BROKEN / "missing_message")])
    assert result.exit_code == 1
    assert "load_error" in result.output and "missing.bpmn:11" in result.output


def test_warnings_for_dropped_payloads_and_messages_nobody_receives(tmp_path: Path) -> None:
    root = tmp_path / "bpmn"
    root.mkdir()
    shutil.copy(FIXTURES / "quote_requester.bpmn", root)  # throws quote_request; its provider is not here
    listener = (FIXTURES / "notifications.bpmn").read_text()
    (root / "listener.bpmn").write_text(
        listener.replace("<spiffworkflow:messageVariable>note</spiffworkflow:messageVariable>", ""))
    result = CliRunner().invoke(main, ["check", str(root), "--json"])
    assert result.exit_code == 0  # warnings only
    codes = {(f["code"], f["element_id"]) for f in json.loads(result.output)["findings"]}
    assert codes == {("message_never_received", "send_request"), ("payload_dropped", "wait_broadcast")}
