"""Pages generated from the code at build time, so the reference cannot drift from it.

- ``_generated/http-api.md``: every operation and schema of the OpenAPI document that Quart-Schema builds from
  the routes (the app is configured, never started: no database is opened, no network is used);
  ``_generated/extra/openapi.json`` is the document itself, copied to the site's root.
- ``_generated/error-codes.md``: every ``error_code`` the API answers with, read from ``quart_spiff_messages.errors``
  and the API's source.
- ``_generated/configuration.md``: every ``SPIFF_MESSAGES_*`` key with its type, default and meaning. Defaults
  come from ``Settings`` and the command's options; meanings come from ``CONFIG_KEYS`` below. The build fails
  when the code reads a key (or ``Settings`` has a field) that ``CONFIG_KEYS`` does not describe, or
  ``CONFIG_KEYS`` describes one the code no longer reads.
- ``_generated/constructor.md``: the settings ``SpiffMessages(app, ...)`` takes besides ``app.config``, checked
  against its signature (``CONSTRUCTOR_SETTINGS``).
- ``_generated/actions.md``: every action of the ``authorize`` hook with the operations that ask for it, read from
  the routes' declarations (``api/access.py``).

The ``_generated/`` folder is rewritten by every build and is not kept in git.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError

DOCS = Path(__file__).resolve().parent.parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"
EXTRA = GENERATED / "extra"

# -- configuration keys ------------------------------------------------------------------------------------------
# key (without SPIFF_MESSAGES_) -> (where it is read, type, meaning). "app": app.config, and the environment of
# `spiff-messages serve`; "serve": an option of `spiff-messages serve` only (environment or command line).
CONFIG_KEYS: dict[str, tuple[str, str, str]] = {
    "BPMN_DIR": ("app", "path",
                 "Folder of `*.bpmn` files to serve. Each sub-folder is a process group (`orders/eu`); the folder "
                 "itself is the group `\"\"`. A file that does not load stops start-up."),
    "DATABASE_URL": ("app", "SQLAlchemy URL",
                     "`sqlite:///file.db` (standard `sqlite3` driver, one writer thread per worker) or "
                     "`postgresql://user:password@host/db` (driven by asyncpg). The schema is migrated at start-up."),
    "URL_PREFIX": ("app", "string",
                   "Where the API blueprint is mounted. `\"\"` mounts it at the root."),
    "MAX_TTL_SECONDS": ("app", "integer ≥ 0",
                        "Largest `time_to_live_in_seconds` a send accepts; above it the answer is "
                        "`400 invalid_time_to_live`."),
    "OPENAPI": ("app", "boolean",
                "Serve the extension's own OpenAPI document at `{prefix}/openapi.json` and its UI at `{prefix}/ui`: "
                "only the extension's operations, titled `quart-spiff-messages`, tagged by the sections of the HTTP "
                "reference. A host app that uses Quart-Schema keeps its own document at its own path (which lists "
                "the extension's routes too). `0`, `false`, `no` and `off` switch both off."),
    "OPENAPI_AUTHORIZE": ("app", "boolean",
                          "The OpenAPI document and its UI ask what the API asks: the API key (when one is set), "
                          "then `authorize(request, \"read_openapi\")`. Off: anyone may read them (they show only "
                          "what the document says)."),
    "RETENTION_DAYS": ("app", "number ≥ 0",
                       "Purge finished messages (`completed`, `cancelled`, `not_accepted`, `failed`) older than "
                       "this many days. Unset: keep them forever."),
    "SWEEP_INTERVAL_SECONDS": ("app", "number ≥ 0",
                               "How often the background task marks expired buffered messages `cancelled` and "
                               "purges old ones."),
    "TIMER_INTERVAL_SECONDS": ("app", "number ≥ 0",
                               "The longest the work loop (timers and service calls) sleeps: it wakes at each nearest "
                               "due time anyway, and at once when this worker writes a nearer one; this bounds how "
                               "late a timer or a service call another worker wrote is taken up. `0`: this worker "
                               "fires no timers (an overdue timer still fires before a message reaches its instance) "
                               "and wakes at least every second for service calls."),
    "ROUTE_QUEUED": ("app", "boolean",
                     "This worker routes the messages sent with `execution_mode=asynchronous` (its own at once, "
                     "other workers' within `SPIFF_MESSAGES_TIMER_INTERVAL_SECONDS`). `0`: it only accepts them; "
                     "another worker or host routes them. See {doc}`/explanation/asynchronous`."),
    "QUEUE_BATCH": ("app", "integer ≥ 1",
                    "Queued messages routed per transaction (each in a savepoint of its own) once no accept is "
                    "under way; while accepts keep coming a round is one message, so none waits long for SQLite's "
                    "writer."),
    "WARM_INSTANCES": ("app", "integer ≥ 0",
                       "How many deserialized workflows a worker keeps between their transactions. The next change "
                       "of an instance takes its workflow back only when the state it reads under the row lock is "
                       "the exact text this worker saved (another worker's change, or one that rolled back, is "
                       "loaded afresh). `0`: every change loads the instance from its state."),
    "LOCK_TIMEOUT_SECONDS": ("app", "number ≥ 0",
                             "How long a message waits for a busy instance (PostgreSQL's row lock; SQLite's writer "
                             "turn across the workers of a host) before `503 instance_busy` with `Retry-After`. On "
                             "PostgreSQL it also sets the statement bound: a statement unanswered after this + 2 s "
                             "(a silent link) is given up (see the PostgreSQL how-to)."),
    "DATABASE_RETRY_SECONDS": ("app", "number ≥ 0",
                               "How long a transaction that lost the database (a dropped or refused connection, a "
                               "server shutting down, a link gone silent, a read-only SQLite file) is run again on a "
                               "fresh connection "
                               "before the client gets `503 database_unavailable` with `Retry-After`. A full disk "
                               "is `507 insufficient_storage` at once."),
    "API_KEY": ("app", "string, or strings separated by commas",
                "When set, every request needs `SpiffWorkflow-Api-Key: <key>` or `Authorization: Bearer <key>` "
                "with one of these keys, else `401 unauthorized`. In `app.config` a list or tuple works too. The "
                "operator console's pages lead to a sign-in form that keeps the key in an HttpOnly cookie."),
    "MAX_PAYLOAD_BYTES": ("app", "integer ≥ 0",
                          "Larger request bodies are refused with `413 payload_too_large`."),
    "MAX_PAYLOAD_DEPTH": ("app", "integer ≥ 0",
                          "JSON nested deeper is refused with `400 invalid_payload`."),
    "METRICS_PATH": ("app", "string",
                     "Path of the Prometheus metrics endpoint, outside the API prefix. `\"\"` removes the "
                     "endpoint."),
    "CORRELATE_FROM_DATA": ("app", "boolean",
                            "A catch whose workflow has no value yet for its correlation key takes the expected "
                            "value from the instance's data (its retrieval expression evaluated on the data when it "
                            "comes to wait), so an instance started over the API with `{\"order_id\": \"B-11\"}` "
                            "takes only B-11's messages. Off: such a catch accepts any message of its name, as "
                            "SpiffWorkflow does. See {doc}`/explanation/matching`."),
    "BODY_TIMEOUT_SECONDS": ("app", "number > 0",
                             "Sets the app's `BODY_TIMEOUT` (Quart's, app-wide): a request whose body has not "
                             "arrived in full after this long is answered `408`. Unset: the app keeps its own "
                             "(Quart's default is 60 s). `spiff-messages serve` uses 30 s: a body of "
                             "`SPIFF_MESSAGES_MAX_PAYLOAD_BYTES` (1 MiB) takes a fraction of that even on a slow "
                             "link, and a client that dribbles its body holds a connection for half as long."),
    "LIVENESS_PATH": ("app", "string",
                      "Liveness probe, outside the API prefix and without API key: `200 {\"status\": \"ok\"}` "
                      "as long as the process answers; it never touches the database. `\"\"` removes it. See "
                      "{ref}`health-probes`."),
    "READINESS_PATH": ("app", "string",
                       "Readiness probe, outside the API prefix and without API key: `200 {\"status\": "
                       "\"ok\"}` when the catalog is loaded and the database answers a one-row read, else "
                       "`503 database_unavailable` with `Retry-After`. `\"\"` removes it. See "
                       "{ref}`health-probes`."),
    "READINESS_TIMEOUT_SECONDS": ("app", "number > 0",
                                  "How long the readiness probe waits for the database before it answers `503`. "
                                  "Keep it below the probe's own timeout."),
    "SERVICE_ATTEMPTS": ("app", "integer ≥ 1",
                         "How many times a service task's handler is called when it raises, before the instance "
                         "stops in `error` with an incident naming the operator, the attempts and the last error."),
    "SERVICE_BACKOFF_SECONDS": ("app", "number ≥ 0",
                                "Pause before a handler's second call; doubled before each later one."),
    "SERVICE_LEASE_SECONDS": ("app", "number > 0",
                              "How long a worker holds a service call it claimed; renewed every third of it while "
                              "the handler runs. A worker that dies stops renewing it: once it runs out, another "
                              "worker calls the handler again (at least once)."),
    "SERVICE_HANDLERS": ("app", "module:name",
                         "A mapping of service operator ids to handlers, imported at start-up (how "
                         "`spiff-messages serve` and `check` learn them); the key `*` handles every other operator. "
                         "Handlers given to `SpiffMessages(...)` win."),
    "CORS_ORIGINS": ("app", "origins separated by commas, or `*`",
                     "Browser pages of these origins (`https://arena.example.com`) may call the API from another "
                     "origin (CORS, with credentials unless `*`). A preflight `OPTIONS` is answered without an API "
                     "key. Unset: no CORS headers at all, as before."),
    "CORS_HEADERS": ("app", "header names separated by commas",
                     "Request headers a page of `SPIFF_MESSAGES_CORS_ORIGINS` may send (a preflight's "
                     "`Access-Control-Request-Headers` is answered with those of them it asks for). The default "
                     "lists what Spiff Arena's frontend sends (`Authorization`, `Content-Type`, "
                     "`SpiffWorkflow-Authentication-Identifier`, `Accept`) and `SpiffWorkflow-Api-Key`."),
    "HOST": ("serve", "string", "Address `spiff-messages serve` binds."),
    "PORT": ("serve", "integer", "Port `spiff-messages serve` binds."),
    "WORKERS": ("serve", "integer ≥ 1",
                "Worker processes of `spiff-messages serve` (Hypercorn). With more than one, see "
                "{doc}`/howto/postgresql`."),
    "BACKLOG": ("serve", "integer ≥ 1",
                "Connections the kernel queues until a worker accepts them (Hypercorn's `backlog`; Hypercorn's "
                "own default of 100 left 877 of 2,000 idle connections unaccepted). Linux caps it at "
                "`net.core.somaxconn` (4096 since kernel 5.4)."),
    "KEEP_ALIVE_TIMEOUT_SECONDS": ("serve", "number > 0",
                                   "Close a connection after it has been idle this long (Hypercorn's "
                                   "`keep_alive_timeout`, same default). Behind a load balancer that reuses "
                                   "connections, set it above the balancer's idle timeout, so the server never "
                                   "closes a connection the balancer is sending a request on."),
}

# Settings fields whose name is not the key's, lower-cased.
_FIELD_OF_KEY = {"API_KEY": "api_keys"}

_KEY_PATTERNS = (
    re.compile(r'PREFIX\s*\+\s*"([A-Z][A-Z0-9_]*)"'),
    re.compile(r'\b_option\(\s*"([A-Z][A-Z0-9_]*)"'),
    re.compile(r"\bSPIFF_MESSAGES_([A-Z][A-Z0-9_]*[A-Z0-9])"),
)
_CONFIG_ONLY_PATTERNS = (  # in config.py, the helpers that read a key by its short name
    re.compile(r'\bget\(\s*"([A-Z][A-Z0-9_]*)"'),
    re.compile(r'\b_number\(\s*"([A-Z][A-Z0-9_]*)"'),
)


def keys_in_code(package: Path) -> set[str]:
    """Every SPIFF_MESSAGES_* key the package's source reads or names."""
    found: set[str] = set()
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern in _KEY_PATTERNS:
            found.update(pattern.findall(text))
        if path.name == "config.py" and path.parent == package:
            for pattern in _CONFIG_ONLY_PATTERNS:
                found.update(pattern.findall(text))
    return found


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value == "":
        return '`""`'
    return f"`{value}`"


