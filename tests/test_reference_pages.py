"""The reference pages generated from the code (docs/_ext/spiff_docs.py) cover all of it, and fail when they fall
behind (issue 23: the configuration page listed 2 of the constructor's settings and missed 6 actions)."""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from quart_spiff_messages import SpiffMessages
from quart_spiff_messages.errors import error_classes

from .doc_blocks import DOCS, ROOT


@pytest.fixture(scope="module")
def docs() -> Iterator[ModuleType]:
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import spiff_docs

        yield spiff_docs
    finally:
        sys.path.remove(str(DOCS / "_ext"))


@pytest.fixture(scope="module")
def app(docs: ModuleType) -> Any:
    return docs.build_app()


def test_every_setting_key_and_constructor_setting_is_on_the_configuration_page(docs: ModuleType) -> None:
    from quart_spiff_messages.config import PREFIX

    page = docs.configuration_page()
    for key in docs.keys_in_code(Path(inspect.getfile(SpiffMessages)).parent):
        assert f"`{PREFIX}{key}`" in page
    constructor = docs.constructor_page()
    for name in inspect.signature(SpiffMessages.__init__).parameters:
        if name not in ("self", "app"):
            assert f"| `{name}` |" in constructor


def test_the_pages_fail_when_they_fall_behind(docs: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    from sphinx.errors import ExtensionError

    keys = dict(docs.CONFIG_KEYS)
    keys.pop("OPENAPI_AUTHORIZE")
    monkeypatch.setattr(docs, "CONFIG_KEYS", keys)
    with pytest.raises(ExtensionError, match="SPIFF_MESSAGES_OPENAPI_AUTHORIZE"):
        docs.configuration_page()
    monkeypatch.undo()
    settings = dict(docs.CONSTRUCTOR_SETTINGS)
    settings.pop("identify")
    monkeypatch.setattr(docs, "CONSTRUCTOR_SETTINGS", settings)
    with pytest.raises(ExtensionError, match="identify"):
        docs.constructor_page()


def _declared(app: Any) -> set[str]:
    from quart_spiff_messages.api.access import action_of

    return {a for a in (action_of(app.view_functions[r.endpoint]) for r in app.url_map.iter_rules()) if a}


def test_every_action_a_route_declares_is_on_the_actions_page(docs: ModuleType, app: Any) -> None:
    declared = _declared(app)
    assert {"send_message", "read_metrics", "read_openapi", "retry_process_instance"} <= declared
    page = docs.actions_page(app)
    assert {m for m in re.findall(r"^\| `(\w+)` \|", page, flags=re.M)} == declared


def test_the_hand_written_lists_of_actions_name_them_all(app: Any) -> None:
    """The README and the constructor's docstring list the actions in prose: they name every one."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    docstring = inspect.getdoc(SpiffMessages.__init__) or ""
    for action in _declared(app):
        assert f"`{action}`" in readme, f"README.md does not name the action {action}"
        assert action in docstring, f"SpiffMessages.__init__'s docstring does not name the action {action}"


def test_every_error_code_is_on_the_error_codes_page(docs: ModuleType) -> None:
    page = docs.error_codes_page()
    for cls in error_classes():
        assert f"| {int(cls.status)} | `{cls.error_code}` |" in page
