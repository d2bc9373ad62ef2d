"""Hostile bytes (issue 16): a non-finite number, a lone surrogate or a NUL is refused with 400 where it comes in,
and every answer stays JSON (RFC 8259) whatever the database already holds.

Before: ``1e400`` was read as infinity, answered ``200`` with ``Infinity`` in the body on SQLite and spoiled every
later list; a lone surrogate was a 500 on both databases and a NUL in a filter a 500 on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from quart_spiff_messages.store.models import ProcessInstance

JSON = {"Content-Type": "application/json"}


def _refuse(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _assert_clean(value: Any, where: str = "answer") -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            _assert_clean(key, f"{where} key")
            _assert_clean(child, f"{where}.{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            _assert_clean(child, f"{where}[{index}]")
    elif isinstance(value, str):
        assert not re.search("[\ud800-\udfff]", value), f"{where} holds a lone surrogate"


async def strict_json(response: Any) -> Any:
    """The body as RFC 8259 JSON: UTF-8, no NaN/Infinity, no lone surrogate."""
    body = (await response.get_data()).decode("utf-8")
    value = json.loads(body, parse_constant=_refuse)
    _assert_clean(value)
    return value


async def assert_lists_are_json(client: Any) -> None:
    for path in ("/v1.0/messages", "/v1.0/process-instances"):
        response = await client.get(path)
        assert response.status_code == 200, path
        await strict_json(response)


async def refused(response: Any, error_code: str, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == 400, await response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    problem: dict[str, Any] = await strict_json(response)
    assert problem["error_code"] == error_code, problem
    if field is not None:
        assert problem["field"] == field, problem
    return problem


# -- numbers -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("number", ["1e400", "-1e400", "1e999", "-1E+999", "1" + "0" * 400 + ".5"])
async def test_a_number_beyond_float_range_in_a_payload_is_refused(client: Any, number: str) -> None:
    body = '{"order_id": "A-1", "items": [{"sku": "x"}, {"sku": "y"}, {"amount": ' + number + "}]}"
    response = await client.post("/v1.0/messages/order_received", data=body.encode(), headers=JSON)
    problem = await refused(response, "invalid_payload", "payload.items[2].amount")
    assert "finite" in problem["detail"]
    await assert_lists_are_json(client)
    assert (await strict_json(await client.get("/v1.0/messages")))["pagination"]["total"] == 0


async def test_a_number_beyond_float_range_in_start_data_is_refused(client: Any) -> None:
    body = b'{"shipment_id": "S-1", "parcel": {"weight": {"kg": -1e400}}}'
    response = await client.post("/v1.0/process-instances/shipping_process", data=body, headers=JSON)
    await refused(response, "invalid_payload", "data.parcel.weight.kg")
    await assert_lists_are_json(client)
    assert (await strict_json(await client.get("/v1.0/process-instances")))["pagination"]["total"] == 0


async def test_a_number_beyond_float_range_in_a_search_body_is_refused(client: Any) -> None:
    response = await client.post("/v1.0/messages", data=b'{"created_after": 1e999}', headers=JSON)
    await refused(response, "invalid_payload", "created_after")


# -- lone surrogates -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "field"), [
    (rb'{"order_id": "\ud800"}', "payload.order_id"),
    (rb'{"order_id": "A-1", "note": ["ok", "x\udfffy"]}', "payload.note[1]"),
    (rb'{"order_id": "A-1", "\udc00": 1}', 'payload["\\udc00"]'),
    (rb'{"order_id": "A-1", "meta": {"\ud800key": true}}', 'payload.meta["\\ud800key"]'),
])
async def test_a_lone_surrogate_in_a_payload_is_refused(client: Any, body: bytes, field: str) -> None:
    response = await client.post("/v1.0/messages/order_received", data=body, headers=JSON)
    await refused(response, "invalid_payload", field)
    await assert_lists_are_json(client)


async def test_a_valid_surrogate_pair_is_an_ordinary_character(client: Any) -> None:
    body = rb'{"order_id": "\ud83d\ude00", "note": "caf\u00e9"}'
    response = await client.post("/v1.0/messages/order_received", data=body, headers=JSON)
    assert response.status_code == 200, await response.get_data(as_text=True)
    answer = await strict_json(response)
    assert answer["task_data"]["order"] == {"order_id": "\U0001f600", "note": "café"}
    await assert_lists_are_json(client)


async def test_a_lone_surrogate_in_start_data_is_refused(client: Any) -> None:
    body = rb'{"shipment_id": "S-\ud800"}'
    response = await client.post("/v1.0/process-instances/shipping_process", data=body, headers=JSON)
    await refused(response, "invalid_payload", "data.shipment_id")
    await assert_lists_are_json(client)


@pytest.mark.parametrize(("body", "field"), [
    (rb'{"name": "\ud800"}', "name"),
    (rb'{"name": "payment_received", "status": ["ready", "\udbff"]}', "status[1]"),
])
async def test_a_lone_surrogate_in_a_search_filter_is_refused(client: Any, body: bytes, field: str) -> None:
    await refused(await client.post("/v1.0/messages", data=body, headers=JSON), "invalid_payload", field)


@pytest.mark.parametrize(("path", "field"), [
    ("/v1.0/messages?name=%ED%A0%80", "name"),
    ("/v1.0/messages?status=ready&name=pay%ED%B0%80ment", "name"),
    ("/v1.0/messages?name=%FF", "name"),
    ("/v1.0/process-instances?process_id=%ED%A0%80", "process_id"),
    ("/v1.0/messages-page?name=%ED%A0%80", "name"),
])
async def test_a_query_parameter_that_is_not_utf8_is_refused(client: Any, path: str, field: str) -> None:
    await refused(await client.get(path), "invalid_query_parameter", field)


async def test_a_send_query_parameter_that_is_not_utf8_is_refused(client: Any) -> None:
    response = await client.post("/v1.0/messages/order_received?message_instance_uuid=%ED%A0%80",
                                 data=b'{"order_id": "A-1"}', headers=JSON)
    await refused(response, "invalid_query_parameter", "message_instance_uuid")


async def test_a_path_segment_that_was_not_utf8_is_refused(client: Any) -> None:
    # The server hands the view U+FFFD for bytes that are not UTF-8; the raw path still tells.
    response = await client.post("/v1.0/messages/pay\ufffdment", data=b"{}", headers=JSON,
                                 scope_base={"raw_path": b"/v1.0/messages/pay%ED%A0%80ment"})
    await refused(response, "invalid_message_name", "modified_message_name")
    response = await client.post("/v1.0/process-instances/ship\ufffd", data=b"{}", headers=JSON,
                                 scope_base={"raw_path": b"/v1.0/process-instances/ship%ED%A0%80"})
    await refused(response, "invalid_process_id", "modified_process_id")
    response = await client.delete("/v1.0/messages/\ufffd", scope_base={"raw_path": b"/v1.0/messages/%ED%A0%80"})
    await refused(response, "invalid_message_instance_uuid", "message_instance_uuid")


# -- NUL -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [
    "/v1.0/messages?name=%00", "/v1.0/messages?name=pay%00ment", "/v1.0/messages?status=%00",
    "/v1.0/messages?status=ready,%00", "/v1.0/process-instances?process_id=%00",
    "/v1.0/process-instances?status=%00", "/v1.0/process-instances?process_id=shipping%00process",
])
async def test_nul_in_a_query_parameter_is_refused(client: Any, path: str) -> None:
    field = path.partition("?")[2].partition("=")[0]
    await refused(await client.get(path), "invalid_query_parameter", field)


@pytest.mark.parametrize(("method", "path", "error_code"), [
    ("POST", "/v1.0/messages/pay%00ment", "invalid_message_name"),
    ("POST", "/v1.0/messages/orders:%00", "invalid_message_name"),
    ("POST", "/v1.0/process-instances/shipping%00process", "invalid_process_id"),
    ("DELETE", "/v1.0/messages/3f0c6d1e-8f4e-4b7a-9a55-0c9f6f1d2a1%00", "invalid_message_instance_uuid"),
])
async def test_nul_in_a_path_name_is_refused(client: Any, method: str, path: str, error_code: str) -> None:
    body = b"{}" if method == "POST" else None
    response = await client.open(path, method=method, data=body, headers=JSON if body else {})
    await refused(response, error_code)


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1.0/messages/order_received", rb'{"order_id": "A\u0000"}', "payload.order_id"),
    ("/v1.0/messages/order_received", rb'{"order_id": "A", "\u0000": 1}', 'payload["\\u0000"]'),
    ("/v1.0/process-instances/shipping_process", rb'{"shipment_id": ["\u0000"]}', "data.shipment_id[0]"),
    ("/v1.0/messages", rb'{"name": "pay\u0000ment"}', "name"),
])
async def test_nul_in_a_body_is_refused(client: Any, path: str, body: bytes, field: str) -> None:
    await refused(await client.post(path, data=body, headers=JSON), "invalid_payload", field)
    await assert_lists_are_json(client)


# -- what the database already holds -------------------------------------------------------------------------------
async def test_stored_non_finite_numbers_and_surrogates_still_answer_json(client: Any, ext: Any) -> None:
    """Rows written before these checks (or by other code) may hold NaN, Infinity and lone surrogates."""
    sqlite = ext.runtime.store.dialect == "sqlite"  # PostgreSQL's json type refuses NaN, so it cannot hold one
    payload: dict[str, Any] = {"order_id": "old-\ud800", "\udc00key": ["x\udfff"]}
    keys: dict[str, Any] = {"order_key": {"order_id": "old-\ud800"}}
    if sqlite:
        payload.update(nan=float("nan"), big=float("inf"), small=[float("-inf")])
        keys["order_key"]["amount"] = float("nan")

    def write_old_row(tx: Any) -> int:
        row = tx.add_message(name="payment_received", scope="", message_type="send", status="not_accepted",
                             payload=payload, correlation_keys=keys, failure_cause="an old row")
        return int(row.id)

    await ext.runtime.store.write(write_old_row)
    listed = await strict_json(await client.get("/v1.0/messages"))
    row = listed["results"][0]
    assert row["payload"]["order_id"] == "old-\ufffd" and row["payload"]["\ufffdkey"] == ["x\ufffd"]
    if sqlite:
        assert row["payload"]["nan"] is None and row["payload"]["big"] is None and row["payload"]["small"] == [None]
        assert row["correlation_keys"]["order_key"]["amount"] is None
    searched = await strict_json(await client.post("/v1.0/messages", data=b"{}", headers=JSON))
    assert searched["results"] == listed["results"]
    page = await client.get("/v1.0/console/messages")
    assert page.status_code == 200
    html = (await page.get_data()).decode("utf-8")
    assert "old-\ufffd" in html
    if sqlite:
        assert "&#34;nan&#34;: null" in html or "&quot;nan&quot;: null" in html, html


async def test_a_stored_nan_in_instance_state_answers_json(client: Any, ext: Any) -> None:
    response = await client.post("/v1.0/process-instances/shipping_process",
                                 data=b'{"shipment_id": "S-1", "weight": 1.25}', headers=JSON)
    assert response.status_code == 201, await response.get_data(as_text=True)
    instance_id = (await strict_json(response))["process_instance"]["id"]

    def poison(tx: Any) -> None:
        state = tx.conn.execute(select(ProcessInstance.state).where(ProcessInstance.id == instance_id)).scalar_one()
        poisoned = re.sub(r'("weight":\s*)1\.25', r"\1NaN", state)
        assert poisoned != state
        tx.conn.execute(update(ProcessInstance).where(ProcessInstance.id == instance_id).values(state=poisoned))

    await ext.runtime.store.write(poison)
    shown = await strict_json(await client.get(f"/v1.0/process-instances/{instance_id}"))
    assert shown["process_instance"]["data"]["weight"] is None
    assert shown["process_instance"]["data"]["shipment_id"] == "S-1"
    await assert_lists_are_json(client)


# -- property: whatever is mixed in, never a 5xx -------------------------------------------------------------------
class Big:
    """A number literal that json.loads reads as infinity."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


