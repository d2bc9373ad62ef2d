"""What the API reads of the extension's state: typed, so strict mypy checks every call the views make.

The extension keeps one such state per app in ``app.extensions["spiff_messages"]`` (``extension._AppState``); the
views reach it through :func:`state`, never through ``Any``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, cast

from quart import Request, current_app

from ..clock import Clock
from ..config import Settings
from ..runtime import Runtime

if TYPE_CHECKING:
    from ..extension import Reloaded

EXTENSION_KEY = "spiff_messages"
Authorize = Callable[[Request, str], bool | Awaitable[bool]]


class ApiState(Protocol):
    settings: Settings
    clock: Clock
    authorize: Authorize

    @property
    def runtime(self) -> Runtime: ...

    async def reload(self, following: int | None = None) -> Reloaded: ...


def state() -> ApiState:
    """This app's extension state."""
    return cast(ApiState, current_app.extensions[EXTENSION_KEY])
