"""Schemathesis drives the real server from its generated OpenAPI document: nothing a client sends gives a 5xx.

It runs its command line (coverage, fuzzing and stateful phases) against ``spiff-messages serve``. Response
schema conformance is not checked yet: the error answers are problem+json, which the document does not declare
for every operation.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import FIXTURES
from .server import Server

EXAMPLES = 25


def test_no_request_from_the_openapi_document_gives_a_server_error(tmp_path: Path) -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    assert cli, "schemathesis is a test dependency"
    server = Server(FIXTURES, f"sqlite:///{tmp_path / 'fuzz.db'}", log=tmp_path / "serve.log")
    try:
        server.wait_ready()
        run = subprocess.run(
            [cli, "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error",
             "--max-examples", str(EXAMPLES), "--seed", "20261128", "--no-color"],
            capture_output=True, text=True, timeout=600)
    finally:
        server.stop()
    summary = run.stdout[-3000:]
    print(summary)
    assert run.returncode == 0, summary + (tmp_path / "serve.log").read_text(errors="replace")[-3000:]
    assert " generated, " in summary and " passed" in summary
