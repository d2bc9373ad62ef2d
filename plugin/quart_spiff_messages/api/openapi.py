"""The OpenAPI document as the API answers: error answers are problem+json, path names carry their rules.

Quart-Schema builds the document from the routes; this provider adjusts what it cannot know: the media type of
error answers, the answers every operation can give (401, 403), and the shape of names in paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from quart_schema import document_response
from quart_schema.openapi import OpenAPIProvider
from quart_schema.typing import Model
from werkzeug.routing import BaseConverter, Rule

from ..names import MAX_NAME_LENGTH
from . import schemas

_SEGMENT = r"[^:/\\\x00-\x1f\x7f-\x9f]+"
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "modified_message_name": {"type": "string", "maxLength": MAX_NAME_LENGTH,
                              "pattern": f"^{_SEGMENT}(:{_SEGMENT})*$",
                              "description": "Message name; colons stand for slashes (group:message)."},
    "modified_process_id": {"type": "string", "maxLength": MAX_NAME_LENGTH, "pattern": f"^{_SEGMENT}(:{_SEGMENT})*$",
                            "description": "Process id; colons stand for slashes (group:process_id)."},
    "modified_process_model_identifier": {"type": "string", "maxLength": MAX_NAME_LENGTH,
                                          "pattern": f"^{_SEGMENT}(:{_SEGMENT})*$",
                                          "description": "Process id; colons stand for slashes (group:process_id)."},
    "modified_process_group_id": {"type": "string", "maxLength": MAX_NAME_LENGTH,
                                  "pattern": f"^{_SEGMENT}(:{_SEGMENT})*$",
                                  "description": "Process group; colons stand for slashes (orders:eu)."},
    "message_instance_uuid": {"type": "string", "pattern": schemas.UUID_PATTERN},
    "instance_id": {"type": "integer", "minimum": 1, "maximum": schemas.MAX_INT},
}
F = TypeVar("F", bound=Callable[..., Any])


def problems(*statuses: int) -> Callable[[F], F]:
    """Document the problem+json answers a route gives (401 and 403 are added to every route)."""

    def document(func: F) -> F:
        for status in statuses:
            func = document_response(schemas.Problem, status)(func)
        return func

    return document


EVERY_OPERATION = {401: "A valid API key is required.", 403: "The host app's authorize hook refused the request."}


class ProblemAwareProvider(OpenAPIProvider):
    def build_response_object(self, model: type[Model], headers_model: type[Model] | None
                              ) -> tuple[dict[str, Any], dict[str, Any]]:
        response, definitions = super().build_response_object(model, headers_model)
        if model is schemas.Problem:
            response["content"] = {"application/problem+json": response["content"]["application/json"]}
            response["description"] = "An error: `error_code` names it."
        return response, definitions

    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        parameter = super().build_path_parameter(name, converter)
        if name in PATH_PARAMETERS:
            parameter["schema"] = dict(PATH_PARAMETERS[name])
        return parameter

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        problem, definitions = self.build_response_object(schemas.Problem, None)
        components.update(definitions)
        for operations in paths.values():
            for operation in operations.values():
                responses = operation["responses"]
                for status, description in EVERY_OPERATION.items():
                    responses.setdefault(status, {**problem, "description": description})
        return paths, components
