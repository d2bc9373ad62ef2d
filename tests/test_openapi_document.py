"""The extension's own OpenAPI document when mounted in a host (issue 23): its operations only, under its title,
tagged by the HTTP reference's sections with whole summaries, and guarded by the hook when the host asks."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from quart import Quart, request
from quart_schema import QuartSchema

from quart_spiff_messages import SpiffMessages
from quart_spiff_messages.api.openapi import SECTIONS

from .conftest import FIXTURES

DOCS_EXT = str(Path(__file__).resolve().parent.parent / "docs" / "_ext")


def _host(tmp_path: Path, **config: Any) -> tuple[Quart, SpiffMessages]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    app = Quart("shop")
    app.config.update(SPIFF_MESSAGES_BPMN_DIR=str(FIXTURES),
                      SPIFF_MESSAGES_DATABASE_URL=f"sqlite:///{tmp_path / 'shop.db'}", **config)

    @app.get("/orders/<int:order_id>")
    async def order(order_id: int) -> dict[str, int]:
        """The host's own page: it does not belong in the extension's document."""
        return {"order": order_id}

    return app, SpiffMessages(app)


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in document["paths"].items() for method, op in ops.items()]


async def test_a_hosts_app_serves_the_extensions_own_document(tmp_path: Path) -> None:
    app, _ = _host(tmp_path)
    async with app.test_app():
        document = await (await app.test_client().get("/v1.0/openapi.json")).get_json()
    assert document["info"]["title"] == "quart-spiff-messages"
    assert document["paths"] and all(path.startswith("/v1.0/") for path in document["paths"])
    assert not any("orders" in path for path in document["paths"])  # the host's routes stay out
    sections = [name for name, _ in SECTIONS]
    assert [t["name"] for t in document["tags"]] == sections and all(t["description"] for t in document["tags"])
    used = set()
    for method, path, op in _operations(document):
        [tag] = op["tags"]
        assert tag in sections, (method, path, tag)  # no operation left under "default"
        used.add(tag)
        view = app.view_functions[next(r.endpoint for r in app.url_map.iter_rules()
                                       if re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", r.rule) == path
                                       and method.upper() in (r.methods or ()))]
        paragraph = " ".join(inspect.getdoc(view).split("\n\n")[0].split())  # type: ignore[union-attr]
        assert re.fullmatch(r".+[.!?]", op["summary"]), (path, op["summary"])  # a whole sentence
        assert paragraph.startswith(op["summary"]), (path, op["summary"])  # never cut mid-sentence
    assert used == set(sections)


async def test_the_document_keeps_to_the_http_references_sections(tmp_path: Path) -> None:
    """The generated HTTP reference groups operations by these tags: one heading per section, in order."""
    import sys

    sys.path.insert(0, DOCS_EXT)
    try:
        import spiff_docs
    finally:
        sys.path.pop(0)
    app, _ = _host(tmp_path)
    async with app.test_app():
        document = await (await app.test_client().get("/v1.0/openapi.json")).get_json()
    page = spiff_docs.http_api_page(document, {}, "/v1.0")
    headings = re.findall(r"^## (.+)$", page, flags=re.M)
    assert headings == [name for name, _ in SECTIONS] + ["Schemas"]


async def test_a_host_with_its_own_quart_schema_keeps_its_document(tmp_path: Path) -> None:
    app = Quart("shop")
    QuartSchema(app, info={"title": "Shop", "version": "1"})
    app.config.update(SPIFF_MESSAGES_BPMN_DIR=str(FIXTURES),
                      SPIFF_MESSAGES_DATABASE_URL=f"sqlite:///{tmp_path / 'shop.db'}")

    @app.get("/orders")
    async def orders() -> dict[str, Any]:
        """The host's orders."""
        return {}

    SpiffMessages(app)
    async with app.test_app():
        client = app.test_client()
        theirs = await (await client.get("/openapi.json")).get_json()
        ours = await (await client.get("/v1.0/openapi.json")).get_json()
    assert theirs["info"]["title"] == "Shop" and "/orders" in theirs["paths"]
    assert ours["info"]["title"] == "quart-spiff-messages" and "/orders" not in ours["paths"]
    assert "/v1.0/messages/{modified_message_name}" in ours["paths"]


@pytest.mark.parametrize("path", ["/v1.0/openapi.json", "/v1.0/ui", "/v1.0/ui/assets/swagger-ui.css"])
async def test_the_hook_guards_the_document_and_its_ui_when_asked(tmp_path: Path, path: str) -> None:
    asked: list[tuple[str, str]] = []

    def authorize(req: Any, action: str) -> bool:
        asked.append((req.path, action))
        return req.headers.get("X-Role") == "developer"

    open_app, open_ext = _host(tmp_path / "open")
    open_ext.authorize = authorize
    async with open_app.test_app():
        assert (await open_app.test_client().get(path)).status_code == 200  # default: open, the hook not asked
    assert asked == []

    app, ext = _host(tmp_path / "guarded", SPIFF_MESSAGES_OPENAPI_AUTHORIZE="true", SPIFF_MESSAGES_API_KEY="k1")
    ext.authorize = authorize
    async with app.test_app():
        client = app.test_client()
        no_key = await client.get(path)
        assert (no_key.status_code, (await no_key.get_json())["error_code"]) == (401, "unauthorized")
        refused = await client.get(path, headers={"SpiffWorkflow-Api-Key": "k1"})
        assert (refused.status_code, (await refused.get_json())["error_code"]) == (403, "forbidden")
        allowed = await client.get(path, headers={"SpiffWorkflow-Api-Key": "k1", "X-Role": "developer"})
        assert allowed.status_code == 200
    assert asked == [(path, "read_openapi")] * 2


async def test_permissions_check_knows_the_documents_action(tmp_path: Path) -> None:
    app, ext = _host(tmp_path, SPIFF_MESSAGES_OPENAPI_AUTHORIZE="true")
    ext.authorize = lambda req, action: action != "read_openapi" or request.headers.get("X-Role") == "developer"
    async with app.test_app():
        resp = await app.test_client().post("/v1.0/permissions-check",
                                            json={"requests_to_check": {"/v1.0/openapi.json": ["GET"],
                                                                        "/v1.0/messages": ["GET"]}})
        body = await resp.get_json()
    assert resp.status_code == 200, body
    assert body["results"] == {"/v1.0/openapi.json": {"GET": False}, "/v1.0/messages": {"GET": True}}
