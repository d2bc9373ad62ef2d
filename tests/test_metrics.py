"""``GET /metrics``: Prometheus text, counted per result, summed over workers, behind the same access check."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from quart import Quart

from quart_spiff_messages import SpiffMessages
from quart_spiff_messages.testing import Server, serving

from .conftest import FIXTURES, Clock, make_app


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sent(metrics: dict[Any, float], result: str) -> float:
    return metrics.get(("spiff_message_send_total", (("result", result),)), 0.0)


async def scrape(client: Any) -> dict[Any, float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples(await response.get_data(as_text=True))


async def test_each_result_is_counted_and_the_gauges_follow_the_database(client: Any, clock: Clock) -> None:
    before = await scrape(client)
    key = str(uuid.uuid4())
    await client.post("/v1.0/messages/order_received", json={"order_id": "M-1", "total": 1})  # started
    await client.post("/v1.0/messages/payment_received", json={"order_id": "M-1", "amount": 1})  # delivered
    await client.post("/v1.0/messages/payment_received", json={"order_id": "nobody"})  # not_accepted
    await client.post(f"/v1.0/messages/payment_received?time_to_live_in_seconds=60&message_instance_uuid={key}",
                      json={"order_id": "M-2", "amount": 2})  # buffered
    await client.post(f"/v1.0/messages/payment_received?time_to_live_in_seconds=60&message_instance_uuid={key}",
                      json={"order_id": "M-2", "amount": 2})  # replayed
    await client.post(f"/v1.0/messages/payment_received?time_to_live_in_seconds=60&message_instance_uuid={key}",
                      json={"order_id": "M-2", "amount": 3})  # conflict
    await client.post("/v1.0/messages/payment_received?time_to_live_in_seconds=99999", json={})  # invalid
    await client.post("/v1.0/messages/order_received", json={"order_id": "M-3", "total": 1})  # started, waits
    after = await scrape(client)

    delta = {r: sent(after, r) - sent(before, r) for r in
             ("started", "delivered", "not_accepted", "buffered", "replayed", "conflict", "invalid", "error")}
    assert delta == {"started": 2, "delivered": 1, "not_accepted": 1, "buffered": 1, "replayed": 1, "conflict": 1,
                     "invalid": 1, "error": 0}
    count = after[("spiff_message_send_duration_seconds_count", ())]
    assert count - before.get(("spiff_message_send_duration_seconds_count", ()), 0.0) == 8
    assert after[("spiff_messages_buffered", ())] == 1
    assert after[("spiff_subscriptions_waiting", ())] == 1  # M-3 waits for its payment

    clock.advance(61)
    expired_before = after.get(("spiff_message_expired_total", ()), 0.0)
    app: Quart = client.app
    await app.extensions["spiff_messages"].runtime.upkeep.sweep()
    final = await scrape(client)
    assert final[("spiff_message_expired_total", ())] - expired_before == 1
    assert final[("spiff_messages_buffered", ())] == 0


async def test_asynchronous_sends_count_as_accepted(client: Any) -> None:
    before = await scrape(client)
    for name, payload in (("order_received", {"order_id": "MA-1"}), ("payment_received", {"order_id": "MA-1"})):
        resp = await client.post(f"/v1.0/messages/{name}?execution_mode=asynchronous", json=payload)
        assert resp.status_code in (200, 202)  # a start answers with its reserved instance
    after = await scrape(client)
    assert {r: sent(after, r) - sent(before, r) for r in ("accepted", "error")} == {"accepted": 2, "error": 0}


async def test_metrics_need_the_api_key_and_pass_the_authorize_hook(bpmn_dir: Path, database_url: str,
                                                                     clock: Clock) -> None:
    actions: list[str] = []

    def authorize(request: Any, action: str) -> bool:
        actions.append(action)
        return request.headers.get("X-Role") == "ops"

    app = Quart(__name__)
    app.config.update(SPIFF_MESSAGES_BPMN_DIR=str(bpmn_dir), SPIFF_MESSAGES_DATABASE_URL=database_url,
                      SPIFF_MESSAGES_API_KEY="k1", SPIFF_MESSAGES_METRICS_PATH="/ops/metrics")
    SpiffMessages(app, clock=clock, authorize=authorize)
    async with app.test_app():
        client = app.test_client()
        assert (await client.get("/ops/metrics")).status_code == 401
        refused = await client.get("/ops/metrics", headers={"SpiffWorkflow-Api-Key": "k1"})
        assert refused.status_code == 403 and (await refused.get_json())["error_code"] == "forbidden"
        ok = await client.get("/ops/metrics", headers={"Authorization": "Bearer k1", "X-Role": "ops"})
        assert ok.status_code == 200
        assert (await client.get("/metrics")).status_code == 404
    assert actions == ["read_metrics", "read_metrics"]


async def test_metrics_can_be_switched_off(bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    app, _ = make_app(bpmn_dir, database_url, clock, SPIFF_MESSAGES_METRICS_PATH="")
    async with app.test_app():
        assert (await app.test_client().get("/metrics")).status_code == 404


@pytest.fixture
def two_workers(database_url: str, tmp_path: Path) -> Iterator[Server]:
    with serving(FIXTURES, database_url, tmp_path / "serve.log", workers=2) as srv:
        yield srv


def test_two_workers_report_one_sum(two_workers: Server) -> None:
    """Whichever worker answers the scrape, the counters are the sum over both."""
    root = two_workers.url.removesuffix("/v1.0")
    with httpx.Client(base_url=two_workers.url, timeout=10) as http:
        for i in range(20):
            assert http.post("/messages/order_received", json={"order_id": f"W-{i}", "total": 1}).status_code == 200
        for i in range(10):
            assert http.post("/messages/payment_received", json={"order_id": f"W-{i}", "amount": 1}).status_code \
                == 200
        seen = set()
        for _ in range(12):  # new connections: the kernel spreads them over both workers
            with httpx.Client(timeout=10) as fresh:
                scraped = samples(fresh.get(f"{root}/metrics").text)
            seen.add((sent(scraped, "started"), sent(scraped, "delivered"),
                      scraped[("spiff_subscriptions_waiting", ())]))
    assert seen == {(20.0, 10.0, 10.0)}
