"""``spiff-messages serve``: the real server, over loopback, with one and with two workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from quart_spiff_messages.testing import Server, serving

from .conftest import FIXTURES


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def server(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Iterator[Server]:
    with serving(FIXTURES, database_url, tmp_path / "serve.log", workers=request.param) as srv:
        yield srv


def test_serve_routes_messages_over_http(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        started = http.post("/messages/order_received", json={"order_id": "S-1", "total": 3})
        assert started.status_code == 200
        instance_id = started.json()["process_instance"]["id"]
        wrong = http.post("/messages/payment_received", json={"order_id": "S-2"})
        assert wrong.status_code == 400 and wrong.json()["error_code"] == "message_not_accepted"
        right = http.post("/messages/payment_received", json={"order_id": "S-1", "amount": 3})
        assert right.status_code == 200
        assert right.json()["process_instance"] == {**right.json()["process_instance"], "id": instance_id,
                                                    "status": "complete"}
        assert http.get("/openapi.json").status_code == 200


def test_serve_refuses_a_broken_folder(tmp_path: Path) -> None:
    srv = Server(Path(__file__).parent / "bpmn_broken" / "missing_message", "sqlite:///" + str(tmp_path / "x.db"),
                 log=tmp_path / "serve.log")
    try:
        assert srv.proc.wait(timeout=30) != 0
    finally:
        srv.stop()
    assert "missing.bpmn, line 11, element 'wait_missing'" in (tmp_path / "serve.log").read_text()
