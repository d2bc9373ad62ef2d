"""Testing the diagrams of bpmn_fixtures/ as a modeler would: only the pytest plugin's fixtures, no server.

``spiff`` runs the BPMN folder in an app on a fresh SQLite database for each test. Sending a message or starting a
process returns an Outcome (``kind`` is started, delivered, buffered, not_accepted or process_error); the
``assert_*`` helpers read the instance back and, when they fail, print its status, its waits and its data.
"""

from __future__ import annotations

import uuid

import pytest

from quart_spiff_messages.pytest_plugin import BpmnHarness

pytestmark = [
    pytest.mark.spiff_bpmn("../bpmn_fixtures"),  # relative to this file's folder; or the spiff_messages_bpmn_dir ini
    pytest.mark.asyncio,  # needed in pytest-asyncio's strict mode, harmless in its auto mode
]


async def test_an_order_waits_for_its_payment_then_completes(spiff: BpmnHarness) -> None:
    order = await spiff.send_message("order_received", {"order_id": "A-1", "total": 42})
    assert order.kind == "started"  # the Message Start Event of order_process
    await spiff.assert_status(order, "waiting")
    await spiff.assert_waiting_for(order, "payment_received", correlation={"order_id": "A-1"})

    paid = await spiff.send_message("payment_received", {"order_id": "A-1", "amount": 42})
    assert paid.kind == "delivered"
    await spiff.assert_status(order, "complete")
    await spiff.assert_data(order, order_id="A-1", paid_amount=42)


async def test_an_unpaid_invoice_times_out_after_an_hour(spiff: BpmnHarness) -> None:
    invoice = await spiff.send_message("billing:invoice_issued", {"invoice_id": "I-1"})
    await spiff.assert_timer_waiting(invoice, "invoice_timeout")  # the gateway's PT1H branch
    spiff.clock.advance(3600)  # no real waiting: the harness fires what is due before it looks
    await spiff.assert_status(invoice, "complete")
    await spiff.assert_completed(invoice, "timeout_end")
    late = await spiff.send_message("billing:invoice_paid", {"invoice_id": "I-1"})
    assert late.kind == "not_accepted"  # the timeout won; nobody waits for this payment any more


async def test_a_payment_reaches_only_the_order_it_names(spiff: BpmnHarness) -> None:
    first = await spiff.send_message("order_received", {"order_id": "A-1"})
    second = await spiff.send_message("order_received", {"order_id": "B-2"})
    await spiff.send_message("payment_received", {"order_id": "B-2", "amount": 7})
    await spiff.assert_status(second, "complete")
    await spiff.assert_status(first, "waiting")

    stray = await spiff.send_message("payment_received", {"order_id": "nobody", "amount": 1})
    assert stray.kind == "not_accepted", stray.reason


async def test_a_process_started_directly_waits_for_its_confirmation(spiff: BpmnHarness) -> None:
    shipment = await spiff.start_process("shipping_process", {"shipment_id": "S-1"})
    view = await spiff.assert_waiting_for(shipment, "shipment_confirmed", correlation={"shipment_id": "S-1"})
    assert view.waiting_for_names == ["shipment_confirmed"]

    await spiff.send_message("shipment_confirmed", {"shipment_id": "S-1"})
    await spiff.assert_status(shipment, "complete")
    await spiff.assert_data(shipment, confirmation={"shipment_id": "S-1"})


async def test_a_payment_sent_early_waits_for_its_order_until_it_expires(spiff: BpmnHarness) -> None:
    early = await spiff.send_message("payment_received", {"order_id": "C-3", "amount": 5}, ttl=60,
                                     message_instance_uuid=str(uuid.uuid4()))
    assert early.kind == "buffered"
    order = await spiff.send_message("order_received", {"order_id": "C-3"})
    await spiff.assert_status(order, "complete")  # it took the buffered payment at once
    await spiff.assert_data(order, paid_amount=5)

    late = await spiff.send_message("payment_received", {"order_id": "D-4", "amount": 9}, ttl=60,
                                    message_instance_uuid=str(uuid.uuid4()))
    assert late.kind == "buffered"
    spiff.clock.advance(61)  # the app's clock: no sleeping
    order = await spiff.send_message("order_received", {"order_id": "D-4"})
    await spiff.assert_waiting_for(order, "payment_received")  # the payment had expired
