"""quart-spiff-messages: send BPMN messages into SpiffWorkflow workflows from a Quart app.

The names below are imported on first use: the package's pytest plugin is loaded by every pytest run where the
package is installed, and importing Quart, SpiffWorkflow and SQLAlchemy up front would slow each of them down.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .catalog import Catalog, CatalogError
    from .config import ConfigError, Settings
    from .errors import SpiffMessagesError
    from .extension import SpiffMessages
    from .outcomes import Outcome
    from .scripts import ScriptContext
    from .services import ServiceCall

__all__ = ["Catalog", "CatalogError", "ConfigError", "Outcome", "ScriptContext", "ServiceCall", "Settings",
           "SpiffMessages", "SpiffMessagesError"]
_HOME = {"Catalog": "catalog", "CatalogError": "catalog", "ConfigError": "config", "Settings": "config",
         "SpiffMessages": "extension", "Outcome": "outcomes", "SpiffMessagesError": "errors",
         "ScriptContext": "scripts", "ServiceCall": "services"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value
