"""Loading the BPMN folder: indexes, groups, and errors that name the file, the element and the line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from quart_spiff_messages import Catalog, CatalogError
from quart_spiff_messages.names import ScopedName

from .conftest import BROKEN, FIXTURES


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
