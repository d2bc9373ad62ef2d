"""The API's UI at ``{prefix}/ui``: Swagger UI served from the ``swagger-ui-bundle`` package, so it works offline
(air-gapped deployments load nothing from a CDN). Like ``openapi.json`` it needs no API key: it shows only what the
document says, and calls made from it carry the key the user types in.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from quart import Blueprint, Response, render_template
from quart_schema import hide

from ..config import Settings
from .errors import problem

ASSETS = Path(swagger_ui_bundle.swagger_ui_path)
# the files the page loads, and their media types (nothing else of the package is served)
SERVED = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
          "favicon-32x32.png": "image/png"}
_CACHE = {"Cache-Control": "public, max-age=86400"}


def create_ui_blueprint(settings: Settings) -> Blueprint:
    bp = Blueprint("spiff_messages_ui", __name__, template_folder=str(Path(__file__).parent.parent / "templates"))
    base = f"{settings.url_prefix}/ui"

    @hide
    async def page() -> str:
        return await render_template("spiff_messages/api-ui.html", assets=f"{base}/assets",
                                     openapi_url=f"{settings.url_prefix}/openapi.json")

    @hide
    async def asset(name: str) -> Response:
        if name not in SERVED:
            return problem(404, "route_not_found", f"the API UI has no file {name!r}")
        return Response((ASSETS / name).read_bytes(), content_type=SERVED[name], headers=_CACHE)

    bp.add_url_rule(base, endpoint="page", view_func=page, methods=["GET"])
    bp.add_url_rule(f"{base}/assets/<name>", endpoint="asset", view_func=asset, methods=["GET"])
    return bp
