"""The testing how-to (docs/howto/testing-bpmn.md) as a reader follows it: every example runs, warning-free.

Its ``pyproject.toml`` snippet and each Python block (a whole test module, headed by its path) are written into a
fresh project whose BPMN folder is ``bpmn_fixtures/`` under the name the snippet gives and whose
``tests/bpmn_cases`` is this suite's; then pytest runs it in a process of its own, as the reader would.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .conftest import CASES, FIXTURES
from .doc_blocks import DOCS, Block, blocks

PAGE = DOCS / "howto" / "testing-bpmn.md"
HEADER = re.compile(r"^# (tests/[\w/]+\.py)\n")


def _modules() -> list[tuple[str, Block]]:
    found = []
    for block in blocks(PAGE, "python"):
        header = HEADER.match(block.text)
        assert header, f"{block.where}: every Python example is a whole module headed by '# tests/<name>.py'"
        found.append((header.group(1), block))
    return found


def test_every_example_of_the_testing_howto_runs_without_a_warning(tmp_path: Path) -> None:
    [ini] = [b for b in blocks(PAGE, "toml") if "[tool.pytest.ini_options]" in b.text]
    (tmp_path / "pyproject.toml").write_text(ini.text)
    [folder] = re.findall(r'^spiff_messages_bpmn_dir\s*=\s*"([^"]+)"', ini.text, flags=re.M)
    (tmp_path / folder).symlink_to(FIXTURES, target_is_directory=True)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "bpmn_cases").symlink_to(CASES, target_is_directory=True)
    modules = _modules()
    assert len(modules) >= 8, "the how-to lost its examples"
    paths = [path for path, _ in modules]
    assert len(paths) == len(set(paths)), f"two examples claim one file: {paths}"
    tests = 0
    for path, block in modules:
        (tmp_path / path).write_text(block.text)
        tests += len(re.findall(r"^(?:async )?def test_", block.text, flags=re.M))

    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    summary = output.strip().splitlines()[-1]
    assert re.fullmatch(rf"{tests} passed in [0-9.]+s( \([0-9:]+\))?", summary), output[-6000:]
    assert "warning" not in output.lower(), output[-6000:]  # the ini snippet's pytest-asyncio deprecation included


def test_every_harness_call_is_on_the_page() -> None:
    """A call added to the harness is documented on the how-to (its table at least)."""
    from quart_spiff_messages.pytest_plugin import BpmnHarness

    text = PAGE.read_text(encoding="utf-8")
    public = [name for name in vars(BpmnHarness) if not name.startswith("_")]
    missing = [name for name in public if not re.search(rf"\b{name}\b", text)]
    assert not missing, f"harness calls missing from {PAGE.name}: {missing}"
