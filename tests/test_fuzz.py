"""Schemathesis drives the real server from its generated OpenAPI document: no 5xx, and every answer is what the
document declares (status code, media type, headers, body schema); invalid requests are refused.

It runs its command line (coverage, fuzzing and stateful phases) against ``spiff-messages serve`` with every check
but two that do not fit the wire contract we follow:
- ``positive_data_acceptance``: a well-formed message that nothing takes is a ``400 message_not_accepted``;
- ``allow_header_conformance`` and ``unsupported_method``: ``/messages/{name}`` (POST) and
  ``/messages/{message_instance_uuid}`` (DELETE) are one path shape, so a DELETE of a message name reaches the
  cancel operation (``400 invalid_message_instance_uuid``) rather than a 405.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from quart_spiff_messages.testing import Server

from .conftest import FIXTURES

EXAMPLES = 25


def test_no_request_from_the_openapi_document_gives_a_server_error(tmp_path: Path) -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    assert cli, "schemathesis is a test dependency"
    server = Server(FIXTURES, f"sqlite:///{tmp_path / 'fuzz.db'}", log=tmp_path / "serve.log")
    try:
        server.wait_ready()
        run = subprocess.run(
            [cli, "run", f"{server.url}/openapi.json", "--checks", "all",
             "--exclude-checks", "positive_data_acceptance,allow_header_conformance,unsupported_method",
             "--max-examples", str(EXAMPLES), "--seed", "20261128", "--no-color"],
            capture_output=True, text=True, timeout=600)
    finally:
        server.stop()
    summary = run.stdout[-3000:]
    print(summary)
    assert run.returncode == 0, summary + (tmp_path / "serve.log").read_text(errors="replace")[-3000:]
    assert " generated, " in summary and " passed" in summary
