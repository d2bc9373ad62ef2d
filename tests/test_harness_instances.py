"""``spiff.instances(...)``: the instances a conversation started, found by process (issue 23)."""

from __future__ import annotations

import pytest

from quart_spiff_messages.errors import ProcessNotFound
from quart_spiff_messages.pytest_plugin import BpmnHarness


async def test_the_instances_of_a_process_oldest_first_by_status(spiff: BpmnHarness) -> None:
    first = await spiff.start_process("quote_requester", {"request_id": "Q-1", "item": "widget"})
    second = await spiff.start_process("quote_requester", {"request_id": "Q-2", "item": "bolt"})
    providers = await spiff.instances("quote_provider")
    assert [p.data["request_id"] for p in providers] == ["Q-1", "Q-2"]  # each started by a requester's message
    assert [p.data["price"] for p in providers] == [42, 100]
    assert [r.id for r in await spiff.instances("quote_requester")] == [first.instance.id, second.instance.id]  # type: ignore[union-attr]
    order = await spiff.send_message("order_received", {"order_id": "A-1"})
    assert [v.id for v in await spiff.instances(status="waiting")] == [order.instance.id]  # type: ignore[union-attr]
    assert len(await spiff.instances()) == 5
    assert await spiff.instances("orders:payment_recovery") == []


async def test_a_process_named_without_its_group_is_told_the_group(spiff: BpmnHarness) -> None:
    with pytest.raises(ProcessNotFound, match=r"did you mean `orders:payment_recovery`\?"):
        await spiff.instances("payment_recovery")