def _setting_defaults() -> dict[str, str]:
    from quart_spiff_messages.config import Settings

    out: dict[str, str] = {}
    for f in dataclasses.fields(Settings):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            out[f.name] = "(required)"
        else:
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            out[f.name] = "(none)" if value is None or value == () else _literal(value)
    out["retention_days"] = "(keep forever)" if out.get("retention_days") == "(none)" else out["retention_days"]
    return out


def _serve_defaults() -> dict[str, str]:
    """Defaults of the options of `spiff-messages serve`, by the key of their environment variable."""
    from quart_spiff_messages.cli import main
    from quart_spiff_messages.config import PREFIX

    out: dict[str, str] = {}
    serve = main.commands["serve"]  # type: ignore[attr-defined]
    for param in serve.params:
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str) and envvar.startswith(PREFIX):
            out[envvar[len(PREFIX):]] = "(required)" if param.required else _literal(param.default)
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def configuration_page() -> str:
    import quart_spiff_messages
    from quart_spiff_messages.config import Settings

    package = Path(quart_spiff_messages.__file__).resolve().parent
    in_code = keys_in_code(package)
    undocumented = sorted(in_code - set(CONFIG_KEYS))
    stale = sorted(set(CONFIG_KEYS) - in_code)
    if undocumented or stale:
        problems = []
        if undocumented:
            problems.append("read by the code but not described in docs/_ext/spiff_docs.py CONFIG_KEYS: "
                            + ", ".join("SPIFF_MESSAGES_" + k for k in undocumented))
        if stale:
            problems.append("described in CONFIG_KEYS but no longer in the code: "
                            + ", ".join("SPIFF_MESSAGES_" + k for k in stale))
        raise ExtensionError("configuration reference out of date: " + "; ".join(problems))

    fields = {f.name for f in dataclasses.fields(Settings)}
    keyed = {_FIELD_OF_KEY.get(key, key.lower()) for key, (where, _, _) in CONFIG_KEYS.items() if where == "app"}
    if fields - keyed:
        raise ExtensionError("configuration reference out of date: Settings fields no SPIFF_MESSAGES_* key in "
                             f"CONFIG_KEYS describes: {sorted(fields - keyed)}")
    settings_defaults = _setting_defaults()
    serve_defaults = _serve_defaults()
    app_rows, serve_rows = [], []
    for key, (where, kind, meaning) in CONFIG_KEYS.items():
        if where == "app":
            field = _FIELD_OF_KEY.get(key, key.lower())
            if field not in fields:
                raise ExtensionError(f"SPIFF_MESSAGES_{key}: no Settings field {field!r} to read its default from")
            default = settings_defaults[field]
            if key in serve_defaults and serve_defaults[key] != default:
                default += f" (`spiff-messages serve`: {serve_defaults[key]})"
            app_rows.append(f"| `SPIFF_MESSAGES_{key}` | {_cell(kind)} | {_cell(default)} | {_cell(meaning)} |")
        else:
            if key not in serve_defaults:
                raise ExtensionError(f"SPIFF_MESSAGES_{key}: not an option of spiff-messages serve")
            serve_rows.append(f"| `SPIFF_MESSAGES_{key}` | {_cell(kind)} | {_cell(serve_defaults[key])} "
                              f"| {_cell(meaning)} |")
    header = ["| key | type | default | meaning |", "|---|---|---|---|"]
    return "\n".join([
        "(config-app-keys)=",
        "## Keys of `app.config`",
        "",
        "Read by `SpiffMessages(app)` / `init_app(app)` from `app.config`, and by `spiff-messages serve` from "
        "the environment. An empty string counts as unset.",
        "",
        *header, *app_rows,
        "",
        "(config-serve-keys)=",
        "## Keys of `spiff-messages serve` only",
        "",
        "Options of the command; each also reads its environment variable.",
        "",
        *header, *serve_rows,
        "",
    ])


