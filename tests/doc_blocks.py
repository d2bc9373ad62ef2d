"""The code blocks of the README and the docs, read as a reader copies them: so tests can run what the docs show."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
_FENCE = re.compile(r"^(```+|~~~+)\s*\{?([\w-]*)\}?\s*(.*)$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the block's first line of code, 1-based
    language: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def documentation_files() -> list[Path]:
    """README.md and every page of docs/ (not the generated ones nor a build)."""
    pages = [p for p in sorted(DOCS.rglob("*.md")) if not {"_build", "_generated"} & set(p.parts)]
    return [ROOT / "README.md", *pages]


def blocks(path: Path, *languages: str) -> list[Block]:
    """The fenced blocks of a Markdown file in these languages (all when none given)."""
    found: list[Block] = []
    fence: str | None = None
    language, start = "", 0
    lines: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if fence is None:
            match = _FENCE.match(line.strip())
            if match:
                fence, language, start, lines = match.group(1), match.group(2), number + 1, []
        elif line.strip() == fence:
            if not languages or language in languages:
                found.append(Block(path, start, language, "\n".join(lines) + "\n"))
            fence = None
        else:
            lines.append(line)
    return found


def shell_commands(block: Block) -> list[tuple[int, str]]:
    """The commands of a shell block, one per logical line (continuations joined, comments dropped)."""
    out: list[tuple[int, str]] = []
    pending, first = "", 0
    for offset, raw in enumerate(block.text.splitlines()):
        line = raw.rstrip()
        if not pending:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            first = block.line + offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command = re.sub(r"\s+#\s.*$", "", pending + line).strip()
        pending = ""
        out.append((first, command))
    return out
