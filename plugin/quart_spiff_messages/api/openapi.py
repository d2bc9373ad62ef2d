"""The OpenAPI document as the API answers: error answers are problem+json, path names carry their rules.

Quart-Schema builds the document from the routes; this provider adjusts what it cannot know: the media type of
error answers, the answers every operation can give (401, 403), and the shape of names in paths. The extension
serves a document of its own (:class:`ExtensionDocument`): only its operations, under its title, each tagged with
the section of the HTTP reference it belongs to and summarized by the whole first sentence of its docstring, however
the host app uses Quart-Schema.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from quart import Quart
from quart_schema import QuartSchema, document_response
from quart_schema.openapi import Info, OpenAPIProvider, Tag
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


# -- the extension's own document ---------------------------------------------------------------------------------
# The sections of the HTTP reference, in order: (tag, what its operations are about). An operation's tag comes from
# the first segment of its path (SECTION_OF_SEGMENT), or a rule of its own (SECTION_OF_RULE).
SECTIONS: tuple[tuple[str, str], ...] = (
    ("Messages", "Send a message to the instance that waits for it (or start one, or keep it); list and cancel "
                 "messages."),
    ("Message models", "The catalog read from the BPMN folder: messages, their correlation properties, the "
                       "processes that start on them and the points that catch them."),
    ("Process instances", "Start a process with data, read an instance (its data and what it waits for), list "
                          "instances, retry a failed one."),
    ("Tasks", "Read and complete the human tasks of an instance; complete a waiting service task (callback)."),
    ("Events", "The durable feed of what happened, for hosts that must not miss an event."),
    ("Process models", "Spiff Arena's process models and groups, read from the catalog: what each process's page "
                       "and the groups' pages show."),
    ("Catalog", "Reload the BPMN folder on every worker."),
    ("Spiff Arena", "What Spiff Arena's frontend asks before it shows a page: the status and the permissions."),
)
SECTION_OF_SEGMENT = {"messages": "Messages", "message-models": "Message models",
                      "all-message-models": "Message models", "process-instances": "Process instances",
                      "tasks": "Tasks", "events": "Events", "catalog": "Catalog", "status": "Spiff Arena",
                      "permissions-check": "Spiff Arena", "onboarding": "Spiff Arena",
                      "process-models": "Process models", "process-groups": "Process models"}
SECTION_OF_RULE = {"/messages/<modified_message_name>/process-model": "Message models"}
DOCUMENT_TITLE = "quart-spiff-messages"
OUR_BLUEPRINTS = ("spiff_messages",)  # the API blueprint (metrics, probes and the UI are not operations)


def section_of(rule: str, prefix: str) -> str:
    """The HTTP reference's section (the operation's tag) of a route rule under ``prefix``."""
    rest = rule[len(prefix):] if prefix and rule.startswith(prefix) else rule
    if rest in SECTION_OF_RULE:
        return SECTION_OF_RULE[rest]
    segment = rest.strip("/").split("/", 1)[0]
    return SECTION_OF_SEGMENT.get(segment) or segment.replace("-", " ").replace("_", " ").capitalize() or "Root"


def summary_and_description(doc: str) -> tuple[str, str]:
    """The first sentence of a docstring whole (Quart-Schema cuts it at the first line, mid-sentence), and the
    rest of it as the description."""
    text = inspect.cleandoc(doc)
    first, _, rest = text.partition("\n\n")
    paragraph = " ".join(line.strip() for line in first.splitlines())
    match = re.match(r"(.+?[.!?])(\s+|$)", paragraph)
    summary = match.group(1) if match else paragraph
    remainder = paragraph[len(summary):].strip()
    description = "\n\n".join(part for part in (remainder, rest.strip()) if part)
    return summary, description


class ExtensionDocument(ProblemAwareProvider):
    """The extension's OpenAPI document: its own operations only, tagged by section, with whole summaries."""

    def __init__(self, app: Quart, prefix: str, description: str, version: str) -> None:
        settings = QuartSchema(openapi_path=None, redoc_ui_path=None, scalar_ui_path=None, swagger_ui_path=None,
                               info=Info(title=DOCUMENT_TITLE, version=version, description=description),
                               tags=[Tag(name=name, description=text) for name, text in SECTIONS])
        super().__init__(app, settings)
        self.prefix = prefix
        self._cached: dict[str, Any] | None = None

    def generate_rules(self) -> Iterable[Rule]:
        for rule in super().generate_rules():
            if rule.endpoint.rsplit(".", 1)[0] in OUR_BLUEPRINTS:
                yield rule

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        doc = inspect.getdoc(self._app.view_functions[rule.endpoint])
        for operations in paths.values():
            for operation in operations.values():
                if doc:
                    summary, description = summary_and_description(doc)
                    operation["summary"] = summary
                    operation["description"] = description
                operation["tags"] = [section_of(rule.rule, self.prefix)]
        return paths, components

    def schema(self) -> dict[str, Any]:
        """Built once: the routes do not change once the app serves."""
        if self._cached is None:
            self._cached = super().schema()
        return self._cached
