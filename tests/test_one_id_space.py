"""Messages and waits share one id space (a waiting receiver keeps its id when it ends): migration 0011 moves the
waits a database already has into that space, in their order, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.engine import Connection

from quart_spiff_messages.store import db
from quart_spiff_messages.store import statements as sql
from quart_spiff_messages.store.sqlite import SqliteStore

from .test_migrations import downgrade_connection

BEFORE = "0011-1"  # the revision 0011 follows


def _seed(conn: Connection) -> int:
    """An instance with two waits whose index rows carry ids that two of three messages also have."""
    instance_id = int(conn.execute(insert(sql.INSTANCES).returning(sql.INSTANCES.c.id), {
        "process_key": "order_process", "process_id": "order_process", "process_group": "", "spec_version": "v",
        "status": "waiting", "state": "{}", "correlations": {}, "error": None, "created_at": 1.0,
        "updated_at": 1.0}).scalar_one())
    messages = [int(i) for i in conn.execute(insert(sql.MESSAGES).returning(
        sql.MESSAGES.c.id, sort_by_parameter_order=True), [{
            "name": "m", "scope": "", "message_type": "send", "status": "completed", "payload": {},
            "created_at": 1.0, "updated_at": 1.0} for _ in range(3)]).scalars()]
    conn.execute(insert(sql.SUBSCRIPTIONS), [{  # the ids of the first two messages, as both tables counted alike
        "id": messages[n], "process_instance_id": instance_id, "message_name": "m", "group_path": "/",
        "key_name": "", "values_digest": "", "values_json": "", "task_id": f"t{n + 1}", "element_id": f"e{n + 1}",
        "created_at": 1.0} for n in (0, 1)])
    return instance_id


def _check(conn: Connection, instance_id: int) -> None:
    messages = {int(i) for i in conn.execute(select(sql.MESSAGES.c.id)).scalars()}
    waits = conn.execute(select(sql.SUBSCRIPTIONS.c.id, sql.SUBSCRIPTIONS.c.task_id)
                         .where(sql.SUBSCRIPTIONS.c.process_instance_id == instance_id)
                         .order_by(sql.SUBSCRIPTIONS.c.id)).all()
    assert [t for _, t in waits] == ["t1", "t2"]  # their place in line is kept
    assert all(i > max(messages) for i, _ in waits)  # no wait shares an id with a message


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(f"sqlite:///{tmp_path / 'ids.db'}", lock_timeout_seconds=5.0)
    try:
        yield store
    finally:
        store.close()


def test_sqlite_waits_move_into_the_shared_space(sqlite_store: SqliteStore) -> None:
    sqlite_store.upgrade(BEFORE)
    with sqlite_store.write_engine.begin() as conn:
        instance_id = _seed(conn)
    sqlite_store.upgrade("head")
    with sqlite_store.write_engine.begin() as conn:
        _check(conn, instance_id)


async def test_postgres_waits_move_into_the_shared_space_and_draw_from_the_messages_sequence(
        postgres_url: str | None) -> None:
    if postgres_url is None:
        pytest.skip("SPIFF_MESSAGES_TEST_DATABASE is not a PostgreSQL URL")
    engine = db.create_engine(postgres_url)
    try:
        await db.upgrade(engine)
        async with engine.begin() as conn:
            await conn.run_sync(downgrade_connection, BEFORE)
            instance_id = await conn.run_sync(_seed)
        await db.upgrade(engine)
        async with engine.begin() as conn:
            await conn.run_sync(_check, instance_id)
            new_wait: Any = (await conn.execute(insert(sql.SUBSCRIPTIONS).returning(sql.SUBSCRIPTIONS.c.id), {
                "process_instance_id": instance_id, "message_name": "m", "group_path": "/", "key_name": "",
                "values_digest": "", "values_json": "", "task_id": "t3", "element_id": "e3",
                "created_at": 1.0})).scalar_one()
            new_message: Any = (await conn.execute(insert(sql.MESSAGES).returning(sql.MESSAGES.c.id), {
                "name": "m", "scope": "", "message_type": "send", "status": "completed", "created_at": 1.0,
                "updated_at": 1.0})).scalar_one()
            assert new_message == new_wait + 1  # one sequence for both
            await conn.execute(text("DELETE FROM spiff_process_instance WHERE id = :i"), {"i": instance_id})
            await conn.execute(text("DELETE FROM spiff_message_instance WHERE name = 'm'"))
    finally:
        await engine.dispose()
