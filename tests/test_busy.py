"""A matching instance that another transaction holds is waited for, then answered 503: never started anew."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from quart_spiff_messages.store import db

from .conftest import Clock, make_app


async def test_busy_instance_gets_503_then_delivery(bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    app, ext = make_app(bpmn_dir, database_url, clock, SPIFF_MESSAGES_LOCK_TIMEOUT_SECONDS=0.5)
    async with app.test_app():
        client = app.test_client()
        watcher = await ext.start_process("orders:eu:eu_payment_watch", {"order_id": "O-1"})
        assert watcher.instance
        holder = db.create_engine(database_url)
        try:
            async with holder.begin() as conn:  # another request holds the instance (SQLite: the writer lock)
                if conn.dialect.name == "postgresql":
                    await conn.execute(text("SELECT id FROM spiff_process_instance WHERE id = :i FOR UPDATE"),
                                       {"i": watcher.instance.id})
                resp = await client.post("/v1.0/messages/orders:payment_failed", json={"order_id": "O-1"})
                body = await resp.get_json()
                assert resp.status_code == 503, body
                assert body["error_code"] == "instance_busy"
                assert resp.headers["Retry-After"] == "1"
        finally:
            await holder.dispose()
        listed = await (await client.get("/v1.0/process-instances")).get_json()
        assert listed["pagination"]["total"] == 1  # no payment_recovery was started instead
        assert (await (await client.get("/v1.0/messages")).get_json())["pagination"]["total"] == 0
        resp = await client.post("/v1.0/messages/orders:payment_failed", json={"order_id": "O-1"})
        assert resp.status_code == 200
        assert (await resp.get_json())["process_instance"]["id"] == watcher.instance.id
