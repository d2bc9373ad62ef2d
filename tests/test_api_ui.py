"""The API's UI (``/v1.0/ui``) works offline: headless Chromium that can resolve no host but the server's own loads
Swagger UI from the package that ships it and lists our operations.

Without chromium the test is skipped, except in CI (``CI=true``) where it fails (``tests/browser.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from quart_spiff_messages.testing import Server, serving

from .conftest import FIXTURES


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    with serving(FIXTURES, database_url, tmp_path / "serve.log") as srv:
        yield srv


def test_the_api_ui_lists_our_operations_offline(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server.url}/ui")
    WebDriverWait(browser, 30).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")) > 0)
    shown = {(e.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text,
              e.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path"))
             for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary")}
    document = httpx.get(f"{server.url}/openapi.json").json()
    documented = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert documented and shown == documented
    assert ("POST", "/v1.0/messages/{modified_message_name}") in shown
    # grouped by the HTTP reference's sections (never "default"), each with its whole summary
    sections = [e.get_attribute("data-tag") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-tag")]
    assert sections == [t["name"] for t in document["tags"]] and "default" not in sections
    summaries = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-description")}
    assert summaries == {op["summary"] for ops in document["paths"].values() for op in ops.values()}
    # everything the page loaded came from the server itself
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    origin = server.url.rsplit("/v1.0", 1)[0]
    assert loaded and all(url.startswith(origin) for url in loaded), loaded


def test_the_ui_serves_only_its_own_files(server: Server) -> None:
    assert httpx.get(f"{server.url}/ui/assets/swagger-ui-bundle.js").headers["content-type"].startswith(
        "text/javascript")
    missing = httpx.get(f"{server.url}/ui/assets/..%2F..%2Fpyproject.toml")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
