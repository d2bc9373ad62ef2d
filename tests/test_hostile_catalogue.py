"""The catalogue of hostile requests: each answer's status and ``error_code``, and nothing written but audit rows.

Every row is one request a hostile or broken client could send. After each, the database holds no instance, no
subscription and no message except ``not_accepted`` audit rows.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from quart_spiff_messages.store.models import MessageInstance, ProcessInstance, Subscription

UUID = "3f0c6d1e-8f4e-4b7a-9a55-0c9f6f1d2a11"
JSON = {"Content-Type": "application/json"}

CATALOGUE: list[tuple[str, str, str, bytes | None, int, str]] = [
    # (case, method, path, body, status, error_code)
    ("body is not JSON", "POST", "/v1.0/messages/order_received", b"{order_id: 1}", 400, "invalid_payload"),
    ("body is an array", "POST", "/v1.0/messages/order_received", b"[1]", 400, "invalid_payload"),
    ("body is a string", "POST", "/v1.0/messages/order_received", b'"A-1"', 400, "invalid_payload"),
    ("body is a number", "POST", "/v1.0/messages/order_received", b"7", 400, "invalid_payload"),
    ("body is empty", "POST", "/v1.0/messages/order_received", b"", 400, "invalid_payload"),
    ("invalid UTF-8", "POST", "/v1.0/messages/order_received", b'{"a": "\xff"}', 400, "invalid_payload"),
    ("NaN", "POST", "/v1.0/messages/order_received", b'{"order_id": NaN}', 400, "invalid_payload"),
    ("nested too deep", "POST", "/v1.0/messages/order_received", b'{"a":' * 40 + b"1" + b"}" * 40, 400,
     "invalid_payload"),
    ("larger than the limit", "POST", "/v1.0/messages/order_received",
     b'{"pad": "' + b"x" * (1024 * 1024) + b'"}', 413, "payload_too_large"),
    ("empty name segment", "POST", "/v1.0/messages/orders::payment_failed", b"{}", 400, "invalid_message_name"),
    ("trailing colon", "POST", "/v1.0/messages/orders:", b"{}", 400, "invalid_message_name"),
    ("dot-dot segment", "POST", "/v1.0/messages/..:payment_failed", b"{}", 400, "invalid_message_name"),
    ("control character", "POST", "/v1.0/messages/pay%01ment", b"{}", 400, "invalid_message_name"),
    ("name of 256 characters", "POST", "/v1.0/messages/" + "n" * 256, b"{}", 400, "invalid_message_name"),
    ("TTL not a number", "POST", "/v1.0/messages/order_received?time_to_live_in_seconds=soon", b"{}", 400,
     "invalid_time_to_live"),
    ("TTL negative", "POST", f"/v1.0/messages/x?time_to_live_in_seconds=-1&message_instance_uuid={UUID}", b"{}",
     400, "invalid_time_to_live"),
    ("TTL beyond the maximum", "POST",
     f"/v1.0/messages/x?time_to_live_in_seconds=301&message_instance_uuid={UUID}", b"{}", 400,
     "invalid_time_to_live"),
    ("TTL without a key", "POST", "/v1.0/messages/x?time_to_live_in_seconds=5", b"{}", 400,
     "message_instance_uuid_required"),
    ("key not a UUID", "POST", "/v1.0/messages/x?message_instance_uuid=../../etc", b"{}", 400,
     "invalid_message_instance_uuid"),
    ("unknown execution mode", "POST", "/v1.0/messages/x?execution_mode=later", b"{}", 400,
     "invalid_execution_mode"),
    ("unknown message", "POST", "/v1.0/messages/no_such_message", b"{}", 400, "message_not_accepted"),
    ("payload lacks the key", "POST", "/v1.0/messages/payment_received", b'{"amount": 1}', 400,
     "message_not_accepted"),
    ("payload key shadows a builtin", "POST", "/v1.0/messages/payment_received",
     b'{"order_id": "nobody", "__builtins__": {}, "str": 1}', 400, "message_not_accepted"),
    ("cancel an unknown key", "DELETE", f"/v1.0/messages/{UUID}", None, 404, "message_not_found"),
    ("cancel with a bad key", "DELETE", "/v1.0/messages/%2e%2e", None, 400, "invalid_message_instance_uuid"),
    ("start an unknown process", "POST", "/v1.0/process-instances/no_such_process", b"{}", 404,
     "process_not_found"),
    ("start a message-started process", "POST", "/v1.0/process-instances/order_process", b"{}", 400,
     "process_not_startable"),
    ("start with a path trick", "POST", "/v1.0/process-instances/a:..:b", b"{}", 400, "invalid_process_id"),
    ("start with an array", "POST", "/v1.0/process-instances/shipping_process", b"[]", 400, "invalid_payload"),
    ("show an unknown instance", "GET", "/v1.0/process-instances/99", None, 404, "process_instance_not_found"),
    ("show a huge id", "GET", "/v1.0/process-instances/" + "9" * 40, None, 404, "process_instance_not_found"),
    ("per_page over the cap", "GET", "/v1.0/messages?per_page=1001", None, 400, "invalid_query_parameter"),
    ("page not a number", "GET", "/v1.0/process-instances?page=two", None, 400, "invalid_query_parameter"),
    ("unknown instance status", "GET", "/v1.0/process-instances?status=lost", None, 400, "invalid_query_parameter"),
    ("search with a boolean time", "POST", "/v1.0/messages", b'{"created_after": false}', 400, "invalid_request"),
    ("search with a string", "POST", "/v1.0/messages", b'"all"', 400, "invalid_payload"),
    # hostile bytes (issue 16): numbers beyond float range, lone surrogates, NUL
    ("1e400 in a payload", "POST", "/v1.0/messages/order_received", b'{"order_id": "A", "total": 1e400}', 400,
     "invalid_payload"),
    ("-1e999 nested in a payload", "POST", "/v1.0/messages/order_received",
     b'{"order_id": "A", "items": [{"amount": -1e999}]}', 400, "invalid_payload"),
    ("lone surrogate in a payload value", "POST", "/v1.0/messages/order_received", rb'{"order_id": "\ud800"}', 400,
     "invalid_payload"),
    ("lone surrogate in a payload key", "POST", "/v1.0/messages/order_received", rb'{"order_id": "A", "\udc00": 1}',
     400, "invalid_payload"),
    ("NUL in a payload", "POST", "/v1.0/messages/order_received", rb'{"order_id": "A\u0000"}', 400,
     "invalid_payload"),
    ("NUL in a message name", "POST", "/v1.0/messages/pay%00ment", b"{}", 400, "invalid_message_name"),
    ("1e400 in start data", "POST", "/v1.0/process-instances/shipping_process", b'{"shipment_id": "S", "w": 1e400}',
     400, "invalid_payload"),
    ("lone surrogate in start data", "POST", "/v1.0/process-instances/shipping_process",
     rb'{"shipment_id": "\udbff"}', 400, "invalid_payload"),
    ("NUL in a process id", "POST", "/v1.0/process-instances/shipping%00process", b"{}", 400, "invalid_process_id"),
    ("NUL in the TTL", "POST", "/v1.0/messages/order_received?time_to_live_in_seconds=%00", b"{}", 400,
     "invalid_query_parameter"),
    ("NUL in the name filter", "GET", "/v1.0/messages?name=%00", None, 400, "invalid_query_parameter"),
    ("NUL in the status filter", "GET", "/v1.0/messages?status=%00", None, 400, "invalid_query_parameter"),
    ("NUL in the process_id filter", "GET", "/v1.0/process-instances?process_id=%00", None, 400,
     "invalid_query_parameter"),
    ("lone surrogate in the name filter", "GET", "/v1.0/messages?name=%ED%A0%80", None, 400,
     "invalid_query_parameter"),
    ("lone surrogate on the messages page", "GET", "/v1.0/messages-page?name=%ED%A0%80", None, 400,
     "invalid_query_parameter"),
    ("bad process_id filter", "GET", "/v1.0/process-instances?process_id=a::b", None, 400, "invalid_process_id"),
    ("search with 1e400", "POST", "/v1.0/messages", b'{"created_after": 1e400}', 400, "invalid_payload"),
    ("search with a lone surrogate", "POST", "/v1.0/messages", rb'{"name": "\ud800"}', 400, "invalid_payload"),
    ("search with NUL", "POST", "/v1.0/messages", rb'{"name": "pay\u0000ment"}', 400, "invalid_payload"),
]


async def _rows(ext: Any) -> dict[str, int]:
    def count(tx: Any) -> dict[str, int]:
        def n(stmt: Any) -> int:
            return int(tx.conn.execute(stmt).scalar_one())

        return {
            "instances": n(select(func.count()).select_from(ProcessInstance)),
            "subscriptions": n(select(func.count()).select_from(Subscription)),
            "messages other than not_accepted": n(select(func.count()).select_from(MessageInstance)
                                                  .where(MessageInstance.status != "not_accepted")),
        }

    return await ext.runtime.store.read(count)


@pytest.mark.parametrize(("case", "method", "path", "body", "status", "error_code"), CATALOGUE,
                         ids=[row[0] for row in CATALOGUE])
async def test_hostile_request(client: Any, ext: Any, case: str, method: str, path: str, body: bytes | None,
                               status: int, error_code: str) -> None:
    response = await client.open(path, method=method, data=body, headers=JSON if body is not None else {})
    assert response.status_code == status, await response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    problem = await response.get_json()
    assert problem["error_code"] == error_code and problem["status"] == status and problem["detail"]
    assert await _rows(ext) == {"instances": 0, "subscriptions": 0, "messages other than not_accepted": 0}
