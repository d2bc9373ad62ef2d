"""The console's messages page in a real headless browser (Debian's chromium + chromedriver), served by
``spiff-messages serve``.

Without chromium the browser test is skipped, except in CI (``CI=true``) where it fails (``tests/browser.py``); the
browser resolves no host but the server's, so the page is shown to need nothing from the internet.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from quart_spiff_messages.testing import Server, serving

from .conftest import FIXTURES, Clock, make_app

SCRIPT_PAYLOAD = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">"


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    with serving(FIXTURES, database_url, tmp_path / "serve.log") as srv:
        yield srv


def _seed(url: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=10) as http:
        started = http.post("/messages/order_received", json={"order_id": "P-1", "total": 5}).json()
        http.post("/messages/payment_received", json={"order_id": "P-1", "amount": 5})
        for i in range(6):
            http.post("/messages/payment_received", json={"order_id": f"none-{i}"})
        hostile = http.post("/messages/payment_received", json={"order_id": SCRIPT_PAYLOAD})
        key = str(uuid.uuid4())
        buffered = http.post(f"/messages/payment_received?time_to_live_in_seconds=120&message_instance_uuid={key}",
                             json={"order_id": "later"})
    assert hostile.status_code == 400 and buffered.status_code == 202
    return {"instance_id": started["process_instance"]["id"]}


def _rows(driver: Any) -> list[dict[str, str]]:
    from selenium.webdriver.common.by import By

    out = []
    for tr in driver.find_elements(By.CSS_SELECTOR, "#messages tbody tr[data-id]"):
        cells = tr.find_elements(By.TAG_NAME, "td")
        out.append({"id": cells[0].text, "status": cells[2].text, "name": cells[4].text, "payload": cells[7].text,
                    "instance": cells[6].text, "time_left": cells[10].text})
    return out


def _after(driver: Any, action: Any) -> None:
    """Do ``action`` (a click that loads a page) and wait until the new page has replaced the old one."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    action()

    def replaced(_: Any) -> bool:
        try:
            return bool(expected_conditions.staleness_of(old)(driver))
        except WebDriverException as exc:  # asked while the old document is being torn down: gone too
            if "does not belong to the document" in str(exc):
                return True
            raise

    wait = WebDriverWait(driver, 10)
    wait.until(replaced)
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


def test_the_page_lists_filters_pages_and_escapes(browser: Any, server: Server, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    seeded = _seed(server.url)
    browser.get(f"{server.url}/console/messages?per_page=5")
    assert browser.title.startswith("Messages")
    assert browser.find_element(By.ID, "total").text == "12 messages"  # 10 sent + the start's and payment's receive
    first = _rows(browser)
    assert len(first) == 5
    assert [int(r["id"]) for r in first] == sorted((int(r["id"]) for r in first), reverse=True)  # newest first
    newest = first[0]
    assert newest["status"] == "ready" and newest["time_left"].endswith("s") and "later" in newest["payload"]
    hostile = first[1]
    assert hostile["status"] == "not_accepted"
    assert hostile["payload"].startswith('{"order_id": "<script>') and hostile["payload"].endswith("…")  # its start
    cell = browser.find_element(By.CSS_SELECTOR, f'#messages tr[data-id="{hostile["id"]}"] td.payload')
    cell.find_element(By.TAG_NAME, "summary").click()  # opens the whole value
    assert SCRIPT_PAYLOAD.replace('"', '\\"') in cell.find_element(By.TAG_NAME, "pre").text  # shown as text
    assert browser.execute_script("return window.pwned") is None  # and never run
    assert browser.find_elements(By.CSS_SELECTOR, "#messages img") == []
    browser.save_screenshot(str(tmp_path / "messages-page.png"))

    # no request leaves the server's origin (no CDN): the page works offline
    origins = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
    assert set(origins) <= {server.url.removesuffix("/v1.0")}

    _after(browser, browser.find_element(By.ID, "older").click)
    second = _rows(browser)
    assert browser.find_element(By.ID, "page").text == "page 2 of 3"
    assert {r["id"] for r in second}.isdisjoint({r["id"] for r in first})

    Select(browser.find_element(By.ID, "status")).select_by_value("completed")
    _after(browser, browser.find_element(By.ID, "filter").click)
    completed = _rows(browser)
    assert completed and {r["status"] for r in completed} == {"completed"}
    assert browser.find_element(By.ID, "page").text == "page 1 of 1"

    name = browser.find_element(By.ID, "name")
    name.clear()
    name.send_keys("order_received")
    Select(browser.find_element(By.ID, "status")).select_by_value("")
    _after(browser, browser.find_element(By.ID, "filter").click)
    orders = _rows(browser)
    assert {r["name"] for r in orders} == {"order_received"} and len(orders) == 2  # the send and its receive

    _after(browser, browser.find_element(By.CSS_SELECTOR, "a.instance").click)
    assert browser.current_url.endswith(f"/console/instances/{seeded['instance_id']}")
    assert browser.find_element(By.ID, "status").text == "complete"


async def test_the_page_needs_the_same_access_as_the_api(bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    app, _ = make_app(bpmn_dir, database_url, clock, SPIFF_MESSAGES_API_KEY="secret")
    async with app.test_app():
        client = app.test_client()
        moved = await client.get("/v1.0/messages-page?status=ready")
        assert moved.status_code == 301 and moved.headers["Location"] == "/v1.0/console/messages?status=ready"
        refused = await client.get("/v1.0/console/messages")
        assert refused.status_code == 303 and refused.headers["Location"].startswith("/v1.0/console/login")
        ok = await client.get("/v1.0/console/messages", headers={"SpiffWorkflow-Api-Key": "secret"})
        assert ok.status_code == 200 and ok.content_type.startswith("text/html")


async def test_a_bad_filter_is_a_clear_400(client: Any) -> None:
    response = await client.get("/v1.0/console/messages?per_page=5000")
    assert response.status_code == 400
    assert (await response.get_json())["error_code"] == "invalid_query_parameter"
