"""What the API reads of the extension's state: typed, so strict mypy checks every call the views make.

The extension keeps one such state per app in ``app.extensions["spiff_messages"]`` (``extension._AppState``); the
views reach it through :func:`state`, never through ``Any``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from quart import Request, current_app

from ..clock import Clock
from ..config import Settings
from ..runtime import Runtime

if TYPE_CHECKING:
    from ..extension import Reloaded
    from ..services import Services

EXTENSION_KEY = "spiff_messages"
Authorize = Callable[[Request, str], Any]  # truthy allows (may be async); a mapping allows and says who calls
Identify = Callable[[Request], Any]  # what host functions are told about the caller (may be async)


class ApiState(Protocol):
    settings: Settings
    clock: Clock
    authorize: Authorize
    identify: Identify | None

    @property
    def services(self) -> Services | None: ...

    @property
    def runtime(self) -> Runtime: ...

    async def reload(self, following: int | None = None) -> Reloaded: ...


def state() -> ApiState:
    """This app's extension state."""
    return cast(ApiState, current_app.extensions[EXTENSION_KEY])


def services() -> Services:
    """This app's service calls, once it serves: what the API's and the console's task and retry actions call."""
    found = state().services
    if found is None:
        raise RuntimeError("quart-spiff-messages is not started: run inside the app (before_serving)")
    return found
