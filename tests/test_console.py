"""The operator console in a real headless browser (Debian's chromium + chromedriver), served by ``spiff-messages
serve`` behind an API key: every instance drawn as its BPMN diagram with the state of each element it reached, the
call activity's called process opened, a task completed and a fixed instance retried from the page, nothing loaded
from elsewhere. The key and the ``authorize`` hook are checked through the app's test client.

The folder served is ``bpmn_fixtures/`` (diagram interchange written into the files) plus test cases without
diagram interchange (``tests/bpmn_cases``: drawn by bpmn-auto-layout in the browser).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Request

from quart_spiff_messages import SpiffMessages
from quart_spiff_messages.testing import Server, invariant_violations, serving

from .conftest import CASES, FIXTURES, Clock, make_app
from .test_messages_page import _after

KEY = "console-secret"
HEADERS = {"SpiffWorkflow-Api-Key": KEY}
LATER = "6f1c1f7e-2b1a-4d4e-9a59-4c8cfe0d3a11"
FAILING = 'result = 100 / divisor["value"]'


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "bpmn"
    shutil.copytree(FIXTURES, root)
    for case in ("human/approval.bpmn", "failing/failing.bpmn", "shapes/ca.bpmn"):
        (root / "cases").mkdir(exist_ok=True)
        shutil.copy2(CASES / case, root / "cases" / Path(case).name)
    return root


@pytest.fixture
def server(folder: Path, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("SPIFF_MESSAGES_API_KEY", KEY)
    with serving(folder, database_url, tmp_path / "serve.log") as srv:
        yield srv


def _seed(url: str) -> dict[str, int]:
    """One instance in each situation the diagram must show."""
    with httpx.Client(base_url=url, timeout=20, headers=HEADERS) as http:
        def instance(resp: httpx.Response) -> int:
            assert resp.status_code in (200, 201), resp.text
            return int(resp.json()["process_instance"]["id"])

        waiting = instance(http.post("/messages/order_received", json={"order_id": "W-1", "total": 12}))
        complete = instance(http.post("/messages/order_received", json={"order_id": "C-1", "total": 3}))
        assert http.post("/messages/payment_received", json={"order_id": "C-1", "amount": 3}).status_code == 200
        human = instance(http.post("/messages/cases:approval_requested", json={"order_id": "H-1", "total": 40}))
        divider = instance(http.post("/process-instances/cases:divider", json={}))
        failed = http.post("/messages/cases:divisor", json={"value": 0})
        assert failed.status_code == 400 and failed.json()["error_code"] == "process_error", failed.text
        called = instance(http.post("/messages/cases:ca_start", json={"order_id": "CA-1"}))
        buffered = http.post(f"/messages/payment_received?time_to_live_in_seconds=120&message_instance_uuid={LATER}",
                             json={"order_id": "LATER", "amount": 1})
        assert buffered.status_code == 202, buffered.text
    return {"waiting": waiting, "complete": complete, "human": human, "failed": divider, "called": called}


def _classes(driver: Any, element_id: str) -> set[str]:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f'g[data-element-id="{element_id}"]')
    assert found, f"no g[data-element-id={element_id!r}] drawn"
    return set((found[0].get_attribute("class") or "").split())


def _open(driver: Any, url: str) -> str:
    """Open an instance or process page and wait until its diagram is drawn; how it was drawn."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script("var e = document.getElementById('diagram'); return e && e.dataset.state"))
    state = str(driver.execute_script("return document.getElementById('diagram').dataset.state"))
    assert state in ("drawn", "laid-out"), driver.find_element("id", "diagram").text
    return state


def _origins(driver: Any) -> set[str]:
    return set(driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)"
        ".concat([location.origin])"))


