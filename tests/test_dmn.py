"""DMN beside BPMN: decisions load with their group, run in business rule tasks, version the specs that use them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.util.task import TaskState

from quart_spiff_messages import Catalog, CatalogError
from quart_spiff_messages.cli import main
from quart_spiff_messages.engine import Engine

from .conftest import BROKEN, CASES, Clock, make_app

DMN = CASES / "dmn"


def _copy(tmp_path: Path, *sources: Path) -> Path:
    root = tmp_path / "bpmn"
    root.mkdir()
    for source in sources:
        for path in source.iterdir() if source.is_dir() else [source]:
            shutil.copy(path, root)
    return root


def _cost(root: Path, small_order: int) -> None:
    """Change what the decision answers for orders below 50."""
    dmn = root / "shipping_cost.dmn"
    dmn.write_text(dmn.read_text().replace("<text>5</text>", f"<text>{small_order}</text>"))


async def _start(client: Any, data: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/v1.0/process-instances/shipping_quote", json=data)
    assert resp.status_code == 201, await resp.get_data()
    body: dict[str, Any] = await resp.get_json()
    return body


def test_decisions_load_with_their_group() -> None:
    catalog = Catalog.load(DMN)
    assert list(catalog.processes) == ["shipping_quote"]
    assert catalog.processes["shipping_quote"].file.endswith("quote.bpmn")


@pytest.mark.bpmn(DMN)
@pytest.mark.parametrize(("total", "shipping"), [(10, 5), (70, 0)])
async def test_a_process_started_over_http_gets_the_decision(client: Any, total: int, shipping: int) -> None:
    body = await _start(client, {"total": total})
    assert body["process_instance"]["status"] == "complete"
    assert body["task_data"] == {"total": total, "shipping": shipping}
    shown = await (await client.get(f"/v1.0/process-instances/{body['process_instance']['id']}")).get_json()
    assert shown["process_instance"]["data"]["shipping"] == shipping


def test_a_changed_decision_is_a_new_spec_version(tmp_path: Path) -> None:
    root = _copy(tmp_path, DMN)
    before = Catalog.load(root).processes["shipping_quote"].spec_version
    assert Catalog.load(root).processes["shipping_quote"].spec_version == before  # stable while nothing changes
    _cost(root, 7)
    assert Catalog.load(root).processes["shipping_quote"].spec_version != before


async def test_reload_follows_a_changed_decision(tmp_path: Path, database_url: str, clock: Clock) -> None:
    root = _copy(tmp_path, DMN)
    app, _ = make_app(root, database_url, clock)
    async with app.test_app():
        client = app.test_client()
        old = await _start(client, {"total": 10})
        _cost(root, 7)
        assert (await client.post("/v1.0/catalog/reload")).status_code == 200
        new = await _start(client, {"total": 10})
        assert (old["task_data"]["shipping"], new["task_data"]["shipping"]) == (5, 7)
        assert old["process_instance"]["spec_version"] != new["process_instance"]["spec_version"]


def test_a_spec_with_a_decision_survives_the_spec_store() -> None:
    """An instance resumes on its stored spec after the folder changed: the decision must round-trip too."""
    engine = Engine()
    entry = Catalog.load(DMN).processes["shipping_quote"]
    restored = engine.load_spec(entry, engine.dump_spec(entry))
    workflow = BpmnWorkflow(restored.spec, restored.subprocess_specs, script_engine=engine.script_engine)
    for task in workflow.get_tasks(state=TaskState.READY):
        task.data["total"] = 20
    workflow.do_engine_steps()
    assert workflow.completed and workflow.last_task.data == {"total": 20, "shipping": 5}


@pytest.mark.parametrize(("case", "line", "element", "reason"), [
    ("dmn_bad_output", 15, "small_order_shipping", "Malformed Output Expression"),
    ("dmn_rule_without_id", 17, None, "missing attribute 'id'"),  # SpiffWorkflow names no element: lxml's line
    ("dmn_not_well_formed", 16, None, "not well-formed XML"),
])
def test_a_broken_decision_names_its_file_and_line(tmp_path: Path, case: str, line: int, element: str | None,
                                                   reason: str) -> None:
    root = _copy(tmp_path, BROKEN / case, DMN / "quote.bpmn")  # blamed on the DMN file, not on the task using it
    with pytest.raises(CatalogError) as err:
        Catalog.load(root)
    assert err.value.file == str(root / "shipping_cost.dmn")
    assert (err.value.line, err.value.element_id) == (line, element)
    assert reason in err.value.reason


def test_check_reports_a_broken_decision_with_file_and_line() -> None:
    result = CliRunner().invoke(main, ["check", str(BROKEN / "dmn_bad_output")])
    assert result.exit_code == 1
    assert "load_error" in result.output and "shipping_cost.dmn:15" in result.output


def test_a_decision_nobody_declares_names_the_task(tmp_path: Path) -> None:
    root = _copy(tmp_path, DMN / "quote.bpmn")
    with pytest.raises(CatalogError, match="No DMN Diagram available") as err:
        Catalog.load(root)
    assert (err.value.element_id, err.value.line) == ("decide_shipping", 8)
    assert err.value.file == str(root / "quote.bpmn")


def test_one_decision_id_twice_in_a_group(tmp_path: Path) -> None:
    root = _copy(tmp_path, DMN)
    shutil.copy(root / "shipping_cost.dmn", root / "shipping_cost_copy.dmn")
    with pytest.raises(CatalogError, match="also declared in") as err:
        Catalog.load(root)
    assert err.value.file == str(root / "shipping_cost_copy.dmn") and err.value.line == 5