HOSTILE_CHARACTERS = st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff"])
texts = st.text(alphabet=st.one_of(st.characters(), HOSTILE_CHARACTERS), max_size=6)
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False),
    texts, st.sampled_from(["1e400", "-1e400", "1e999", "-1E+999", "9" * 400 + ".0"]).map(Big))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                      max_leaves=8)


def encode(value: Any) -> str:
    if isinstance(value, Big):
        return value.literal
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(encode(v) for v in value) + "]"
    return json.dumps(value)  # strings: NUL and surrogates become \u escapes, as a client would send them


def hostile(value: Any) -> bool:
    if isinstance(value, Big):
        return True
    if isinstance(value, str):  # as the server decodes it: an escaped high+low pair is one valid character
        decoded = json.loads(json.dumps(value))
        return "\x00" in decoded or re.search("[\ud800-\udfff]", decoded) is not None
    if isinstance(value, dict):
        return any(hostile(k) or hostile(v) for k, v in value.items())
    if isinstance(value, list):
        return any(hostile(v) for v in value)
    return False


TARGETS = [("/v1.0/messages/order_received", "order_id"), ("/v1.0/process-instances/shipping_process",
                                                            "shipment_id"), ("/v1.0/messages", None)]


async def test_generated_hostile_payloads_never_give_a_server_error(client: Any) -> None:
    loop = asyncio.get_running_loop()
    seen = {"accepted": 0, "refused": 0}

    async def send(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        response = await client.post(path, data=encode(body).encode(), headers=JSON)
        return response.status_code, await strict_json(response)

    serials = iter(range(10**9))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(TARGETS), st.dictionaries(texts, values, max_size=4))
    def check(target: tuple[str, str | None], extra: dict[str, Any]) -> None:
        path, key = target  # a message that starts an order, start data, or a search body
        body = {**extra, key: f"P-{next(serials)}"} if key else {"name": extra.get("name", "x"), "more": extra}
        status, answer = asyncio.run_coroutine_threadsafe(send(path, body), loop).result(60)
        assert status < 500, answer
        if hostile(body):
            assert status == 400 and answer["error_code"] == "invalid_payload", answer
            assert answer["field"], answer
            seen["refused"] += 1
        else:
            assert status in (200, 201, 400), answer
            assert status != 400 or answer["error_code"] not in ("invalid_payload", "internal_server_error"), answer
            seen["accepted"] += 1

    await asyncio.to_thread(check)
    assert seen["refused"] and seen["accepted"], seen
    await assert_lists_are_json(client)
