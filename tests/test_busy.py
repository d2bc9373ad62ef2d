"""A matching instance that another transaction holds is waited for, then answered 503: never started anew."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import text

from quart_spiff_messages.store import db

from .conftest import Clock, make_app


@contextlib.asynccontextmanager
async def holding(database_url: str, instance_id: int) -> AsyncIterator[None]:
    """Another request holds the instance (on SQLite: the database's write lock)."""
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.rollback()
            conn.close()
        return
    engine = db.create_engine(database_url)
    try:
        async with engine.begin() as pg:
            await pg.execute(text("SELECT id FROM spiff_process_instance WHERE id = :i FOR UPDATE"), {"i": instance_id})
            yield
    finally:
        await engine.dispose()


async def test_busy_instance_gets_503_then_delivery(bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    app, ext = make_app(bpmn_dir, database_url, clock, SPIFF_MESSAGES_LOCK_TIMEOUT_SECONDS=0.5)
    async with app.test_app():
        client = app.test_client()
        watcher = await ext.start_process("orders:eu:eu_payment_watch", {"order_id": "O-1"})
        assert watcher.instance
        async with holding(database_url, watcher.instance.id):
            resp = await client.post("/v1.0/messages/orders:payment_failed", json={"order_id": "O-1"})
            body = await resp.get_json()
            assert resp.status_code == 503, body
            assert body["error_code"] == "instance_busy"
            assert resp.headers["Retry-After"] == "1"
        listed = await (await client.get("/v1.0/process-instances")).get_json()
        assert listed["pagination"]["total"] == 1  # no payment_recovery was started instead
        rows = (await (await client.get("/v1.0/messages")).get_json())["results"]
        assert [(r["message_type"], r["status"]) for r in rows] == [("receive", "ready")]  # only the waiting watcher
        resp = await client.post("/v1.0/messages/orders:payment_failed", json={"order_id": "O-1"})
        assert resp.status_code == 200
        assert (await resp.get_json())["process_instance"]["id"] == watcher.instance.id
