"""Loading the BPMN folder: indexes, groups, and errors that name the file, the element and the line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from quart_spiff_messages import Catalog, CatalogError
from quart_spiff_messages.catalog import StartPoint
from quart_spiff_messages.names import ScopedName

from .conftest import BROKEN, CASES, FIXTURES


def test_groups_are_sub_folders() -> None:
    catalog = Catalog.load(FIXTURES)
    groups = {p.key: p.group for p in catalog.processes.values()}
    assert groups["order_process"] == ""
    assert groups["billing/invoice_process"] == "billing"
    assert groups["orders/eu/eu_payment_watch"] == "orders/eu"


def test_start_and_catch_indexes() -> None:
    catalog = Catalog.load(FIXTURES)
    starts = catalog.start_points(ScopedName("", "order_received"))
    assert [(s.process_id, s.element_id, s.message_variable) for s in starts] == [
        ("order_process", "order_start", "order")]
    catches = catalog.catch_points(ScopedName("", "payment_received"))
    assert [(c.process_id, c.kind) for c in catches] == [("order_process", "intermediate_catch")]
    prop = catches[0].properties[0]
    assert (prop.name, prop.expression, prop.keys) == ("order_id", "order_id", ("order_key",))
    gateway = catalog.catch_points(ScopedName("", "invoice_paid"))[0]
    assert gateway.kind == "event_based_gateway" and gateway.group == "billing"
    boundary = catalog.catch_points(ScopedName("", "review_cancelled"))[0]
    assert boundary.kind == "boundary" and boundary.interrupting is True


def test_scope_follows_path_segments() -> None:
    catalog = Catalog.load(FIXTURES)
    assert {c.group for c in catalog.catch_points(ScopedName("orders", "payment_failed"))} == {"orders/eu"}
    assert catalog.catch_points(ScopedName("order", "payment_failed")) == []
    assert [s.group for s in catalog.start_points(ScopedName("orders/eu", "payment_failed"))] == []


def _only(tmp_path: Path, case: str) -> Path:
    root = tmp_path / "bpmn"
    shutil.copytree(BROKEN / case, root)
    return root


def test_not_well_formed_file_names_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as err:
        Catalog.load(_only(tmp_path, "not_well_formed"))
    assert err.value.file and err.value.file.endswith("broken.bpmn")
    assert err.value.line == 17
    assert "broken.bpmn" in str(err.value) and "line 17" in str(err.value)


@pytest.mark.parametrize(("case", "element", "line"), [
    ("missing_message", "wait_missing", 11),
    ("dangling_flow", "dangling_work", 11),
])
def test_invalid_element_names_file_element_and_line(tmp_path: Path, case: str, element: str, line: int) -> None:
    with pytest.raises(CatalogError) as err:
        Catalog.load(_only(tmp_path, case))
    assert err.value.element_id == element
    assert err.value.line == line
    assert err.value.file and err.value.file.endswith(".bpmn")


def test_two_processes_starting_on_one_message_in_one_group(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as err:
        Catalog.load(_only(tmp_path, "duplicate_start"))
    assert "same_start" in str(err.value) and "first_starter" in str(err.value)
    assert err.value.line == 8


def test_same_start_message_in_two_groups_is_allowed(tmp_path: Path) -> None:
    root = tmp_path / "bpmn"
    (root / "one").mkdir(parents=True)
    (root / "two").mkdir()
    shutil.copy(BROKEN / "duplicate_start" / "a.bpmn", root / "one")
    shutil.copy(BROKEN / "duplicate_start" / "b.bpmn", root / "two")
    catalog = Catalog.load(root)
    assert len(catalog.start_points(ScopedName("", "same_start"))) == 2


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        Catalog.load(tmp_path / "nope")


TWO_STARTS = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="twice_definitions"
                  targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="twice" isExecutable="true">
    <bpmn:startEvent id="twice_first"><bpmn:outgoing>twice_f1</bpmn:outgoing>
      <bpmn:messageEventDefinition id="twice_first_def" messageRef="twice_msg" /></bpmn:startEvent>
    <bpmn:startEvent id="twice_second"><bpmn:outgoing>twice_f2</bpmn:outgoing>
      <bpmn:messageEventDefinition id="twice_second_def" messageRef="twice_msg" /></bpmn:startEvent>
    <bpmn:endEvent id="twice_end"><bpmn:incoming>twice_f1</bpmn:incoming><bpmn:incoming>twice_f2</bpmn:incoming>
    </bpmn:endEvent>
    <bpmn:sequenceFlow id="twice_f1" sourceRef="twice_first" targetRef="twice_end" />
    <bpmn:sequenceFlow id="twice_f2" sourceRef="twice_second" targetRef="twice_end" />
  </bpmn:process>
  <bpmn:message id="twice_msg" name="same_start" />
</bpmn:definitions>
"""


