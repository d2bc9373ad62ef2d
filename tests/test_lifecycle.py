"""The extension's lifecycle: config, start-up errors, spec versions across restarts, the command line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from quart import Quart

from quart_spiff_messages import ConfigError, SpiffMessages

from .conftest import BROKEN, FIXTURES, Clock, make_app


def test_bpmn_dir_is_required() -> None:
    app = Quart(__name__)
    with pytest.raises(ConfigError, match="SPIFF_MESSAGES_BPMN_DIR"):
        SpiffMessages(app)


async def test_init_app_keeps_state_in_app_extensions(tmp_path: Path, database_url: str, clock: Clock) -> None:
    app = Quart(__name__)
    app.config.update(SPIFF_MESSAGES_BPMN_DIR=str(FIXTURES), SPIFF_MESSAGES_DATABASE_URL=database_url,
                      SPIFF_MESSAGES_URL_PREFIX="/api")
    ext = SpiffMessages(clock=clock)
    ext.init_app(app)
    assert "spiff_messages" in app.extensions
    async with app.test_app():
        async with app.app_context():
            outcome = await ext.send_message("order_received", {"order_id": "Z"})
        assert outcome.kind == "started"
        resp = await app.test_client().post("/api/messages/payment_received", json={"order_id": "Z"})
        assert resp.status_code == 200
        assert (await app.test_client().get("/api/openapi.json")).status_code == 200
    async with app.app_context():
        with pytest.raises(RuntimeError, match="not started"):
            ext.runtime  # noqa: B018  (released on shutdown)


async def test_broken_bpmn_stops_start_up(tmp_path: Path, database_url: str, clock: Clock) -> None:
    app, _ = make_app(BROKEN / "dangling_flow", database_url, clock)
    # Quart's test app reports a failed start-up as a LifespanError carrying the catalog's message.
    with pytest.raises(Exception, match=r"dangling\.bpmn, line 11, element 'dangling_work'"):
        async with app.test_app():
            pass


async def test_instance_resumes_on_the_spec_it_started_with(tmp_path: Path, database_url: str, clock: Clock) -> None:
    bpmn = tmp_path / "bpmn"
    shutil.copytree(FIXTURES, bpmn)
    app, ext = make_app(bpmn, database_url, clock)
    async with app.test_app():
        old = await ext.send_message("order_received", {"order_id": "OLD"})
    order = bpmn / "order.bpmn"
    text = order.read_text()
    assert 'paid_amount = payment.get("amount")' in text
    order.write_text(text.replace('paid_amount = payment.get("amount")', 'paid_amount = "new spec"'))
    app, ext = make_app(bpmn, database_url, clock)
    async with app.test_app():
        new = await ext.send_message("order_received", {"order_id": "NEW"})
        assert old.instance and new.instance
        assert old.instance.spec_version != new.instance.spec_version
        resumed = await ext.send_message("payment_received", {"order_id": "OLD", "amount": 5})
        assert resumed.task_data and resumed.task_data["paid_amount"] == 5
        fresh = await ext.send_message("payment_received", {"order_id": "NEW", "amount": 5})
        assert fresh.task_data and fresh.task_data["paid_amount"] == "new spec"