def test_the_console_draws_each_instance_where_it_stands_and_acts(browser: Any, server: Server, folder: Path,
                                                                   database_url: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    ids = _seed(server.url)
    console = f"{server.url}/console"
    origin = server.url.removesuffix("/v1.0")

    # signing in: the key typed once, kept in an HttpOnly cookie the console reads
    browser.delete_all_cookies()
    browser.get(f"{console}/instances/{ids['waiting']}")
    assert "/console/login" in browser.current_url
    browser.find_element(By.ID, "key").send_keys("wrong")
    _after(browser, browser.find_element(By.ID, "sign-in").click)
    assert browser.find_element(By.ID, "error").is_displayed()
    browser.find_element(By.ID, "key").send_keys(KEY)
    _after(browser, browser.find_element(By.ID, "sign-in").click)
    assert browser.current_url.endswith(f"/console/instances/{ids['waiting']}")
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly: no script reads the key

    # waiting at a message catch (fixture with diagram interchange, drawn as the file says)
    assert _open(browser, f"{console}/instances/{ids['waiting']}") == "drawn"
    assert "spiff-completed" in _classes(browser, "extract_order_id")
    assert "spiff-waiting" in _classes(browser, "wait_payment")
    assert not {c for c in _classes(browser, "record_payment") if c.startswith("spiff-")}
    waits = browser.find_element(By.ID, "waits").text
    assert "payment_received" in waits and "W-1" in waits
    assert _origins(browser) == {origin}

    # complete
    _open(browser, f"{console}/instances/{ids['complete']}")
    assert "spiff-completed" in _classes(browser, "record_payment")
    assert "spiff-completed" in _classes(browser, "order_end")
    assert browser.find_element(By.ID, "status").text == "complete"

    # failed in a script (a case without diagram interchange: laid out in the browser)
    assert _open(browser, f"{console}/instances/{ids['failed']}") == "laid-out"
    assert "spiff-error" in _classes(browser, "divide")
    assert "spiff-completed" in _classes(browser, "wait_divisor")
    assert "ZeroDivisionError" in browser.find_element(By.ID, "failure").text
    assert _origins(browser) == {origin}

    # inside a call activity: the call runs, the called process's diagram shows where the child waits
    _open(browser, f"{console}/instances/{ids['called']}")
    assert "spiff-active" in _classes(browser, "ca_call")
    assert "spiff-completed" in _classes(browser, "ca_parent_extract")
    browser.find_element(By.CSS_SELECTOR, 'g[data-element-id="ca_call"]').click()  # drill down from the diagram
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 10).until(lambda d: "workflow=" in d.current_url)
    _open(browser, browser.current_url)
    assert browser.find_element(By.ID, "drawn").text == "ca_child"
    assert "spiff-waiting" in _classes(browser, "ca_child_wait")
    assert "spiff-completed" in _classes(browser, "ca_child_start")

    # a human task: READY, completed from its form; the instance runs on to the payment it waits for
    _open(browser, f"{console}/instances/{ids['human']}")
    assert "spiff-ready" in _classes(browser, "approve")
    browser.save_screenshot(str(tmp_path / "instance.png"))
    form = browser.find_element(By.CSS_SELECTOR, 'form.task[data-element="approve"]')
    data = form.find_element(By.TAG_NAME, "textarea")
    data.clear()
    data.send_keys('{"approved": true}')
    _after(browser, form.find_element(By.CSS_SELECTOR, "button.complete").click)
    assert "completed" in browser.find_element(By.ID, "done").text
    _open(browser, browser.current_url)
    assert "spiff-completed" in _classes(browser, "approve")
    assert "spiff-waiting" in _classes(browser, "approval_wait_payment")
    assert browser.find_elements(By.CSS_SELECTOR, "form.task") == []

    # retry a fixed instance: the script is fixed in the folder, the catalog reloaded, Retry pressed
    case = folder / "cases" / "failing.bpmn"
    case.write_text(case.read_text().replace(FAILING, 'result = 100 / (divisor["value"] or 1)'))
    assert httpx.post(f"{server.url}/catalog/reload", headers=HEADERS, timeout=20).status_code == 200
    _open(browser, f"{console}/instances/{ids['failed']}")
    _after(browser, browser.find_element(By.ID, "retry").click)
    assert "retried" in browser.find_element(By.ID, "done").text
    _open(browser, browser.current_url)
    assert browser.find_element(By.ID, "status").text == "complete"
    assert "spiff-completed" in _classes(browser, "divide")

    # the lists: instances filtered by status, messages with the instance a send reached
    browser.get(f"{console}/instances?status=waiting")
    listed = {int(a.text) for a in browser.find_elements(By.CSS_SELECTOR, "#instances a.instance")}
    assert {ids["waiting"], ids["human"], ids["called"]} <= listed and ids["complete"] not in listed
    browser.get(f"{console}/messages?name=payment_received")
    sends = browser.find_elements(By.CSS_SELECTOR, "#messages tbody tr[data-id]")
    assert sends and all(len(tr.find_elements(By.TAG_NAME, "td")) == 12 for tr in sends)
    reached = {a.text for a in browser.find_elements(By.CSS_SELECTOR, "#messages a.instance")}
    assert str(ids["complete"]) in reached
    for tr in sends:  # one line per message
        assert tr.size["height"] < 40, tr.size
    # cancel the buffered message from its row
    later = browser.find_element(By.CSS_SELECTOR, "#messages tr.m-ready button.cancel")
    _after(browser, later.click)
    assert "cancelled" in browser.find_element(By.ID, "done").text
    assert "name=payment_received" in browser.current_url  # back on the same list, its filter kept
    browser.get(f"{console}/messages?status=cancelled&name=payment_received")
    assert "cancelled by request" in browser.find_element(By.ID, "messages").text
    browser.get(f"{server.url}/messages-page?status=not_accepted")  # the old address leads here, filters kept
    assert "/console/messages?status=not_accepted" in browser.current_url
    assert {td.text for td in browser.find_elements(By.CSS_SELECTOR, "#messages tbody tr[data-id] td:nth-child(3)")} \
        <= {"not_accepted"}

    # the processes page draws a process of the catalog
    _open(browser, f"{console}/processes?process=orders/payment_recovery")
    assert browser.find_elements(By.CSS_SELECTOR, "g[data-element-id]")
    assert _origins(browser) == {origin}

    import asyncio

    assert asyncio.run(invariant_violations(database_url)) == []