# -- the settings SpiffMessages(...) takes besides app.config -------------------------------------------------------
# parameter -> (type, meaning). The build fails when the constructor takes one this does not describe, or this
# describes one it no longer takes.
CONSTRUCTOR_SETTINGS: dict[str, tuple[str, str]] = {
    "clock": ("function returning seconds since the epoch",
              "What is due or expired is decided by this clock (default `time.time`). Tests pass a `ManualClock` "
              "they move, to expire buffered messages and fire timers without sleeping."),
    "authorize": ("`(request, action) -> bool` (or a mapping), plain or `async`",
                  "Called for every API request after the API key check; a false answer is `403 forbidden`. The "
                  "actions are listed below. A mapping it returns is the caller host functions see, unless "
                  "`identify` names one."),
    "identify": ("`(request) -> Any`, plain or `async`",
                 "Who the caller of a request is: host functions of the runs it causes see it as "
                 "`context.caller`. The Python API's `caller=` does the same for calls from your code."),
    "script_functions": ("mapping of names to functions",
                         "Functions BPMN scripts and expressions can call (also `@messages.script_function`); one "
                         "with a `context` parameter gets a `ScriptContext`."),
    "service_handlers": ("mapping of operator ids to handlers",
                         "`async def handler(call: ServiceCall) -> result` does the work of the service tasks of "
                         "that operator, after the commit, retried with backoff (also `@messages.service_handler`). "
                         "They win over `SPIFF_MESSAGES_SERVICE_HANDLERS`."),
    "default_service_handler": ("handler",
                                "Takes every operator without a handler of its own. Without it such a service task "
                                "waits for `PUT /v1.0/tasks/{instance}/{task}/callback`."),
}


