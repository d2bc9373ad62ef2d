"""Every command the README and the docs show runs as shown (issue 23: a documented command crashed every time).

The shell blocks are read from the pages themselves (``tests/doc_blocks.py``) and run in a scratch folder where
the folders they name (``bpmn``, ``bpmn_fixtures``, ``path/to/bpmn``) are the bundled diagrams and ``shop.py``
is a host app serving them; only what would
clash on a shared machine is changed: the port (a free one), the bind address (loopback), the database (the
test's), and more than two workers (two). ``serve`` runs until its API answers, then is stopped. Commands the
pages only name in prose (``quart spiff-messages db-upgrade``, ``--app``) are run by the tests below them; a test
fails when a page names a command the CLI does not have, or the CLI has one no test runs.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import pytest

from quart_spiff_messages.cli import app_group, main
from quart_spiff_messages.testing import free_port

from .conftest import FIXTURES
from .doc_blocks import Block, blocks, documentation_files, shell_commands

BIN = Path(sys.executable).parent
OURS = re.compile(r"^(?:pip3? install [^&]*&& )?(spiff-messages|quart spiff-messages|python -m quart_spiff_messages)\s")


def _documented() -> list[tuple[Block, int, str]]:
    found = []
    for path in documentation_files():
        for block in blocks(path, "sh", "bash", "console", "shell"):
            for line, command in shell_commands(block):
                if OURS.search(command):
                    found.append((block, line, command))
    return found


DOCUMENTED = _documented()


def _adapted(command: str, port: int, database_url: str, tmp: Path) -> str:
    """The command as run here: installs dropped, loopback, a free port, the test's database, at most 2 workers."""
    parts = [p.strip() for p in command.split("&&") if not p.strip().startswith(("pip ", "pip3 "))]
    command = " && ".join(parts)
    command = command.replace("0.0.0.0", "127.0.0.1")
    command = re.sub(r"--port \d+", f"--port {port}", command)
    command = re.sub(r"--workers (\d+)", lambda m: f"--workers {min(int(m.group(1)), 2)}", command)
    command = re.sub(r"sqlite:////\S+", database_url if database_url.startswith("sqlite") else
                     f"sqlite:///{tmp / 'doc.db'}", command)
    return command


HOST_APP = '''
from quart import Quart
from quart_spiff_messages import SpiffMessages

app = Quart(__name__)
app.config["SPIFF_MESSAGES_BPMN_DIR"] = {bpmn!r}
app.config["SPIFF_MESSAGES_DATABASE_URL"] = {url!r}
messages = SpiffMessages(app)
'''


@pytest.fixture
def scratch(tmp_path: Path, database_url: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """A working folder with the bundled diagrams under the names the docs use, and the environment to run in."""
    for name in ("bpmn", "bpmn_fixtures", "path/to/bpmn"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).symlink_to(FIXTURES, target_is_directory=True)
    (tmp_path / "shop.py").write_text(HOST_APP.format(bpmn=str(FIXTURES), url=database_url))  # the docs' host app
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
           "SPIFF_MESSAGES_DATABASE_URL": database_url, "SPIFF_MESSAGES_PORT": str(free_port())}
    yield tmp_path, env


def _run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def _serve_until_ready(command: str, cwd: Path, env: dict[str, str], port: int) -> str:
    log = cwd / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{command!r} exited with {proc.returncode}: {log.read_text()[-3000:]}"
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/v1.0/message-models", timeout=1)
                if answer.status_code == 200:
                    return answer.text
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{command!r} did not answer within 90 s: {log.read_text()[-3000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize(("block", "line", "command"), DOCUMENTED,
                         ids=[f"{b.path.name}:{line}" for b, line, _ in DOCUMENTED])
def test_a_documented_command_runs_as_shown(block: Block, line: int, command: str,
                                            scratch: tuple[Path, dict[str, str]], database_url: str) -> None:
    cwd, env = scratch
    port = int(env["SPIFF_MESSAGES_PORT"])
    run = _adapted(command, port, database_url, cwd)
    if re.search(r"\breload\b", run):  # reloading asks the workers of a database that serve created
        upgraded = _run(f"spiff-messages db upgrade --database-url {shlex.quote(database_url)}", cwd, env)
        assert upgraded.returncode == 0, upgraded.stderr
    if re.search(r"(spiff-messages|quart_spiff_messages) serve\b", run):
        models = _serve_until_ready(run, cwd, env, port)
        assert "order_received" in models  # the bundled diagrams are served
        return
    done = _run(run, cwd, env)
    assert done.returncode == 0, f"{block.where}: {run!r} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr


def test_the_docs_show_every_command_at_least_once() -> None:
    shown = " ".join(command for _, _, command in DOCUMENTED)
    for words in ("serve", "check", "reload", "db upgrade"):
        assert f"spiff-messages {words}" in shown, f"no shell block shows spiff-messages {words}"


def _leaf_commands(group: click.Group, prefix: str) -> set[str]:
    out: set[str] = set()
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out |= _leaf_commands(command, f"{prefix} {name}")
        else:
            out.add(f"{prefix} {name}")
    return out


def test_every_command_the_pages_name_exists() -> None:
    """A page that names ``spiff-messages X`` (prose included) names a command the CLI has; every command the CLI
    has is run by a test of this module."""
    cli = _leaf_commands(main, "spiff-messages") | _leaf_commands(app_group, "quart spiff-messages")
    named: dict[str, str] = {}
    for path in documentation_files():
        for match in re.finditer(r"(?<![\w-])(quart spiff-messages|spiff-messages) ([a-z][a-z-]*)(?: ([a-z-]+))?",
                                 path.read_text(encoding="utf-8")):
            head, first, second = match.groups()
            words = f"{head} {first} {second}" if f"{head} {first}" == "spiff-messages db" else f"{head} {first}"
            named.setdefault(words, path.name)
    unknown = {words: page for words, page in named.items() if words not in cli}
    assert not unknown, f"pages name commands the CLI does not have: {unknown}"
    assert cli == {"spiff-messages serve", "spiff-messages check", "spiff-messages reload",
                   "spiff-messages db upgrade", "quart spiff-messages db-upgrade"}, "a new command needs a test here"


# -- the commands the pages name in prose ---------------------------------------------------------------------------


def _tables(database_url: str) -> set[str]:
    path = database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_quart_spiff_messages_db_upgrade_migrates_the_host_apps_database(
        scratch: tuple[Path, dict[str, str]], database_url: str) -> None:
    """``quart spiff-messages db-upgrade`` (docs/howto/postgresql.md) crashed in Quart's own event loop."""
    cwd, env = scratch
    done = _run("quart --app shop:app spiff-messages db-upgrade", cwd, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "is at head" in done.stdout
    if database_url.startswith("sqlite"):
        assert {"spiff_message_instance", "spiff_process_instance", "spiff_timer"} <= _tables(database_url)
    again = _run("QUART_APP=shop:app quart spiff-messages db-upgrade", cwd, env)  # idempotent, the variable's way
    assert again.returncode == 0, again.stdout + again.stderr


def test_the_console_script_and_the_module_answer_help_and_version(scratch: tuple[Path, dict[str, str]]) -> None:
    cwd, env = scratch
    for command in ("spiff-messages --version", "python -m quart_spiff_messages --help",
                    "spiff-messages db upgrade --help", "quart --app shop:app spiff-messages --help"):
        done = _run(command, cwd, env)
        assert done.returncode == 0 and done.stdout.strip(), (command, done.stdout, done.stderr)
