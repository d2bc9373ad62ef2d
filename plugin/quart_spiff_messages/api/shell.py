"""What Spiff Arena's frontend asks before it shows a page: ``GET /status`` and ``POST /permissions-check``; and
the answer to a path or method the API does not have (problem+json, never an HTML page).

The permissions check answers with the host app's ``authorize(request, action)`` hook, asked about the action of
each URI by its Arena meaning (:mod:`.arena_paths`: Arena's paths we serve, and those we do not, answered false),
else the action the route of ours at that URI declares: what it says is allowed is what a request would be allowed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from quart import Blueprint, Response, current_app, request
from quart_schema import document_request, document_response, hide
from werkzeug.exceptions import MethodNotAllowed as RoutingMethodNotAllowed
from werkzeug.exceptions import NotFound as RoutingNotFound
from werkzeug.routing import RequestRedirect

from .. import errors as e
from . import json_guard, schemas
from .access import Route, action_of, hook_allows, key_is_valid
from .arena_paths import arena_action
from .openapi import problems
from .parsing import body
from .state import state

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _ok(payload: object) -> Response:
    return Response(json_guard.dumps(payload), content_type="application/json")


@document_response(schemas.StatusOut, 200)
async def status() -> Response:
    """Spiff Arena's shell asks this first: the backend is up, and whether these credentials may use it."""
    allowed = key_is_valid() and await hook_allows("list_messages")
    return _ok({"ok": True, "can_access_frontend": allowed})


@document_request(schemas.PermissionsCheckIn)
@document_response(schemas.PermissionsCheckOut, 200)
@problems(400, 413)
async def permissions_check() -> Response:
    """For each URI and method, whether this request's credentials may call it: the action of that path by its
    Spiff Arena meaning (false for Arena's paths this API does not serve), else of the route there, asked of the
    host app's `authorize` hook (false for a path or method the API does not have)."""
    wanted = await body(schemas.PermissionsCheckIn, "permissions check")
    results: dict[str, dict[str, bool]] = {}
    for uri, methods in wanted.requests_to_check.items():
        results[uri] = {}
        for method in methods:
            action = _action_at(uri, method.upper())
            results[uri][method] = action is not None and await hook_allows(action)
    return _ok({"results": results})


def _action_at(uri: str, method: str) -> str | None:
    """The action of ``uri`` for ``method``: by Arena's meaning when it is one of Arena's paths, else the one the
    API's route there declares (the URL prefix may be left out)."""
    path = urlsplit(uri).path or "/"
    prefix = state().settings.url_prefix
    below = path[len(prefix):] if prefix and (path == prefix or path.startswith(prefix + "/")) else path
    decided, action = arena_action(below or "/", method)
    if decided:
        return action
    adapter = current_app.url_map.bind("localhost")
    for candidate in dict.fromkeys([path, prefix + path if not path.startswith(prefix + "/") else path]):
        try:
            endpoint, _ = adapter.match(candidate, method=method)
        except (RoutingNotFound, RoutingMethodNotAllowed, RequestRedirect):
            continue
        action = action_of(current_app.view_functions.get(endpoint))
        if action is not None:
            return action
    return None


ROUTES = [
    Route("/status", "GET", status, None),
    Route("/permissions-check", "POST", permissions_check, "check_permissions"),
]


@hide
async def unknown_route(rest: str) -> Response:
    """A path under the prefix that is no operation (404), or an operation asked with another method (405)."""
    adapter = current_app.url_map.bind("localhost")
    allowed = []
    for method in METHODS:
        try:
            endpoint, _ = adapter.match(request.path, method=method)
        except (RoutingNotFound, RoutingMethodNotAllowed, RequestRedirect):
            continue
        if not endpoint.endswith(".unknown_route"):
            allowed.append(method)
    if allowed:
        raise e.MethodNotAllowed(f"{request.method} is not allowed on {request.path}; it takes "
                                 f"{', '.join(allowed)}", headers={"Allow": ", ".join(allowed)}, allowed=allowed)
    raise e.RouteNotFound(f"the API has no operation at {request.path}")


def add_unknown_routes(bp: Blueprint) -> None:
    """Catch what no route of the API takes, below the prefix, so even that answer is problem+json."""
    bp.add_url_rule("/<path:rest>", endpoint="unknown_route", view_func=unknown_route, methods=list(METHODS))
