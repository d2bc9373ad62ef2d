"""Problem+json answers. Every error a client can cause has its own ``error_code``."""

from __future__ import annotations

import logging
from typing import Any

from quart import Response
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from ..errors import SpiffMessagesError
from . import json_guard

log = logging.getLogger("quart_spiff_messages")


def problem(status: int, error_code: str, message: str, **extra: Any) -> Response:
    body = {"type": "about:blank", "title": error_code, "status": status, "detail": message,
            "error_code": error_code, "message": message, **extra}
    # the standard library's encoder (Quart's provider with Quart-Schema's hooks costs more per call), made safe:
    # an answer may echo a stored payload, and whatever that holds the answer stays JSON
    return Response(json_guard.dumps(body), status=status, content_type="application/problem+json")


async def on_refusal(exc: SpiffMessagesError) -> Response:
    response = problem(exc.status, exc.error_code, exc.message, **exc.extra)
    response.headers.update(exc.headers)
    return response


async def on_validation_error(exc: RequestSchemaValidationError) -> Response:
    return problem(400, "invalid_request", str(exc.validation_error))


async def on_http_error(exc: HTTPException) -> Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    return problem(exc.code or 500, code, exc.description or exc.name or "error")


async def on_unexpected(exc: Exception) -> Response:
    log.exception("unexpected error while handling a request")
    return problem(500, "internal_server_error", f"{type(exc).__name__}: the server could not handle the request")
