"""The README's "Try it" and the tutorial give the answers they show when a reader follows them (issue 23: the
README's receive/ready example could not be reproduced, the tutorial's sample JSON lacked fields)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from quart_spiff_messages.testing import serving

from .conftest import FIXTURES
from .doc_blocks import DOCS, ROOT, blocks, shell_commands

README = ROOT / "README.md"
TUTORIAL = DOCS / "tutorial.md"
VOLATILE = {"spec_version", "created_at_in_seconds", "updated_at_in_seconds"}  # differ from run to run


def test_the_readmes_try_it_block_gives_the_receive_rows_it_shows(tmp_path: Path) -> None:
    [block] = [b for b in blocks(README, "sh") if "message_type=receive&status=ready" in b.text]
    commands = shell_commands(block)
    with serving(FIXTURES, f"sqlite:///{tmp_path / 'readme.db'}", tmp_path / "serve.log") as server:
        outputs = {}
        for line, command in commands:
            run = command.replace("localhost:7000", f"127.0.0.1:{server.port}")
            done = subprocess.run(["bash", "-c", run], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0 and done.stdout.startswith("{"), (line, command, done.stdout, done.stderr)
            outputs[command] = json.loads(done.stdout)
    [listing] = [cmd for cmd in outputs if "message_type=receive&status=ready" in cmd]
    first = outputs[listing]["results"][0]
    # what the comment under the command claims for the first row, read from the README itself
    lines = block.text.splitlines()
    start = next(i for i, text in enumerate(lines) if "message_type=receive&status=ready" in text)
    shown = " ".join(text.lstrip("# ") for text in lines[start + 1:] if text.startswith("#"))
    claims = dict(re.findall(r'"(id|name|message_type|status|process_instance_id|process_model_identifier)": '
                             r'("[^"]*"|-?\d+)', shown))
    assert set(claims) == {"id", "name", "message_type", "status", "process_instance_id",
                           "process_model_identifier"}, shown
    assert {key: json.loads(value) for key, value in claims.items()} == {key: first[key] for key in claims}
    keys = re.search(r'"correlation_keys": (\{[^{}]*\{[^{}]*\}\})', shown)
    assert keys is not None and json.loads(keys.group(1)) == first["correlation_keys"]


def _same_shape(shown: Any, got: Any, where: str = "") -> list[str]:
    """Where an answer differs from the page's sample: a field missing or extra, a value that is not the same
    (times and spec versions excepted)."""
    if isinstance(shown, dict) and isinstance(got, dict):
        problems = [f"{where}.{k}: on the page, not in the answer" for k in shown.keys() - got.keys()]
        problems += [f"{where}.{k}: in the answer, not on the page" for k in got.keys() - shown.keys()]
        for key in shown.keys() & got.keys():
            if key not in VOLATILE:
                problems += _same_shape(shown[key], got[key], f"{where}.{key}")
        return problems
    if isinstance(shown, list) and isinstance(got, list) and len(shown) == len(got):
        return [p for i, (a, b) in enumerate(zip(shown, got, strict=True)) for p in _same_shape(a, b, f"{where}[{i}]")]
    return [] if shown == got else [f"{where}: the page shows {shown!r}, the answer is {got!r}"]


async def test_the_tutorial_answers_as_the_page_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(FIXTURES, tmp_path / "bpmn")
    [shop] = [b for b in blocks(TUTORIAL, "python") if "SpiffMessages(app)" in b.text]
    (tmp_path / "shop.py").write_text(shop.text)
    monkeypatch.chdir(tmp_path)  # the page's relative paths: bpmn, sqlite:///shop.db
    spec = importlib.util.spec_from_file_location("tutorial_shop", tmp_path / "shop.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "tutorial_shop", module)
    spec.loader.exec_module(module)
    app = module.app

    samples = [json.loads(b.text) for b in blocks(TUTORIAL, "json")]
    assert len(samples) == 3, "the tutorial's samples: the route's answer, the instance, the payment's answer"
    async with app.test_app():
        client = app.test_client()
        created = await client.post("/orders/A-1")  # step 5: curl -s -X POST localhost:8765/orders/A-1
        assert _same_shape(samples[0], await created.get_json()) == []
        instance = await client.get("/v1.0/process-instances/1")
        assert _same_shape(samples[1], await instance.get_json()) == []
        paid = await client.post("/v1.0/messages/payment_received", json={"order_id": "A-1", "amount": 42})
        assert paid.status_code == 200
        problems = _same_shape(samples[2], await paid.get_json())
        assert problems == [], "\n".join(problems)
        again = await client.post("/v1.0/messages/payment_received", json={"order_id": "A-1", "amount": 42})
        body = await again.get_json()  # step 7: refused, as the page's text block shows
        [shown] = [b.text for b in blocks(TUTORIAL, "text") if "message_not_accepted" in b.text]
        assert again.status_code == 400 and f'"detail": {json.dumps(body["detail"])}' in shown
