"""Give BPMN files without diagram interchange a layout: bpmn-auto-layout (via node, ``layout.mjs``) draws each, and
only its ``<bpmndi:BPMNDiagram>`` is appended to the file, so every other line (and the line numbers ``check``
reports) stays as it was. Run once per new file: ``python tools/console/add_bpmndi.py FILE...`` with
``NODE_PATH`` pointing at a folder where ``npm install bpmn-auto-layout`` was run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

NAMESPACES = ('xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI" '
              'xmlns:dc="http://www.omg.org/spec/DD/20100524/DC" xmlns:di="http://www.omg.org/spec/DD/20100524/DI"')


def add(path: Path, layout: Path) -> bool:
    text = path.read_text()
    if "BPMNDiagram" in text:
        return False
    diagram = subprocess.run(["node", str(layout), str(path)], check=True, capture_output=True, text=True).stdout
    if not diagram:
        raise SystemExit(f"{path}: bpmn-auto-layout drew nothing")
    text = re.sub(r"<bpmn:definitions ", f"<bpmn:definitions {NAMESPACES} ", text, count=1)
    text = text.replace("</bpmn:definitions>", f"  {diagram}\n</bpmn:definitions>")
    path.write_text(text)
    return True


if __name__ == "__main__":
    layout = Path(os.environ.get("LAYOUT_SCRIPT", Path(__file__).resolve().parent / "layout.mjs"))
    for name in sys.argv[1:]:
        print(name, "laid out" if add(Path(name), layout) else "has a diagram already")
