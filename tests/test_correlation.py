"""Correlation values: canonical encoding, and payloads that must not change what an expression means."""

from __future__ import annotations

import pytest

from quart_spiff_messages.correlation import (
    ExpressionError,
    Property,
    canonical,
    compile_expression,
    evaluate,
    key_values,
)
from quart_spiff_messages.names import InvalidName, parse_modified_name


def test_canonical_sorts_keys_and_keeps_json_types_apart() -> None:
    assert canonical({"b": 1, "a": [2, {"y": 1, "x": 2}]}) == '{"a":[2,{"x":2,"y":1}],"b":1}'
    encodings = {canonical({"k": v}) for v in (1, True, "1")}
    assert len(encodings) == 3
    assert canonical({"k": 7.0}) == canonical({"k": 7})
    assert canonical({"k": 7.5}) != canonical({"k": 7})


def test_payload_cannot_shadow_called_functions() -> None:
    assert evaluate("str(order_id)", {"order_id": 5, "str": "evil"}) == "5"
    assert evaluate("len(items)", {"items": [1, 2], "len": 99}) == 2


def test_payload_cannot_replace_builtins() -> None:
    assert evaluate("str(order_id)", {"order_id": 5, "__builtins__": {}}) == "5"


def test_plain_names_are_payload_fields_even_if_they_are_builtins() -> None:
    assert evaluate("id", {"id": 7}) == 7
    assert evaluate("order['id']", {"order": {"id": 3}}) == 3


def test_missing_field_does_not_match() -> None:
    props = (Property("order_id", "order_id", ("order_key",)),)
    assert key_values(props, {"other": 1}) is None
    [kv] = key_values(props, {"order_id": "A"}) or []
    assert (kv.key, dict(kv.values), kv.canonical) == ("order_key", {"order_id": "A"}, '{"order_id":"A"}')


def test_comprehensions_see_payload_fields() -> None:
    assert evaluate("[i for i in items if i > limit]", {"items": [1, 5, 9], "limit": 4}) == [5, 9]


def test_invalid_expression_is_reported() -> None:
    with pytest.raises(ExpressionError):
        compile_expression("order[")


@pytest.mark.parametrize(("raw", "group", "name"), [
    ("payment_failed", "", "payment_failed"),
    ("orders:payment_failed", "orders", "payment_failed"),
    ("a:b:c", "a/b", "c"),
    ("Approval Result", "", "Approval Result"),
])
def test_modified_names(raw: str, group: str, name: str) -> None:
    scoped = parse_modified_name(raw)
    assert (scoped.group, scoped.name) == (group, name)


@pytest.mark.parametrize("raw", ["", "a::b", ":", "a:", "..:x", "x" * 256, "tab\there"])
def test_invalid_names(raw: str) -> None:
    with pytest.raises(InvalidName):
        parse_modified_name(raw)
