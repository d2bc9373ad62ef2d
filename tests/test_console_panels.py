"""The console's instance page beside the diagram, through the app's test client: a timer's due time in a person's
terms, a failed service call with its attempts and last error, retry from the page once the handler is fixed, the
instance's events; the diagram's states as the page hands them to its script; a task form's bad JSON."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from quart_spiff_messages import ServiceCall, SpiffMessages

from .conftest import CASES, Clock


@pytest.fixture
def spiff_config() -> dict[str, Any]:
    """No pause between a service handler's attempts: the clock of these tests stands still (as test_services')."""
    return {"SPIFF_MESSAGES_SERVICE_BACKOFF_SECONDS": 0, "SPIFF_MESSAGES_SERVICE_ATTEMPTS": 3}


def _marks(html: str) -> dict[str, str]:
    found = re.search(r'<script type="application/json" id="marks">(.*?)</script>', html, re.S)
    assert found, html
    return {m["element_id"]: m["marker"] for m in json.loads(found.group(1))}


async def _page(client: Any, path: str) -> str:
    resp = await client.get(path)
    assert resp.status_code == 200, await resp.get_data(as_text=True)
    return str(await resp.get_data(as_text=True))


async def test_a_timer_shows_its_due_time_and_how_far_away(client: Any, clock: Clock) -> None:
    resp = await client.post("/v1.0/messages/billing:invoice_issued", json={"invoice_id": "INV-7"})
    instance_id = (await resp.get_json())["process_instance"]["id"]
    html = await _page(client, f"/v1.0/console/instances/{instance_id}")
    timer = re.search(r'<p class="timer">(.*?)</p>', html, re.S)
    assert timer and "invoice_timeout" in timer.group(1) and "in 1 h" in timer.group(1), html
    due = clock.now + 3600
    from datetime import datetime, timezone

    assert datetime.fromtimestamp(due, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") in timer.group(1)
    clock.advance(3600 - 4 * 60)
    html = await _page(client, f"/v1.0/console/instances/{instance_id}")
    assert "in 4 min" in html
    marks = _marks(html)  # an event-based gateway waits for whichever of its catches comes first
    assert marks["invoice_gateway"] == "waiting" and "invoice_timeout" not in marks
    assert marks["extract_invoice_id"] == "completed"
    listed = await _page(client, "/v1.0/console/instances?status=waiting")
    assert "timer invoice_timeout at" in listed and "message invoice_paid" in listed


@pytest.mark.bpmn(CASES / "services")
async def test_a_failed_service_call_shows_its_attempts_and_retry_from_the_page_runs_it_again(
        client: Any, ext: SpiffMessages) -> None:
    def broken(call: ServiceCall) -> Any:
        raise RuntimeError("backend down")

    ext.service_handlers["flaky/op"] = broken
    resp = await client.post("/v1.0/process-instances/svc_flaky", json={"n": 2})
    instance_id = (await resp.get_json())["process_instance"]["id"]
    await ext.settle_services()
    html = await _page(client, f"/v1.0/console/instances/{instance_id}")
    service = re.search(r'<section id="services">(.*?)</section>', html, re.S)
    assert service, html
    text = re.sub(r"\s+", " ", service.group(1))
    assert "flaky/op" in text and "3 attempts" in text and "last error: RuntimeError: backend down" in text
    assert _marks(html)["svc_flaky_call"] == "error"
    assert 'id="retry"' in html and "instance_errored" in html  # the retry button, and the event from the feed

    ext.service_handlers["flaky/op"] = lambda call: {"n": call.params["n"]}  # fixed
    retried = await client.post(f"/v1.0/console/instances/{instance_id}/retry")
    assert retried.status_code == 303 and "done=" in retried.headers["Location"]
    await ext.settle_services()
    html = await _page(client, retried.headers["Location"])
    assert "retried" in html and 'id="retry"' not in html
    assert _marks(html)["svc_flaky_call"] == "completed"
    shown = (await (await client.get(f"/v1.0/process-instances/{instance_id}")).get_json())["process_instance"]
    assert (shown["status"], shown["data"]["doubled"]) == ("complete", 4)


@pytest.mark.bpmn(CASES / "human")
async def test_a_task_form_with_bad_json_says_so_and_changes_nothing(client: Any) -> None:
    resp = await client.post("/v1.0/messages/approval_requested", json={"order_id": "F-1", "total": 3})
    instance_id = (await resp.get_json())["process_instance"]["id"]
    html = await _page(client, f"/v1.0/console/instances/{instance_id}")
    guid = re.search(r'action="/v1.0/console/instances/\d+/tasks/([0-9a-f-]+)"', html)
    assert guid and _marks(html)["approve"] == "ready"
    for bad in ("[1, 2]", "{not json", '{"x": NaN}'):
        answer = await client.post(f"/v1.0/console/instances/{instance_id}/tasks/{guid.group(1)}", form={"data": bad})
        assert answer.status_code == 303 and "error=" in answer.headers["Location"], bad
        assert "task data" in await _page(client, answer.headers["Location"])
    again = await _page(client, f"/v1.0/console/instances/{instance_id}")
    assert _marks(again)["approve"] == "ready"
    done = await client.post(f"/v1.0/console/instances/{instance_id}/tasks/{guid.group(1)}",
                             form={"data": '{"approved": true}'})
    assert done.status_code == 303 and "done=" in done.headers["Location"]
    twice = await client.post(f"/v1.0/console/instances/{instance_id}/tasks/{guid.group(1)}", form={"data": "{}"})
    assert "error=" in twice.headers["Location"]  # a second completion: the API's 409, said on the page
    assert _marks(await _page(client, f"/v1.0/console/instances/{instance_id}"))["approve"] == "completed"


async def test_an_unknown_instance_or_called_process_is_a_404(client: Any) -> None:
    assert (await client.get("/v1.0/console/instances/999")).status_code == 404
    resp = await client.post("/v1.0/messages/order_received", json={"order_id": "U-1"})
    instance_id = (await resp.get_json())["process_instance"]["id"]
    assert (await client.get(f"/v1.0/console/instances/{instance_id}?workflow=nope")).status_code == 404
    assert (await client.get("/v1.0/console/diagram/no_such_process")).status_code == 404
    assert (await client.get("/v1.0/console/static/../console.py")).status_code == 404