async def test_the_key_and_the_hook_guard_every_page_and_button(bpmn_dir: Path, database_url: str,
                                                                 clock: Clock) -> None:
    asked: list[str] = []

    def authorize(request: Request, action: str) -> bool:
        asked.append(action)
        return request.headers.get("X-Role") == "operator" or action == "list_messages"

    app, ext = make_app(bpmn_dir, database_url, clock, SPIFF_MESSAGES_API_KEY=KEY)
    assert isinstance(ext, SpiffMessages)
    ext.authorize = authorize
    async with app.test_app():
        client = app.test_client()
        operator = {**HEADERS, "X-Role": "operator"}
        started = await client.post("/v1.0/messages/order_received", json={"order_id": "K-1"}, headers=operator)
        number = (await started.get_json())["process_instance"]["id"]

        # no key: a page goes to the sign-in form, a button is refused
        page = await client.get(f"/v1.0/console/instances/{number}")
        assert page.status_code == 303 and page.headers["Location"].startswith("/v1.0/console/login?next=")
        button = await client.post(f"/v1.0/console/instances/{number}/retry")
        assert button.status_code == 401
        assert (await client.get("/v1.0/console/diagram/order_process")).status_code == 303
        # the key as a header, or as the cookie the sign-in form sets (only a right key sets it)
        assert (await client.get(f"/v1.0/console/instances/{number}", headers=operator)).status_code == 200
        wrong = await client.post("/v1.0/console/login", form={"key": "nope", "next": "/v1.0/console/messages"})
        assert wrong.status_code == 303 and "failed=1" in wrong.headers["Location"]
        assert "set-cookie" not in wrong.headers
        signed = await client.post("/v1.0/console/login", form={"key": KEY, "next": "/v1.0/console/messages"})
        assert signed.status_code == 303 and signed.headers["Location"] == "/v1.0/console/messages"
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/v1.0/console" in cookie
        assert (await client.get("/v1.0/console/messages")).status_code == 200  # the cookie, and the hook allows
        # the hook is asked each page's and each button's action
        for path, action in [("/v1.0/console/instances", "list_process_instances"),
                             (f"/v1.0/console/instances/{number}", "read_process_instance"),
                             ("/v1.0/console/processes", "read_message_models")]:
            asked.clear()
            refused = await client.get(path)
            assert refused.status_code == 403 and asked == [action], (path, asked)
            assert (await client.get(path, headers={"X-Role": "operator"})).status_code == 200
        for path, action in [(f"/v1.0/console/instances/{number}/retry", "retry_process_instance"),
                             (f"/v1.0/console/instances/{number}/tasks/abc", "complete_task"),
                             ("/v1.0/console/messages/6f1c1f7e-2b1a-4d4e-9a59-4c8cfe0d3a11/cancel", "cancel_message")]:
            asked.clear()
            assert (await client.post(path)).status_code == 403 and asked == [action], (path, asked)
        # a form posted from another site is refused even when everything else allows it
        foreign = await client.post(f"/v1.0/console/instances/{number}/retry",
                                    headers={"X-Role": "operator", "Origin": "https://evil.example"})
        assert foreign.status_code == 403
        # a retry of an instance that is not in error is said on the page, not a 500
        ok = await client.post(f"/v1.0/console/instances/{number}/retry", headers={"X-Role": "operator"})
        assert ok.status_code == 303 and "error=" in ok.headers["Location"]
        # signing out forgets the key
        out = await client.post("/v1.0/console/logout")
        assert out.status_code == 303
        assert (await client.get("/v1.0/console/messages")).status_code == 303
