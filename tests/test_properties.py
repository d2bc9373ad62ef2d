"""Property tests: canonical correlation values and wire names (Hypothesis)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, literal, select

from quart_spiff_messages.correlation import canonical, evaluate
from quart_spiff_messages.names import InvalidName, ancestor_groups, group_path, in_scope, modified, parse_modified_name
from quart_spiff_messages.store.statements import in_group

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)
segments = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs"), blacklist_characters=":/\\"),
                   min_size=1, max_size=12).filter(lambda s: s.strip() and s not in (".", ".."))


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_canonical_is_stable_under_key_order_and_a_json_round_trip(values: dict[str, Any]) -> None:
    shuffled = dict(reversed(list(values.items())))
    assert canonical(values) == canonical(shuffled)
    assert canonical(json.loads(json.dumps(values))) == canonical(values)


@given(st.integers())
def test_a_number_a_boolean_and_a_string_never_share_a_key(n: int) -> None:
    assert len({canonical({"k": n}), canonical({"k": str(n)}), canonical({"k": n == 1})}) == 3


@given(st.lists(segments, min_size=0, max_size=3), segments)
def test_modified_names_round_trip(groups: list[str], name: str) -> None:
    wire = modified("/".join(groups), name)
    if len(wire) > 255:
        return
    scoped = parse_modified_name(wire)
    assert (scoped.group, scoped.name) == ("/".join(groups), name)


@given(st.text(max_size=300))
@settings(max_examples=300)
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    try:
        scoped = parse_modified_name(text)
    except InvalidName:
        return
    assert scoped.name and ":" not in scoped.name and len(text) <= 255


@given(st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=6), st.integers())
def test_payload_keys_never_change_a_called_function(extra: dict[str, Any], order_id: int) -> None:
    payload = {**extra, "order_id": order_id}
    assert evaluate("str(order_id)", payload) == str(order_id)


groups = st.lists(st.sampled_from(["a", "b", "ab", "A", "a_", "%", "é"]), max_size=3).map("/".join)


@given(groups, groups)
@settings(max_examples=300)
def test_the_three_forms_of_the_group_scope_rule_agree(prefix: str, group: str) -> None:
    """The catalog's in_scope, the store's prefix comparison of group paths (run as SQL on SQLite, where LIKE would
    ignore case) and the buffered messages' ancestor groups say the same of every prefix and group."""
    with SQLITE.connect() as conn:
        sql_says = bool(conn.execute(select(in_group(literal(group_path(group)))), {"group": group_path(prefix)})
                        .scalar_one())
    assert in_scope(prefix, group) == sql_says == (prefix in ancestor_groups(group)), (prefix, group)


SQLITE = create_engine("sqlite://")