@pytest.fixture
def starters(tmp_path: Path) -> Catalog:
    """``same_start`` starts first_starter in groups one and two, second_starter in one/deep and in two."""
    root = tmp_path / "bpmn"
    for group, case in (("one", "a"), ("one/deep", "b"), ("two", "a"), ("two/x", "b")):
        (root / group).mkdir(parents=True)
        shutil.copy(BROKEN / "duplicate_start" / f"{case}.bpmn", root / group)
    return Catalog.load(root)


def _keys(starts: list[StartPoint]) -> list[str]:
    return [s.process_key for s in starts]


def test_the_nearest_start_is_in_the_shallowest_group(starters: Catalog) -> None:
    assert _keys(starters.nearest_starts(ScopedName("one", "same_start"))) == ["one/first_starter"]
    assert (picked := starters.pick_start(ScopedName("one", "same_start"))) is not None
    assert (picked.process_key, picked.element_id) == ("one/first_starter", "first_starter_start")
    deep = starters.pick_start(ScopedName("one/deep", "same_start"))
    assert deep is not None and deep.process_key == "one/deep/second_starter"


def test_equally_near_starts_are_listed_by_key_and_none_is_picked(starters: Catalog) -> None:
    scoped = ScopedName("", "same_start")
    assert _keys(starters.nearest_starts(scoped)) == ["one/first_starter", "two/first_starter"]
    assert starters.pick_start(scoped) is None


def test_no_start_in_scope(starters: Catalog) -> None:
    for scoped in (ScopedName("three", "same_start"), ScopedName("", "no_such_message")):
        assert starters.nearest_starts(scoped) == []
        assert starters.pick_start(scoped) is None


def test_a_process_with_two_starts_on_the_message_is_one_candidate(tmp_path: Path) -> None:
    root = tmp_path / "bpmn"
    (root / "sub").mkdir(parents=True)
    (root / "twice.bpmn").write_text(TWO_STARTS)
    shutil.copy(BROKEN / "duplicate_start" / "a.bpmn", root / "sub")  # deeper: not a rival
    catalog = Catalog.load(root)
    scoped = ScopedName("", "same_start")
    assert len(catalog.start_points(scoped)) == 3
    assert [(s.process_key, s.element_id) for s in catalog.nearest_starts(scoped)] == [("twice", "twice_first")]
    picked = catalog.pick_start(scoped)
    assert picked is not None and picked.element_id == "twice_first"


def test_catches_and_throws_keep_what_check_needs() -> None:
    catalog = Catalog.load(CASES / "ping")
    catches = {c.process_id: c for c in catalog.catch_points(ScopedName("", "ping"))}
    assert [p.name for p in catches["keyed_ping_waiter"].process_properties] == ["key"]
    assert catches["any_ping_waiter"].process_properties == ()
    (throw,) = catalog.throws["ping"]
    assert throw.payload_expression == '{"key": key, "n": n}'
    assert [p.name for p in throw.properties] == ["key"]
