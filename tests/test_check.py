"""``spiff-messages check``: the modeler's report on a BPMN folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
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


def _findings(root: Path, code: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(main, ["check", str(root), "--json"])
    assert result.exit_code == 0, result.output  # warnings only
    return [f for f in json.loads(result.output)["findings"] if f["code"] == code]


def test_a_catch_whose_key_nothing_can_set_accepts_any() -> None:
    found = _findings(BROKEN / "accepts_any", "catch_accepts_any")
    assert [(f["element_id"], f["line"]) for f in found] == [("lonely_wait", 17)]
    assert found[0]["file"].endswith("accepts_any.bpmn") and found[0]["level"] == "warning"
    assert "'order_key'" in found[0]["message"] and "accept any message of that name" in found[0]["message"]


OTHER_START = '<bpmn:messageEventDefinition id="other_def" messageRef="other_msg" />'


@pytest.mark.parametrize(("element", "edits"), [
    # the plain start goes: start data can no longer carry the key
    ("plain_wait", [('<bpmn:startEvent id="plain_start">', f'<bpmn:startEvent id="plain_start">{OTHER_START}'),
                    ("<bpmn:message ", '<bpmn:message id="other_msg" name="other" /><bpmn:message ')]),
    # the start moves to a message that carries no key
    ("keyed_start_wait", [('messageRef="open_msg">\n        <bpmn:extensionElements><spiffworkflow:messageVariable>'
                           'order</spiffworkflow:messageVariable></bpmn:extensionElements>\n      '
                           '</bpmn:messageEventDefinition>\n    </bpmn:startEvent>',
                           'messageRef="other_msg" />\n    </bpmn:startEvent>'),
                          ("<bpmn:message ", '<bpmn:message id="other_msg" name="other" /><bpmn:message ')]),
    # no processVariableCorrelation
    ("from_data_wait", [("<spiffworkflow:processVariableCorrelation>", "<!--"),
                        ("</spiffworkflow:processVariableCorrelation>", "-->")]),
    # the throw loses its payload, so it sets no key
    ("announcer_wait", [('<spiffworkflow:messagePayload>{"order_id": order["order_id"]}</spiffworkflow:messagePayload>',
                         "")]),
])
def test_each_way_of_setting_the_key_keeps_the_catch_keyed(tmp_path: Path, element: str,
                                                           edits: list[tuple[str, str]]) -> None:
    root = tmp_path / "bpmn"
    root.mkdir()
    text = (BROKEN / "accepts_any" / "accepts_any.bpmn").read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    (root / "accepts_any.bpmn").write_text(text)
    assert {f["element_id"] for f in _findings(root, "catch_accepts_any")} == {"lonely_wait", element}


def test_a_throw_without_payload_to_a_correlated_catch() -> None:
    found = _findings(BROKEN / "throw_without_payload", "throw_without_payload")
    assert sorted((f["element_id"], f["line"]) for f in found) == [("asker_end", 18), ("asker_send", 14)]
    assert all(f["file"].endswith("throw_without_payload.bpmn") for f in found)
    assert "sends {}" in found[0]["message"] and "accepts anyone" in found[0]["message"]


def test_warnings_in_text_carry_file_and_line() -> None:
    result = CliRunner().invoke(main, ["check", str(BROKEN / "throw_without_payload")])
    assert result.exit_code == 0
    assert "WARNING throw_without_payload:" in result.output
    assert "throw_without_payload.bpmn:14]" in result.output


def test_unknown_script_names_and_unhandled_operators_with_file_and_line(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from .conftest import CASES

    root = tmp_path / "bpmn"
    shutil.copytree(CASES / "services", root)
    source = (root / "services.bpmn").read_text()
    (root / "services.bpmn").write_text(source.replace('shipped = response["status"] == "shipped"',
                                                       'shipped = response["status"] == wanted_status'))
    result = CliRunner().invoke(main, ["check", str(root)])
    assert result.exit_code == 0, result.output  # warnings only
    lines = result.output.splitlines()
    [unknown] = [line for line in lines if line.startswith("WARNING unknown_script_name")]
    assert "'wanted_status'" in unknown and "svc_order_after" in unknown and "services.bpmn:" in unknown
    assert "'response'" not in result.output and "'order'" not in result.output  # the process sets those
    unhandled = [line for line in lines if "service_operator_without_handler:" in line]
    assert len(unhandled) == 3 and all(line.startswith("WARNING") and "services.bpmn:" in line for line in unhandled)
    assert "'http/GetRequestV2'" in unhandled[1] and "services.bpmn:18]" in unhandled[1]

    (tmp_path / "my_handlers.py").write_text("HANDLERS = {'http/GetRequestV2': print, 'flaky/op': print}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    strict = CliRunner().invoke(main, ["check", str(root), "--strict", "--service-handlers", "my_handlers:HANDLERS",
                                       "--json"])
    assert strict.exit_code == 1, strict.output
    report = json.loads(strict.output)
    errors = [f for f in report["findings"] if f["level"] == "error"]
    assert [(f["code"], f["element_id"]) for f in errors] == [("service_operator_without_handler", "svc_remote_call")]
    assert errors[0]["line"] == 62 and errors[0]["file"].endswith("services.bpmn")


def test_timer_start_events_are_listed_and_a_bad_cycle_is_an_error(tmp_path: Path) -> None:
    from .conftest import CASES

    good = CliRunner().invoke(main, ["check", str(CASES / "timer_start")])
    assert good.exit_code == 0, good.output
    assert 'timer   "R3/PT2S" starts every at' in good.output and "every.bpmn:8" in good.output
    bad = tmp_path / "every.bpmn"
    bad.write_text((CASES / "timer_start" / "every.bpmn").read_text().replace('"R3/PT2S"', '"R3/every day"'))
    result = CliRunner().invoke(main, ["check", str(tmp_path), "--json"])
    assert result.exit_code == 1, result.output
    [finding] = json.loads(result.output)["findings"]
    assert (finding["code"], finding["line"], finding["element_id"]) == ("bad_timer_start", 8, "every_start")
    assert "R3/every day" in finding["message"]


# -- issue 23: the host's own functions, names that cannot be loaded, properties two files share ---------------------
HOST = '''
from quart import Quart
from quart_spiff_messages import SpiffMessages

app = Quart(__name__)
app.config["SPIFF_MESSAGES_BPMN_DIR"] = {bpmn!r}
messages = SpiffMessages(app)


@messages.script_function
def wanted_status() -> str:
    return "shipped"


@messages.service_handler("http/GetRequestV2")
async def get(call):
    return {{"status": "shipped"}}


@messages.service_handler("flaky/op")
async def flaky(call):
    return 1


def create_app():
    return app
'''


def _spiff_messages(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a host runs it from its project folder."""
    return subprocess.run([str(Path(sys.executable).parent / "spiff-messages"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def host_project(tmp_path: Path) -> Path:
    """A host's project: a BPMN folder whose script reads a host function, and an app that registers it and two
    service handlers with the decorators."""
    from .conftest import CASES

    root = tmp_path / "bpmn"
    shutil.copytree(CASES / "services", root)
    source = (root / "services.bpmn").read_text()
    (root / "services.bpmn").write_text(source.replace('shipped = response["status"] == "shipped"',
                                                       'shipped = response["status"] == wanted_status()'))
    (tmp_path / "shop.py").write_text(HOST.format(bpmn=str(root)))
    return tmp_path


def test_check_with_the_hosts_app_counts_what_its_decorators_registered(host_project: Path) -> None:
    alone = _spiff_messages("check", "bpmn", "--json", cwd=host_project)
    codes = sorted((f["code"], f["element_id"]) for f in json.loads(alone.stdout)["findings"])
    assert ("unknown_script_name", "svc_order_after") in codes
    assert [c for c in codes if c[0] == "service_operator_without_handler"] == [
        ("service_operator_without_handler", e) for e in ("svc_flaky_call", "svc_order_call", "svc_remote_call")]

    for app in ("shop:app", "shop:create_app()"):
        with_app = _spiff_messages("check", "--app", app, "--json", cwd=host_project)  # the app's BPMN folder
        assert with_app.returncode == 0, with_app.stderr
        findings = json.loads(with_app.stdout)["findings"]
        assert [(f["code"], f["element_id"]) for f in findings] == [
            ("service_operator_without_handler", "svc_remote_call")], findings  # the one nobody handles
    strict = _spiff_messages("check", "bpmn", "--app", "shop:app", "--strict", cwd=host_project)
    assert strict.returncode == 1 and "ERROR   service_operator_without_handler" in strict.stdout


@pytest.mark.parametrize(("args", "says"), [
    (["--app", "shop"], "app 'shop': expected MODULE:NAME"),
    (["--app", "nowhere:app"], "cannot import 'nowhere' (ModuleNotFoundError"),
    (["--app", "shop:ap"], "module 'shop' has no 'ap'"),
    (["--app", "shop:messages"], "is a SpiffMessages, not a Quart app"),
    (["--app", "broken:app"], "cannot import 'broken' (ZeroDivisionError: division by zero)"),
    (["--service-handlers", "shop:nothing"], "service handlers 'shop:nothing': module 'shop' has no 'nothing'"),
    (["--script-functions", "shop:app"], "script functions 'shop:app' is a Quart, not a mapping"),
    (["--app", "plain:app"], "does not mount quart-spiff-messages"),
], ids=["no-name", "no-module", "no-attribute", "not-an-app", "module-raises", "handlers", "functions", "no-ext"])
def test_a_wrong_module_name_is_one_line_and_exit_2(host_project: Path, args: list[str], says: str) -> None:
    (host_project / "broken.py").write_text("x = 1 / 0\n")
    (host_project / "plain.py").write_text("from quart import Quart\napp = Quart(__name__)\n")
    done = _spiff_messages("check", "bpmn", *args, cwd=host_project)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()] and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_correlation_properties_two_files_share_are_listed_once() -> None:
    from .conftest import CASES

    folder = CASES / "shared_properties"
    text = CliRunner().invoke(main, ["check", str(folder)])
    assert text.exit_code == 0, text.output
    [catch] = [line for line in text.output.splitlines() if line.strip().startswith("catch")]
    assert catch.count("order_id=") == 1, catch
    report = json.loads(CliRunner().invoke(main, ["check", str(folder), "--json"]).output)
    [point] = report["catch_points"]
    assert point["correlation_properties"] == [{"property": "order_id", "expression": "order_id",
                                                "keys": ["order_key"]}]
