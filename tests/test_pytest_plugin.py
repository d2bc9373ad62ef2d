"""The pytest plugin (``quart_spiff_messages.pytest_plugin``), run by pytest on small projects written here."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

FIXTURES = Path(__file__).resolve().parent.parent / "bpmn_fixtures"


def project(pytester: pytest.Pytester, ini: str, **files: str) -> None:
    """An ini file (with ``ini`` added to its [pytest] section) and test files, as a modeler's project has."""
    pytester.makeini("[pytest]\nfilterwarnings = ignore::DeprecationWarning\n"
                     "asyncio_default_fixture_loop_scope = function\n" + textwrap.dedent(ini))
    for name, source in files.items():
        path = pytester.path / f"{name}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def test_an_example_test_passes_with_the_ini_option(pytester: pytest.Pytester) -> None:
    project(
        pytester,
        f"asyncio_mode = auto\nspiff_messages_bpmn_dir = {FIXTURES}\n",
        conftest="""
            import pytest

            @pytest.fixture
            def spiff_config():
                return {"SPIFF_MESSAGES_URL_PREFIX": "/api"}
        """,
        test_orders="""
            async def test_order_is_paid(spiff):
                order = await spiff.send_message("order_received", {"order_id": "A-1"})
                await spiff.assert_waiting_for(order, "payment_received", correlation={"order_id": "A-1"})
                paid = await spiff.send_message("payment_received", {"order_id": "A-1", "amount": 42})
                assert paid.kind == "delivered"
                view = await spiff.assert_status(order.instance.id, "complete")
                await spiff.assert_data(view, paid_amount=42)
                assert view.waiting_for == [] and view.error is None

            async def test_http_client_and_config(spiff_client, spiff_app, spiff):
                resp = await spiff_client.post("/api/messages/order_received", json={"order_id": "B"})
                assert resp.status_code == 200, await resp.get_data()
                instance_id = (await resp.get_json())["process_instance"]["id"]
                await spiff.assert_waiting_for(instance_id, "payment_received")
                assert spiff.app is spiff_app
        """,
    )
    run(pytester).assert_outcomes(passed=2)


def test_relative_ini_folder_and_a_marker_that_overrides_it_in_strict_mode(pytester: pytest.Pytester) -> None:
    (pytester.path / "diagrams").mkdir()
    shutil.copy(FIXTURES / "order.bpmn", pytester.path / "diagrams")
    (pytester.path / "tests" / "shipping").mkdir(parents=True)
    shutil.copy(FIXTURES / "shipping.bpmn", pytester.path / "tests" / "shipping")
    project(
        pytester,
        "asyncio_mode = strict\nspiff_messages_bpmn_dir = diagrams\n",
        **{"tests/test_folders": """
            import pytest

            pytestmark = pytest.mark.asyncio

            async def test_the_ini_folder(spiff, spiff_bpmn_dir, pytestconfig):
                assert spiff_bpmn_dir == pytestconfig.rootpath / "diagrams"
                assert (await spiff.send_message("order_received", {"order_id": "A"})).kind == "started"

            @pytest.mark.spiff_bpmn("shipping")
            async def test_the_marker_folder(spiff, spiff_bpmn_dir, pytestconfig):
                assert spiff_bpmn_dir == pytestconfig.rootpath / "tests" / "shipping"
                refused = await spiff.send_message("order_received", {"order_id": "A"})
                assert refused.kind == "not_accepted"
                await spiff.assert_status(await spiff.start_process("shipping_process", {"shipment_id": "S"}),
                                          "waiting")
        """},
    )
    run(pytester).assert_outcomes(passed=2)


def test_a_missing_bpmn_folder_says_how_to_choose_one(pytester: pytest.Pytester) -> None:
    project(
        pytester,
        "asyncio_mode = auto\n",
        test_missing="""
            import pytest

            async def test_no_folder(spiff):
                pass

            @pytest.mark.spiff_bpmn("no_such_folder")
            async def test_wrong_folder(spiff):
                pass
        """,
    )
    result = run(pytester)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([
        "*no BPMN folder for the quart-spiff-messages fixtures: choose the BPMN folder with the marker "
        "@pytest.mark.spiff_bpmn(path)*or the ini option spiff_messages_bpmn_dir = path*",
        f"*the BPMN folder {pytester.path / 'no_such_folder'} (from the marker "
        "@pytest.mark.spiff_bpmn('no_such_folder')) does not exist*",
    ])


def test_failing_helpers_show_what_the_instance_is_doing(pytester: pytest.Pytester) -> None:
    project(
        pytester,
        f"asyncio_mode = auto\nspiff_messages_bpmn_dir = {FIXTURES}\n",
        test_failing="""
            async def test_status(spiff):
                order = await spiff.send_message("order_received", {"order_id": "A-1"})
                await spiff.assert_status(order, "complete")

            async def test_waiting_for(spiff):
                order = await spiff.send_message("order_received", {"order_id": "A-1"})
                await spiff.assert_waiting_for(order, "payment_received", correlation={"order_id": "B-2"})

            async def test_data(spiff):
                order = await spiff.send_message("order_received", {"order_id": "A-1"})
                await spiff.assert_data(order, order_id="A-2", paid_amount=1)

            async def test_no_instance(spiff):
                refused = await spiff.send_message("payment_received", {"order_id": "A-1"})
                await spiff.assert_status(refused, "complete")
        """,
    )
    result = run(pytester)
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines([
        "*AssertionError: expected status 'complete', but process instance 1 of 'order_process': status 'waiting'",
        "*waiting for: payment_received (order_id='A-1') at wait_payment",
        "*AssertionError: expected the instance to wait for payment_received with order_id='B-2', but process "
        "instance 1 of 'order_process': status 'waiting'",
        "*AssertionError: the instance's data differs:",
        "*order_id: expected 'A-2', got 'A-1'",
        "*paid_amount: expected 1, missing",
        "*AssertionError: the message 'payment_received' reached no process instance (outcome 'not_accepted': "
        "No waiting process instance correlates*",
    ])
    result.stdout.no_fnmatch_line("*pytest_plugin.py*")  # the traceback ends at the test's line


def test_the_marker_is_registered(pytester: pytest.Pytester) -> None:
    project(pytester, "")
    result = run(pytester, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.spiff_bpmn(path):*"])
