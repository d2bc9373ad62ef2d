"""The screenshots of docs/howto/operate.md: a server on bpmn_fixtures/ plus a few test cases, realistic traffic, and
the console's four pages in headless Chromium (Debian's chromium + chromedriver).

    python tools/console/screenshots.py [OUTPUT_FOLDER]   # default docs/_static/console
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from quart_spiff_messages.testing import serving

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "bpmn_cases"


def traffic(http: httpx.Client) -> dict[str, int]:
    def instance(resp: httpx.Response) -> int:
        return int(resp.json()["process_instance"]["id"])

    ids: dict[str, int] = {}
    for n, total in enumerate((120, 35, 980, 44, 15), start=1041):
        ids[f"order {n}"] = instance(http.post("/messages/order_received",
                                               json={"order_id": f"A-{n}", "total": total, "currency": "EUR"}))
    for n in (1041, 1043):
        http.post("/messages/payment_received", json={"order_id": f"A-{n}", "amount": 120, "method": "card"})
    http.post("/messages/payment_received", json={"order_id": "A-0999", "amount": 80, "method": "sepa"})
    later = str(uuid.uuid4())
    http.post(f"/messages/payment_received?time_to_live_in_seconds=300&message_instance_uuid={later}",
              json={"order_id": "A-1050", "amount": 60, "method": "card", "reference": "RF18 5390 0754 7034"})
    ids["invoice"] = instance(http.post("/messages/billing:invoice_issued",
                                        json={"invoice_id": "INV-2026-118", "amount": 410.5, "due": "2026-12-20"}))
    ids["approval"] = instance(http.post("/messages/cases:approval_requested",
                                         json={"order_id": "A-1042", "total": 980, "customer": "Berger GmbH"}))
    http.post("/messages/review_requested", json={"ticket": "T-311", "summary": "Refund above limit"})
    http.post("/process-instances/cases:divider", json={})
    http.post("/messages/cases:divisor", json={"value": 0, "source": "pricing"})
    ids["called"] = instance(http.post("/messages/cases:ca_start", json={"order_id": "A-1044"}))
    http.post("/messages/payment_failed", json={"order_id": "A-1045", "reason": "card expired"})
    return ids


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bpmn"
        shutil.copytree(ROOT / "bpmn_fixtures", folder)
        (folder / "cases").mkdir()
        for case in ("human/approval.bpmn", "failing/failing.bpmn", "shapes/ca.bpmn"):
            shutil.copy2(CASES / case, folder / "cases")
        with serving(folder, f"sqlite:///{tmp}/console.db", Path(tmp) / "serve.log") as server:
            with httpx.Client(base_url=server.url, timeout=20) as http:
                ids = traffic(http)
            options = webdriver.ChromeOptions()
            options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
            for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1700,1000",
                        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--hide-scrollbars"):
                options.add_argument(arg)
            driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                                      options=options)
            try:
                console = f"{server.url}/console"
                for name, url, diagram in [
                    ("messages-payment", f"{console}/messages?name=payment_received", False),  # the messages page
                    ("instances", f"{console}/instances", False),
                    ("instance", f"{console}/instances/{ids['approval']}", True),
                    ("instance-waiting", f"{console}/instances/{ids['order 1042']}", True),
                    ("processes", f"{console}/processes?process=billing/invoice_process", True),
                ]:
                    driver.get(url)
                    if diagram:
                        WebDriverWait(driver, 20).until(
                            lambda d: d.execute_script("return document.getElementById('diagram').dataset.state"))
                        time.sleep(0.3)
                    driver.save_screenshot(str(out / f"{name}.png"))
                    print(out / f"{name}.png")
            finally:
                driver.quit()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "_static" / "console")