def constructor_page() -> str:
    """The table of ``SpiffMessages(app, ...)``'s keyword settings, checked against its signature."""
    from quart_spiff_messages import SpiffMessages

    parameters = {name: p for name, p in inspect.signature(SpiffMessages.__init__).parameters.items()
                  if name not in ("self", "app")}
    undocumented = sorted(set(parameters) - set(CONSTRUCTOR_SETTINGS))
    stale = sorted(set(CONSTRUCTOR_SETTINGS) - set(parameters))
    if undocumented or stale:
        raise ExtensionError(f"SpiffMessages(...) reference out of date: parameters not described in "
                             f"CONSTRUCTOR_SETTINGS: {undocumented}; described but gone: {stale}")
    rows = ["| setting | type | default | meaning |", "|---|---|---|---|"]
    for name, (kind, meaning) in CONSTRUCTOR_SETTINGS.items():
        default = parameters[name].default
        shown = "(none)" if default is None or default is inspect.Parameter.empty else _literal(default)
        rows.append(f"| `{name}` | {_cell(kind)} | {shown} | {_cell(meaning)} |")
    return "\n".join(rows) + "\n"


def declared_actions(app: Any) -> dict[str, list[str]]:
    """Every action a route declares (the API, the metrics, the OpenAPI document), with its operations."""
    out: dict[str, list[str]] = {}
    for (method, path), action in sorted(_actions(app).items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if method in ("head", "options"):
            continue
        out.setdefault(action, []).append(f"`{method.upper()} {path}`")
    return dict(sorted(out.items()))


# what the operations alone do not say about an action
ACTION_NOTES = {"read_openapi": "only with `SPIFF_MESSAGES_OPENAPI_AUTHORIZE` on",
                "list_messages": "`GET /v1.0/status` (open) asks it too, to tell Spiff Arena's shell",
                "check_permissions": "the hook is then asked about the action of each URI it is given"}


def actions_page(app: Any) -> str:
    """The table of ``authorize(request, action)`` actions, read from the routes' declarations."""
    rows = ["| action | asked for | note |", "|---|---|---|"]
    for action, operations in declared_actions(app).items():
        rows.append(f"| `{action}` | {', '.join(operations)} | {_cell(ACTION_NOTES.get(action, ''))} |")
    return "\n".join(rows) + "\n"


# -- the OpenAPI document ----------------------------------------------------------------------------------------
def build_app() -> Any:
    """A Quart app with the extension mounted on the repository's BPMN fixtures; never started."""
    from quart import Quart

    from quart_spiff_messages import SpiffMessages

    app = Quart("quart_spiff_messages_docs")
    database = Path(tempfile.gettempdir()) / "quart-spiff-messages-docs-unused.db"
    app.config.update({
        "SPIFF_MESSAGES_BPMN_DIR": str(ROOT / "bpmn_fixtures"),
        "SPIFF_MESSAGES_DATABASE_URL": f"sqlite:///{database}",
    })
    SpiffMessages(app)
    return app


def openapi_document(app: Any) -> dict[str, Any]:
    from quart_spiff_messages.config import Settings

    path = f"{Settings.from_mapping(app.config).url_prefix}/openapi.json"

    async def fetch() -> Any:
        response = await app.test_client().get(path)
        if response.status_code != 200:
            raise ExtensionError(f"GET {path} answered {response.status_code}")
        return await response.get_json()

    document: dict[str, Any] = asyncio.run(fetch())
    return document


def _actions(app: Any) -> dict[tuple[str, str], str]:
    """(method, OpenAPI path) -> the action the route asks `authorize(request, action)` for."""
    from quart_spiff_messages.api.access import action_of

    out: dict[tuple[str, str], str] = {}
    for rule in app.url_map.iter_rules():
        action = action_of(app.view_functions.get(rule.endpoint))
        if action is None:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            out[(method.lower(), path)] = action
    return out


class _Schemas:
    """Named schemas: the document's components, and the titled objects inlined in operations."""

    def __init__(self, components: dict[str, Any]) -> None:
        self.named: dict[str, dict[str, Any]] = dict(components)

    @staticmethod
    def label(name: str) -> str:
        return "api-schema-" + name.lower()

    def link(self, name: str) -> str:
        return f"{{ref}}`{name} <{self.label(name)}>`"

    def name_of(self, schema: dict[str, Any]) -> str | None:
        """The name of a body schema: a reference, or an object with a title (registered when first seen)."""
        ref = schema.get("$ref")
        if ref:
            return str(ref).rsplit("/", 1)[-1]
        title = schema.get("title")
        if title and schema.get("type") == "object":
            self.named.setdefault(str(title), schema)
            return str(title)
        return None

    def type_of(self, schema: dict[str, Any]) -> str:
        if "$ref" in schema:
            return self.link(str(schema["$ref"]).rsplit("/", 1)[-1])
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                options = schema[combinator]
                nullable = any(o.get("type") == "null" for o in options)
                kinds = [self.type_of(o) for o in options if o.get("type") != "null"]
                text = " or ".join(kinds) or "null"
                return f"{text} or null" if nullable and kinds else text
        if "allOf" in schema and len(schema["allOf"]) == 1:
            return self.type_of(schema["allOf"][0])
        if "const" in schema:
            return f"`{json.dumps(schema['const'])}`"
        if "enum" in schema:
            return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
        kind = schema.get("type")
        if kind == "array":
            return "array of " + self.type_of(schema.get("items", {}))
        if kind == "object" and schema.get("properties") and schema.get("title"):
            return self.link(self.name_of(schema) or "object")
        if isinstance(kind, list):
            return " or ".join(str(k) for k in kind)
        text = str(kind) if kind else "any JSON"
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            text += f", {low} to {high}"
        elif low is not None:
            text += f", ≥ {low}"
        elif high is not None:
            text += f", ≤ {high}"
        if "pattern" in schema and schema["pattern"].startswith("^[0-9a-fA-F]{8}-"):
            text += " (UUID)"
        return text

    @staticmethod
    def default_of(schema: dict[str, Any]) -> str:
        if "default" not in schema:
            return ""
        return f"`{json.dumps(schema['default'])}`"


def _text(value: Any) -> str:
    return inspect.cleandoc(str(value)) if value else ""


def _heading_for(path: str, prefix: str) -> str:
    rest = path[len(prefix):] if prefix and path.startswith(prefix) else path
    segment = rest.strip("/").split("/", 1)[0] or "root"
    return segment.replace("-", " ").replace("_", " ").capitalize()


def http_api_page(document: dict[str, Any], actions: dict[tuple[str, str], str], prefix: str) -> str:
    schemas = _Schemas(document.get("components", {}).get("schemas", {}))
    lines: list[str] = []
    info = document.get("info", {})
    lines += [f"OpenAPI {document.get('openapi', '')}, `{info.get('title', '')}` version {info.get('version', '')}.",
              ""]
    methods_order = ("get", "post", "put", "patch", "delete")
    # one section per tag of the document, in its order (an operation without a tag: by its path's first segment)
    groups: dict[str, list[tuple[str, str, dict[str, Any]]]] = {t["name"]: [] for t in document.get("tags", [])}
    about = {t["name"]: _text(t.get("description")) for t in document.get("tags", [])}
    for path in sorted(document.get("paths", {})):
        ops = document["paths"][path]
        for method in sorted(ops, key=lambda m: methods_order.index(m) if m in methods_order else 99):
            tags = ops[method].get("tags") or [_heading_for(path, prefix)]
            groups.setdefault(tags[0], []).append((method, path, ops[method]))

    for group, operations in groups.items():
        if not operations:
            continue
        lines += [f"## {group}", ""]
        if about.get(group):
            lines += [about[group], ""]
        for method, path, op in operations:
            lines += _operation(method, path, op, actions.get((method, path)), schemas)

    lines += ["(api-schemas)=", "## Schemas", "",
              "The bodies named above. Fields may be added to answers in later versions, never removed.", ""]
    done: set[str] = set()
    while True:  # rendering a schema may name inline schemas not seen yet
        pending = sorted(set(schemas.named) - done)
        if not pending:
            break
        for name in pending:
            done.add(name)
            lines += _schema(name, schemas.named[name], schemas)
    return "\n".join(lines) + "\n"


def _operation(method: str, path: str, op: dict[str, Any], action: str | None, schemas: _Schemas) -> list[str]:
    label = "api-" + re.sub(r"[^a-z0-9]+", "-", f"{method} {path}".lower()).strip("-")
    lines = [f"({label})=", f"### `{method.upper()} {path}`", ""]
    summary, description = _text(op.get("summary")), _text(op.get("description"))
    if summary and description and not summary.endswith((".", "!", "?", ":")):
        # Quart-Schema cuts the docstring after its first line, which may end mid-sentence: join them again
        summary, description = f"{summary} {description}", ""
    if summary:
        lines += [summary, ""]
    if description:
        lines += [description, ""]
    if action:
        lines += [f"Authorization action: `{action}`.", ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | type | required | default | description |", "|---|---|---|---|---|---|"]
        for p in params:
            schema = p.get("schema", {})
            lines.append(f"| `{p['name']}` | {p.get('in', '')} | {_cell(schemas.type_of(schema))} "
                         f"| {'yes' if p.get('required') else 'no'} | {_cell(schemas.default_of(schema))} "
                         f"| {_cell(_text(p.get('description') or schema.get('description')))} |")
        lines.append("")
    body = op.get("requestBody")
    if body:
        for content_type, media in body.get("content", {}).items():
            schema = media.get("schema", {})
            name = schemas.name_of(schema)
            what = schemas.link(name) if name else schemas.type_of(schema)
            note = _text(schema.get("description"))
            lines += [f"Request body (`{content_type}`): {what}" + (f". {note}" if note else ""), ""]
    responses = op.get("responses", {})
    if responses:
        lines += ["| status | body | description |", "|---|---|---|"]
        for status in sorted(responses):
            response = responses[status]
            bodies = []
            for content_type, media in response.get("content", {}).items():
                schema = media.get("schema", {})
                name = schemas.name_of(schema)
                bodies.append(f"{schemas.link(name) if name else schemas.type_of(schema)} (`{content_type}`)")
            lines.append(f"| {status} | {_cell(', '.join(bodies) or '(none)')} "
                         f"| {_cell(_text(response.get('description')))} |")
        lines.append("")
    else:
        lines += ["The OpenAPI document describes no response body for this operation.", ""]
    return lines


def _schema(name: str, schema: dict[str, Any], schemas: _Schemas) -> list[str]:
    lines = [f"({schemas.label(name)})=", f"### {name}", ""]
    description = _text(schema.get("description"))
    if description:
        lines += [description, ""]
    properties = schema.get("properties", {})
    if not properties:
        lines += [f"Type: {schemas.type_of({k: v for k, v in schema.items() if k != 'title'})}.", ""]
        return lines
    required = set(schema.get("required", []))
    lines += ["| field | type | required | default | description |", "|---|---|---|---|---|"]
    for field, prop in properties.items():
        lines.append(f"| `{field}` | {_cell(schemas.type_of(prop))} | {'yes' if field in required else 'no'} "
                     f"| {_cell(schemas.default_of(prop))} | {_cell(_text(prop.get('description')))} |")
    lines.append("")
    return lines


# -- error codes -------------------------------------------------------------------------------------------------
def error_codes_page() -> str:
    """The table of error codes: each class of ``quart_spiff_messages.errors``, its status and its docstring."""
    from quart_spiff_messages.errors import error_classes

    rows = sorted(((int(cls.status), cls.error_code, inspect.getdoc(cls) or "") for cls in error_classes()),
                  key=lambda r: (r[0], r[1]))
    codes = [code for _, code, _ in rows]
    if len(codes) != len(set(codes)):
        raise ExtensionError(f"an error_code is declared twice in quart_spiff_messages.errors: {codes}")
    undocumented = [code for _, code, doc in rows if not doc]
    if undocumented:
        raise ExtensionError(f"error classes without a docstring (their meaning): {undocumented}")
    lines = ["| status | `error_code` | meaning |", "|---|---|---|"]
    lines += [f"| {status} | `{code}` | {_cell(doc)} |" for status, code, doc in rows]
    return "\n".join(lines) + "\n"


# -- Sphinx ------------------------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def generate(app: Sphinx, config: Config) -> None:
    from quart_spiff_messages.config import Settings

    spiff_app = build_app()
    document = openapi_document(spiff_app)
    prefix = Settings.from_mapping(spiff_app.config).url_prefix
    _write(EXTRA / "openapi.json", json.dumps(document, indent=2, sort_keys=True) + "\n")
    _write(GENERATED / "http-api.md", http_api_page(document, _actions(spiff_app), prefix))
    _write(GENERATED / "error-codes.md", error_codes_page())
    _write(GENERATED / "configuration.md", configuration_page())
    _write(GENERATED / "constructor.md", constructor_page())
    _write(GENERATED / "actions.md", actions_page(spiff_app))


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", generate, priority=100)  # before Sphinx checks html_extra_path exists
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
