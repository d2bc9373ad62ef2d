"""Problem+json answers. Every error a client can cause is a class of ``errors.py`` with its own ``error_code``."""

from __future__ import annotations

import logging
from typing import Any

from quart import Blueprint, Response
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from .. import errors as e
from . import json_guard

log = logging.getLogger("quart_spiff_messages")

# HTTP errors Quart raises itself, answered as the class of ``errors.py`` that means the same
_HTTP: dict[int, type[e.SpiffMessagesError]] = {404: e.RouteNotFound, 405: e.MethodNotAllowed, 413: e.PayloadTooLarge}


def problem(status: int, error_code: str, message: str, **extra: Any) -> Response:
    body = {"type": "about:blank", "title": error_code, "status": status, "detail": message,
            "error_code": error_code, "message": message, **extra}
    # the standard library's encoder (Quart's provider with Quart-Schema's hooks costs more per call), made safe:
    # an answer may echo a stored payload, and whatever that holds the answer stays JSON
    return Response(json_guard.dumps(body), status=status, content_type="application/problem+json")


async def on_refusal(exc: e.SpiffMessagesError) -> Response:
    response = problem(exc.status, exc.error_code, exc.message, **exc.extra)
    response.headers.update(exc.headers)
    return response


async def on_validation_error(exc: RequestSchemaValidationError) -> Response:
    return await on_refusal(e.InvalidRequest(str(exc.validation_error)))


async def on_http_error(exc: HTTPException) -> Response:
    known = _HTTP.get(exc.code or 0)
    if known is not None:
        return await on_refusal(known(exc.description or exc.name or "error"))
    code = (exc.name or "error").lower().replace(" ", "_")  # e.g. 408 request_timeout, from Quart itself
    return problem(exc.code or 500, code, exc.description or exc.name or "error")


async def on_unexpected(exc: Exception) -> Response:
    log.exception("unexpected error while handling a request")
    return await on_refusal(e.InternalError(f"{type(exc).__name__}: the server could not handle the request"))


def register_error_handlers(bp: Blueprint) -> None:
    """Answer every error of a blueprint's views as problem+json: the API's, the metrics' and the console's."""
    bp.register_error_handler(e.SpiffMessagesError, on_refusal)
    bp.register_error_handler(RequestSchemaValidationError, on_validation_error)
    bp.register_error_handler(HTTPException, on_http_error)
    bp.register_error_handler(Exception, on_unexpected)
