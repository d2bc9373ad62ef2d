"""The extension's OpenAPI document at ``{prefix}/openapi.json`` and its UI at ``{prefix}/ui``: Swagger UI served
from the ``swagger-ui-bundle`` package, so it works offline (air-gapped deployments load nothing from a CDN).

Both are open by default: they show only what the document says, and calls made from the UI carry the key the user
types in. With ``SPIFF_MESSAGES_OPENAPI_AUTHORIZE`` they ask what the API asks: the API key, then the host's
``authorize(request, "read_openapi")``.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from quart import Blueprint, Response, render_template
from quart_schema import hide

from .. import errors as e
from ..config import Settings
from . import errors, json_guard
from .access import Route, check_access, per_app
from .errors import problem
from .openapi import ExtensionDocument

ASSETS = Path(swagger_ui_bundle.swagger_ui_path)
# the files the page loads, and their media types (nothing else of the package is served)
SERVED = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
          "favicon-32x32.png": "image/png"}
_CACHE = {"Cache-Control": "public, max-age=86400"}


OPENAPI_ACTION = "read_openapi"


def create_ui_blueprint(settings: Settings, document: ExtensionDocument) -> Blueprint:
    bp = Blueprint("spiff_messages_ui", __name__, template_folder=str(Path(__file__).parent.parent / "templates"))
    base = f"{settings.url_prefix}/ui"
    openapi_path = f"{settings.url_prefix}/openapi.json"

    @hide
    async def openapi() -> Response:
        """The extension's OpenAPI document."""
        return Response(json_guard.dumps(document.schema()), content_type="application/json")

    @hide
    async def page() -> str:
        return await render_template("spiff_messages/api-ui.html", assets=f"{base}/assets",
                                     openapi_url=openapi_path)

    @hide
    async def asset(name: str) -> Response:
        if name not in SERVED:
            return problem(404, "route_not_found", f"the API UI has no file {name!r}")
        return Response((ASSETS / name).read_bytes(), content_type=SERVED[name], headers=_CACHE)

    for rule, endpoint, view in ((openapi_path, "openapi", openapi), (base, "page", page),
                                 (f"{base}/assets/<name>", "asset", asset)):
        declared = per_app(Route(rule, "GET", view, OPENAPI_ACTION))  # the action, for permissions-check and docs
        bp.add_url_rule(rule, endpoint=endpoint, view_func=hide(declared), methods=["GET"])
    if settings.openapi_authorize:
        @bp.before_request
        async def guard() -> None:
            await check_access(OPENAPI_ACTION)

    bp.register_error_handler(e.SpiffMessagesError, errors.on_refusal)
    return bp
