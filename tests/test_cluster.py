"""One cluster, no single point: no lock every transaction takes, the feed gap-free without one, bounded waits.

A transaction held open on one instance (a stopped worker, a host cut off from the database) must stop only that
instance: other instances' messages, timers and tasks go on, the feed reader answers at once, and the held
transaction's events are not skipped when it commits late.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from quart_spiff_messages.store import db
from quart_spiff_messages.store import statements as sql

from .conftest import CASES, FIXTURES, Clock, make_app

OLD_FEED_LOCK = 7305526412  # the advisory lock every commit took before the feed carried transaction ids


def mixed_bpmn(tmp_path: Path) -> Path:
    """The order fixtures, a timer process and a human task process in one folder."""
    folder = tmp_path / "bpmn"
    shutil.copytree(FIXTURES, folder)
    shutil.copy(CASES / "timers" / "tick.bpmn", folder / "tick.bpmn")
    shutil.copy(CASES / "human" / "approval.bpmn", folder / "approval.bpmn")
    return folder


@contextlib.asynccontextmanager
async def held_change(database_url: str, instance_id: int) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """What a worker stopped in the middle of a change holds: the instance's row lock and an event written but not
    committed; plus, from another connection, every advisory lock the extension ever took for the whole cluster.
    Yields ``commit``: the stalled change commits late."""
    engine = db.create_engine(database_url, pool_size=2)
    try:
        async with engine.connect() as other:
            await other.execute(text(f"SELECT pg_advisory_lock({OLD_FEED_LOCK})"))
            async with engine.connect() as conn:
                tx = await conn.begin()
                await conn.execute(text("SELECT id FROM spiff_process_instance WHERE id = :i FOR UPDATE"),
                                   {"i": instance_id})
                await conn.execute(sql.INSERT_EVENT_PG, {"kind": "late_change", "process_instance_id": instance_id,
                                                         "message_instance_id": None, "data": {}, "created_at": 0.0})
                committed = False

                async def commit() -> None:
                    nonlocal committed
                    await tx.commit()
                    committed = True

                try:
                    yield commit
                finally:
                    if not committed:
                        await tx.rollback()
            await other.execute(text(f"SELECT pg_advisory_unlock({OLD_FEED_LOCK})"))
    finally:
        await engine.dispose()


async def _json(resp: Any) -> Any:
    return await resp.get_json()


async def test_a_change_held_open_on_one_instance_stops_no_other_instance_and_the_feed_skips_nothing(
        tmp_path: Path, database_url: str, clock: Clock) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: a held write transaction holds everyone (see the writer-turn tests)")
    app, ext = make_app(mixed_bpmn(tmp_path), database_url, clock, SPIFF_MESSAGES_LOCK_TIMEOUT_SECONDS=1,
                        SPIFF_MESSAGES_TIMER_INTERVAL_SECONDS=0)
    loop = asyncio.get_running_loop()
    async with app.test_app():
        client = app.test_client()
        held = await _json(await client.post("/v1.0/messages/order_received", json={"order_id": "HELD"}))
        held_id = held["process_instance"]["id"]
        tick = await _json(await client.post("/v1.0/process-instances/tick", json={}))
        approval = await _json(await client.post("/v1.0/messages/approval_requested", json={"order_id": "AP"}))
        before = await ext.events(0, 1000)
        cursor = before[-1].id
        assert cursor is not None

        async with held_change(database_url, held_id) as commit:
            started = loop.time()
            other = await client.post("/v1.0/messages/order_received", json={"order_id": "FREE"})
            assert other.status_code == 200, await _json(other)
            paid = await client.post("/v1.0/messages/payment_received", json={"order_id": "FREE", "amount": 1})
            assert paid.status_code == 200, await _json(paid)
            clock.advance(1)
            assert await ext.fire_timers() == 1
            done = await client.put(f"/v1.0/tasks/{approval['process_instance']['id']}/approve",
                                    json={"approved": True})
            assert done.status_code == 200, await _json(done)
            assert loop.time() - started < 1.0, "other instances waited for the held one"
            feed = await client.get("/v1.0/events", query_string={"after": cursor})
            assert feed.status_code == 200
            # the held change is older than every change since: nothing after it may be shown before it commits
            assert (await _json(feed))["results"] == []
            busy = await client.post("/v1.0/messages/payment_received", json={"order_id": "HELD", "amount": 1})
            assert busy.status_code == 503 and (await _json(busy))["error_code"] == "instance_busy"
            await commit()

        seen = [e for e in await ext.events(cursor, 1000)]
        assert seen[0].kind == "late_change" and seen[0].process_instance_id == held_id
        kinds = [(e.kind, e.process_instance_id) for e in seen[1:]]
        assert ("instance_completed", tick["process_instance"]["id"]) in kinds
        assert ("instance_completed", other_id := (await _json(paid))["process_instance"]["id"]) in kinds
        assert [k for k in kinds if k[1] == other_id] == [
            ("instance_started", other_id), ("message_delivered", other_id), ("instance_waiting", other_id),
            ("message_delivered", other_id), ("instance_completed", other_id)]
        ids = [e.id for e in seen]
        assert len(set(ids)) == len(ids)
        assert await ext.runtime.reads.invariant_violations() == []
        resp = await client.post("/v1.0/messages/payment_received", json={"order_id": "HELD", "amount": 1})
        assert resp.status_code == 200 and (await _json(resp))["process_instance"]["id"] == held_id


async def test_a_worker_holding_the_sqlite_writer_turn_makes_others_answer_503_within_the_lock_timeout(
        bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    """Another worker of the host stopped while it held the writer turn (the ``flock`` next to the database)."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the writer turn is SQLite's")
    app, ext = make_app(bpmn_dir, database_url, clock, SPIFF_MESSAGES_LOCK_TIMEOUT_SECONDS=0.5)
    loop = asyncio.get_running_loop()
    async with app.test_app():
        client = app.test_client()
        assert (await client.post("/v1.0/messages/order_received", json={"order_id": "T-1"})).status_code == 200
        turn = os.open(database_url.removeprefix("sqlite:///") + ".writer-turn", os.O_RDWR)
        try:
            fcntl.flock(turn, fcntl.LOCK_EX)
            for _ in range(2):  # the second waits behind the first's abandoned wait: bounded all the same
                started = loop.time()
                resp = await client.post("/v1.0/messages/payment_received", json={"order_id": "T-1", "amount": 1})
                assert resp.status_code == 503 and (await _json(resp))["error_code"] == "instance_busy"
                assert resp.headers["Retry-After"]
                assert loop.time() - started < 0.5 + 2
            listed = await _json(await client.get("/v1.0/process-instances"))  # reads go on
            assert listed["pagination"]["total"] == 1
        finally:
            fcntl.flock(turn, fcntl.LOCK_UN)
            os.close(turn)
        resp = await client.post("/v1.0/messages/payment_received", json={"order_id": "T-1", "amount": 1})
        assert resp.status_code == 200
        assert await ext.runtime.reads.invariant_violations() == []
