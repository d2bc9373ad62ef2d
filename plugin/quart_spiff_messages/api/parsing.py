"""Reading a request: the JSON body and the query string, each validated once, by its schema.

A query model may name, per field, the error a bad value of that field is (``FIELD_ERRORS``): the send query's
TTL is ``invalid_time_to_live``, its key ``invalid_message_instance_uuid``; any other field is
``invalid_query_parameter`` with ``field`` naming it.
"""

from __future__ import annotations

import json as stdjson
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from quart import request

from .. import errors as e
from ..store import MessageFilter
from . import json_guard
from .schemas import MAX_INT, MessageListQuery
from .state import state

M = TypeVar("M", bound=BaseModel)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def json_object(what: str, root: str, required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object: 413 beyond the size limit, 400 ``invalid_payload`` for anything else.

    Non-finite numbers, lone surrogates and NUL are refused here, with ``field`` naming where (below ``root``):
    the store, the correlation index and every later answer could not hold them.
    """
    settings = state().settings
    limit = settings.max_payload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise e.PayloadTooLarge(f"the {what} is larger than {limit} bytes")
    body = await request.get_data()
    return json_object_from(body if isinstance(body, bytes) else body.encode(), what, root, required)


def json_object_from(raw: bytes, what: str, root: str, required: bool = True) -> dict[str, Any]:
    """:func:`json_object` for JSON that came another way (a form field of the console)."""
    settings = state().settings
    limit = settings.max_payload_bytes
    if len(raw) > limit:
        raise e.PayloadTooLarge(f"the {what} is larger than {limit} bytes")
    if not raw.strip():
        if required:
            raise e.InvalidPayload(f"the {what} must be a JSON object; the body is empty")
        return {}
    try:
        text = raw.decode("utf-8")
        value = stdjson.loads(text, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise e.InvalidPayload(f"the {what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise e.InvalidPayload(f"the {what} must be a JSON object, not {type(value).__name__}")
    depth, clean = json_guard.scan(value, json_guard.may_hold_bad_strings(text))
    if depth > settings.max_payload_depth:
        raise e.InvalidPayload(f"the {what} is nested deeper than {settings.max_payload_depth} levels")
    if not clean:
        field, why = json_guard.flaw(value, root) or (root, "is not clean")
        raise e.InvalidPayload(f"the {what} is refused: {field} {why}", field=field)
    return value


def query(model: type[M], *, blank_is_absent: bool = False) -> M:
    """The query string validated by ``model``; the first bad field is the answer. ``blank_is_absent``: a field
    sent empty counts as not sent (a page's filter form sends its empty fields)."""
    args = request.args.to_dict()
    if blank_is_absent:
        args = {k: v for k, v in args.items() if v.strip()}
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "query"
        error: type[e.SpiffMessagesError] = getattr(model, "FIELD_ERRORS", {}).get(field, e.InvalidQueryParameter)
        raise error(f"{field}: {first['msg']}", field=field) from exc


async def body(model: type[M], what: str) -> M:
    """An optional JSON object body validated by ``model`` (400 ``invalid_request`` naming the field)."""
    raw = await json_object(what, "", required=False)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise e.InvalidRequest(f"{field}: {first['msg']}", field=field) from exc


def instance_number(instance_id: str) -> int:
    """An instance id from the path; anything that cannot be one is an instance that does not exist."""
    number = int(instance_id) if instance_id.isascii() and instance_id.isdigit() else 0
    if not 1 <= number <= MAX_INT:
        raise e.InstanceNotFound(f"no process instance {instance_id!r}")
    return number


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def message_filter(q: MessageListQuery) -> MessageFilter:
    """The store's filter for a message list query (the API's list and the console's): ``status`` and
    ``message_type`` take comma-separated values."""
    return MessageFilter(name=q.name or None, statuses=_csv(q.status), message_types=_csv(q.message_type),
                         process_instance_id=q.process_instance_id,
                         process_model_identifier=q.process_model_identifier or None)
