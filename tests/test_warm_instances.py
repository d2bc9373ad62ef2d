"""Warm instances (``SPIFF_MESSAGES_WARM_INSTANCES``): a worker reuses the workflow it kept only while the stored
state is the one it saved. Another worker's change, a change that failed and rolled back: the next change loads the
instance afresh and sees what is stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from quart_spiff_messages import SpiffMessages
from quart_spiff_messages.clock import Clock
from quart_spiff_messages.core import CompleteTask
from quart_spiff_messages.testing import invariant_violations

from .conftest import make_app

CASES = Path(__file__).parent / "bpmn_cases"
pytestmark = pytest.mark.bpmn(CASES / "human")


async def _json(resp: Any) -> Any:
    return await resp.get_json()


async def test_a_change_by_another_worker_is_seen(bpmn_dir: Path, database_url: str, clock: Clock) -> None:
    app_a, ext_a = make_app(bpmn_dir, database_url, clock)
    app_b, _ = make_app(bpmn_dir, database_url, clock)
    async with app_a.test_app(), app_b.test_app():
        a, b = app_a.test_client(), app_b.test_client()
        started = await _json(await a.post("/v1.0/messages/approval_requested", json={"order_id": "W-1"}))
        instance = started["process_instance"]["id"]
        assert len(ext_a.runtime.engine.warm) == 1  # A keeps the workflow it saved (waiting at "approve")
        done = await b.put(f"/v1.0/tasks/{instance}/approve", json={"approved": True})  # B moves it on
        assert done.status_code == 200, await done.get_data()
        # A's kept workflow still waits at "approve": reused, it would not catch the payment
        paid = await a.post("/v1.0/messages/approval_paid", json={"order_id": "W-1", "amount": 5})
        body = await _json(paid)
        assert paid.status_code == 200, body
        assert body["task_data"]["approved"] is True and body["task_data"]["payment"] == {"order_id": "W-1",
                                                                                        "amount": 5}
        assert ext_a.runtime.engine.warm.misses >= 1
        shipped = await a.put(f"/v1.0/tasks/{instance}/ship", json={})  # A's own last change: taken warm
        assert (await _json(shipped))["process_instance"]["status"] == "complete"
        assert ext_a.runtime.engine.warm.hits >= 1
    assert await invariant_violations(database_url) == []


async def test_a_change_that_rolled_back_is_not_kept(ext: SpiffMessages, client: Any) -> None:
    started = await _json(await client.post("/v1.0/messages/approval_requested", json={"order_id": "W-2"}))
    instance = started["process_instance"]["id"]
    engine = ext.runtime.engine

    def broken(tx: Any) -> None:  # the change is made, then the transaction fails before its commit
        ext.runtime.core.apply(tx, CompleteTask("approve", {"approved": True}), instance)
        raise RuntimeError("fails after the change")

    with pytest.raises(RuntimeError):
        await ext.runtime.store.run(broken)
    assert len(engine.warm) == 0  # the workflow it changed is gone with the rollback
    shown = await _json(await client.get(f"/v1.0/process-instances/{instance}"))
    assert [t["element_id"] for t in shown["process_instance"]["tasks"]] == ["approve"]
    done = await client.put(f"/v1.0/tasks/{instance}/approve", json={"approved": False})
    assert (await _json(done))["task_data"]["approved"] is False

