"""SQLite's group commit: transactions queued while the writer is busy are committed together, each still all or
nothing, none answered before the commit (on PostgreSQL every transaction commits on its own connection)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import event, select

from quart_spiff_messages.store import AlreadyExists, Store, Tx
from quart_spiff_messages.store.statements import MESSAGES

from .conftest import Clock


def _write(name: str, key: str | None = None, fail: bool = False):  # type: ignore[no-untyped-def]
    def work(tx: Tx) -> int:
        row = tx.add_message(name=name, scope="", message_type="send", status="ready", payload={"n": name},
                             message_instance_uuid=key)
        tx.record_event("message_buffered", None, row.id, name=name)
        tx.after_commit.append(lambda: committed.append(name))
        if fail:
            raise ValueError(f"{name} fails after writing")
        assert row.id is not None
        return row.id

    return work


committed: list[str] = []


async def test_queued_transactions_commit_together_each_all_or_nothing(tmp_path: Path, clock: Clock) -> None:
    store = Store(f"sqlite:///{tmp_path / 'group.db'}", clock)
    await store.upgrade()
    assert store._sqlite is not None
    begins: list[int] = []
    event.listen(store._sqlite.write_engine, "begin", lambda conn: begins.append(1))
    committed.clear()
    release = threading.Event()
    try:
        def hold(tx: Tx) -> None:  # holds the writer thread, inside a transaction
            tx.conn.execute(select(1))
            release.wait(10)

        blocker = asyncio.ensure_future(store.run(hold))
        await asyncio.sleep(0.1)
        key = str(uuid.uuid4())
        names = ["a", "b-fails", "c-duplicate", "d"]
        works = [_write("a", key), _write("b-fails", fail=True), _write("c-duplicate", key), _write("d")]
        queued = [asyncio.ensure_future(store.run(w)) for w in works]
        await asyncio.sleep(0.1)
        assert not any(f.done() for f in queued)  # nothing is answered while the writer is busy
        release.set()
        await blocker
        results = await asyncio.gather(*queued, return_exceptions=True)
    finally:
        release.set()

    assert isinstance(results[1], ValueError)
    assert isinstance(results[2], AlreadyExists)
    ids = {names[i]: results[i].value for i in (0, 3)}  # type: ignore[union-attr]
    assert len(begins) == 2  # the blocker's transaction, then one for the four queued behind it

    def read(tx: Tx) -> tuple[list[tuple[int, str]], list[str]]:
        rows = [(int(i), str(n)) for i, n in tx.conn.execute(select(MESSAGES.c.id, MESSAGES.c.name))]
        return rows, [e.kind for e in tx.events_after(0, 100)]

    rows, events = await store.read(read)
    # the failed ones left nothing (no row, no event, no after-commit hook); the others are whole
    assert sorted(rows) == sorted((i, n) for n, i in ids.items())
    assert events == ["message_buffered", "message_buffered"]
    assert sorted(committed) == ["a", "d"]
    await store.dispose()


async def test_a_lone_transaction_rolls_back_whole(tmp_path: Path, clock: Clock) -> None:
    store = Store(f"sqlite:///{tmp_path / 'lone.db'}", clock)
    await store.upgrade()
    committed.clear()
    with pytest.raises(ValueError):
        await store.run(_write("x", fail=True))
    count = await store.read(lambda tx: len(list(tx.conn.execute(select(MESSAGES.c.id)))))
    assert count == 0 and committed == []
    await store.dispose()
