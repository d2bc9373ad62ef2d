"""The host's app and what it gave the extension, loaded by name for ``spiff-messages check --app module:app``.

A host registers script functions and service handlers with decorators at import time; only its app knows them.
Every way loading can fail is a :class:`HostAppError` whose text is one line that says what to fix.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .extension import SpiffMessages


class HostAppError(Exception):
    """The named app, module or mapping could not be loaded (the message is one line)."""


@dataclass(frozen=True)
class HostFunctions:
    bpmn_dir: str | None  # the app's SPIFF_MESSAGES_BPMN_DIR
    script_functions: frozenset[str]
    service_operators: frozenset[str]
    default_service_handler: bool


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _split(path: str, what: str) -> tuple[str, str]:
    module, _, name = path.partition(":")
    if not module or not name:
        raise HostAppError(f"{what} {path!r}: expected MODULE:NAME (e.g. shop:app)")
    return module, name


def load_object(path: str, what: str) -> Any:
    """The object ``MODULE:NAME`` names; a factory (``shop:create_app()``) is called without arguments."""
    module_name, name = _split(path, what)
    if os.getcwd() not in sys.path:  # as ``quart --app`` and ``python -m`` do: the working folder's modules
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the host's module may fail in any way: report it in one line
        raise HostAppError(f"{what} {path!r}: cannot import {module_name!r} ({_one_line(exc)})") from exc
    call = name.endswith("()")
    found = getattr(module, name.removesuffix("()"), None)
    if found is None:
        raise HostAppError(f"{what} {path!r}: module {module_name!r} has no {name.removesuffix('()')!r}")
    if call:
        try:
            found = found()
        except Exception as exc:
            raise HostAppError(f"{what} {path!r}: calling {name} failed ({_one_line(exc)})") from exc
    return found


def load_mapping(path: str, what: str) -> dict[str, Callable[..., Any]]:
    found = load_object(path, what)
    if not isinstance(found, Mapping):
        raise HostAppError(f"{what} {path!r} is a {type(found).__name__}, not a mapping of names to functions")
    return dict(found)


def host_functions(path: str) -> HostFunctions:
    """What the app at ``MODULE:NAME`` gave its :class:`~quart_spiff_messages.SpiffMessages`: functions and handlers
    passed to it, registered with its decorators or named by ``SPIFF_MESSAGES_SERVICE_HANDLERS``."""
    from quart import Quart

    from .api.state import EXTENSION_KEY

    app = load_object(path, "app")
    if not isinstance(app, Quart):
        raise HostAppError(f"app {path!r} is a {type(app).__name__}, not a Quart app")
    state = app.extensions.get(EXTENSION_KEY)
    ext: SpiffMessages | None = getattr(state, "extension", None)
    if ext is None:
        raise HostAppError(f"app {path!r} does not mount quart-spiff-messages (no SpiffMessages(app))")
    bpmn_dir = app.config.get("SPIFF_MESSAGES_BPMN_DIR")
    return HostFunctions(str(bpmn_dir) if bpmn_dir else None, frozenset(ext.script_functions),
                         frozenset(ext.service_handlers), ext.default_service_handler is not None)
