"""Who may call what: the API key, the host app's ``authorize(request, action)`` hook, and the action of each route.

Every route declares its action where it is declared (:func:`route`); the hook, the permissions check and the
documentation read it from there (:func:`action_of`), so renaming a view never changes what the host app sees.
"""

from __future__ import annotations

import functools
import hmac
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from quart import request

from .. import errors as e
from ..scripts import current_caller
from . import json_guard
from .state import state

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
ACTION_ATTRIBUTE = "_spiff_messages_action"
PATH_ERROR_ATTRIBUTE = "_spiff_messages_path_error"
# The console's pages are opened by a browser, which cannot add a header to a link: the key typed into the console's
# sign-in form comes back in this cookie (HttpOnly, SameSite=Strict), which only the console's routes read.
CONSOLE_COOKIE = "spiff_messages_console_key"


@dataclass(frozen=True)
class Route:
    """One operation: its path rule, method, view and the action the host app's hook is asked about (None: the
    route is open, as the Arena shell's status call and unknown paths are)."""

    rule: str
    method: str
    view: Callable[..., Awaitable[Any]]
    action: str | None
    path_error: tuple[type[e.SpiffMessagesError], str] | None = None  # how a path segment that is not UTF-8 fails


ROUTES: list[Route] = []


def route(method: str, rule: str, action: str | None, *,
          path_error: tuple[type[e.SpiffMessagesError], str] | None = None) -> Callable[[F], F]:
    """Declare an operation of the API blueprint with the action it is authorized as."""

    def register(view: F) -> F:
        ROUTES.append(Route(rule, method, view, action, path_error))
        return view

    return register


def per_app(found: Route) -> Callable[..., Awaitable[Any]]:
    """The view as one app registers it: a wrapper of its own, carrying the route's action, so per-app
    documentation (the TTL maximum) never leaks into another app's."""
    view = found.view

    @functools.wraps(view)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await view(*args, **kwargs)

    setattr(wrapper, ACTION_ATTRIBUTE, found.action)
    setattr(wrapper, PATH_ERROR_ATTRIBUTE, found.path_error)
    return wrapper


def action_of(view: Callable[..., Any] | None) -> str | None:
    """The action a registered view declared (None for an open route or a view that is not ours)."""
    action = getattr(view, ACTION_ATTRIBUTE, None)
    return action if isinstance(action, str) else None


def path_error_of(view: Callable[..., Any] | None) -> tuple[type[e.SpiffMessagesError], str]:
    found = getattr(view, PATH_ERROR_ATTRIBUTE, None)
    return found if found is not None else (e.InvalidRequest, "path")


def _presented_key(console: bool) -> str | None:
    key = request.headers.get("SpiffWorkflow-Api-Key")
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(CONSOLE_COOKIE) or None if console else None


def is_a_key(presented: str | None) -> bool:
    """Whether ``presented`` is one of the configured API keys (always, when none is configured)."""
    keys = state().settings.api_keys
    if not keys:
        return True
    return presented is not None and any(hmac.compare_digest(presented.encode(), k.encode()) for k in keys)


def key_is_valid(console: bool = False) -> bool:
    """Whether the request carries one of the configured API keys (always, when none is configured); ``console``:
    the console's sign-in cookie counts too."""
    return is_a_key(_presented_key(console))


async def _hook_answer(action: str) -> Any:
    allowed = state().authorize(request, action)
    if inspect.isawaitable(allowed):
        allowed = await allowed
    return allowed


async def hook_allows(action: str) -> bool:
    """What the host app's ``authorize(request, action)`` answers for this request."""
    return bool(await _hook_answer(action))


async def check_access(action: str, console: bool = False) -> None:
    """API key first (401), then the host app's ``authorize(request, action)`` hook (403); then who the caller is
    (the ``identify`` hook's answer, else the mapping ``authorize`` returned) for the host functions of the runs
    this request causes. ``console``: the console's sign-in cookie is a key too."""
    if not key_is_valid(console):
        raise e.Unauthorized("a valid API key is required (header SpiffWorkflow-Api-Key or Authorization: "
                             "Bearer)", headers={"WWW-Authenticate": "Bearer"})
    allowed = await _hook_answer(action)
    if not allowed:
        raise e.Forbidden(f"not allowed to {action.replace('_', ' ')}")
    identify = state().identify
    caller = identify(request) if identify is not None else None
    if inspect.isawaitable(caller):
        caller = await caller
    if caller is None and isinstance(allowed, Mapping):
        caller = allowed
    current_caller.set(caller)


def check_request_bytes(view: Callable[..., Any] | None) -> None:
    """Refuse a query parameter or path segment that is not valid UTF-8 or holds NUL, before any view reads it.

    A path segment that was not UTF-8 reaches the view as U+FFFD; it is refused as that route refuses a bad one.
    """
    found = json_guard.query_flaw(request.query_string)
    if found is not None:
        name, why = found
        raise e.InvalidQueryParameter(f"query parameter {name!r} {why}", field=name)
    if not json_guard.path_is_utf8(request.scope.get("raw_path")):
        error, field = path_error_of(view)
        raise error(f"{field} is not valid UTF-8 once percent-decoded", field=field)
