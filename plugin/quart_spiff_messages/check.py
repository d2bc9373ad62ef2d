"""``spiff-messages check``: what a BPMN folder means for messages, and what in it will not work as drawn.

It loads the folder exactly as ``serve`` does. Errors (the folder does not load) make the exit status 1; warnings
are things that load but will surprise at run time.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .catalog import Catalog, CatalogError, CatchPoint, ProcessEntry, ThrowPoint, locate
from .scripts import environment_names


@dataclass(frozen=True)
class Finding:
    level: str  # error | warning
    code: str
    message: str
    file: str | None = None
    line: int | None = None
    element_id: str | None = None


@dataclass
class Report:
    root: str
    findings: list[Finding] = field(default_factory=list)
    starts: list[dict[str, Any]] = field(default_factory=list)
    catches: list[dict[str, Any]] = field(default_factory=list)
    timer_starts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings)

    def as_json(self) -> dict[str, Any]:
        return {"root": self.root, "ok": self.ok, "findings": [asdict(f) for f in self.findings],
                "start_events": self.starts, "catch_points": self.catches, "timer_start_events": self.timer_starts}

    def as_text(self) -> str:
        lines = [f"BPMN folder {self.root}"]
        for s in self.starts:
            once = (f" (one instance per correlation key: {', '.join(s['correlation_keys'])})"
                    if s["one_instance_per_correlation_key"] else "")
            lines.append(f"  start   {s['message']!r} starts {s['process']} at {_where(s)}{once}")
        for t in self.timer_starts:
            lines.append(f"  timer   {t['expression']} starts {t['process']} at {_where(t)}")
        for c in self.catches:
            props = ", ".join(f"{p['property']}={p['expression']!r} ({'/'.join(p['keys'])})"
                              for p in c["correlation_properties"]) or "no correlation"
            lines.append(f"  catch   {c['message']!r} in {c['process']} ({c['kind']}) at {_where(c)}: {props}")
        for f in self.findings:
            where = f"{f.file}:{f.line}" if f.file and f.line else (f.file or "")
            lines.append(f"{f.level.upper():7s} {f.code}: {f.message}" + (f" [{where}]" if where else ""))
        lines.append("ok" if self.ok else "errors found")
        return "\n".join(lines)


def _where(point: dict[str, Any]) -> str:
    return f"{point['file']}:{point['line']}" if point.get("line") else str(point.get("file"))


def check(root: Path | str, *, script_functions: Iterable[str] = (), service_operators: Iterable[str] = (),
          default_service_handler: bool = False, strict: bool = False) -> Report:
    """``script_functions``: the host's function names; ``service_operators``: the operators with a handler
    (``default_service_handler``: every operator has one). ``strict``: an unhandled operator is an error."""
    report = Report(str(root))
    try:
        catalog = Catalog.load(root)
    except CatalogError as exc:
        report.findings.append(Finding("error", "load_error", exc.reason, exc.file, exc.line, exc.element_id))
        return report
    report.findings += _script_findings(catalog, frozenset(script_functions))
    if not default_service_handler:
        report.findings += _service_findings(catalog, frozenset(service_operators), strict)
    for name, points in sorted(catalog.starts.items()):
        for s in points:
            file = catalog.processes[s.process_key].file
            report.starts.append({"message": name, "process": s.process_key, "element_id": s.element_id,
                                  "file": file, "line": locate(file, s.element_id),
                                  "message_variable": s.message_variable,
                                  "one_instance_per_correlation_key": s.one_per_key,
                                  "correlation_keys": sorted({k for p in s.properties for k in p.keys})})
    report.findings += _timer_start_findings(catalog, report)
    for name, catches in sorted(catalog.catches.items()):
        for c in catches:
            file = catalog.processes[c.process_key].file
            report.catches.append({
                "message": name, "process": c.process_key, "kind": c.kind, "element_id": c.element_id,
                "file": file, "line": locate(file, c.element_id), "message_variable": c.message_variable,
                "correlation_properties": [{"property": p.name, "expression": p.expression, "keys": list(p.keys)}
                                           for p in c.properties]})
            report.findings += _catch_findings(catalog, c, file)
    for name, throws in sorted(catalog.throws.items()):
        if name not in catalog.catches and name not in catalog.starts:
            for t in throws:
                file = catalog.processes[t.process_key].file
                report.findings.append(Finding(
                    "warning", "message_never_received",
                    f"{t.process_key} throws {name!r} ({t.kind}) but no process catches it or starts on it",
                    file, locate(file, t.element_id), t.element_id))
        correlated = any(c.properties for c in catalog.catches.get(name, ()))
        for t in throws:
            if correlated and not t.payload_expression:
                file = _file_of(catalog.processes[t.process_key], t.element_id)
                report.findings.append(Finding(
                    "warning", "throw_without_payload",
                    f"{t.element_id} in {t.process_key} throws {name!r} ({t.kind}) without a "
                    "spiffworkflow:messagePayload, though catches of it correlate: it sends {} and sets no "
                    "correlation key, so the reply accepts anyone", file, locate(file, t.element_id), t.element_id))
    return report


def _timer_start_findings(catalog: Catalog, report: Report) -> Iterator[Finding]:
    """List the timer start events; one whose expression is no ISO 8601 date, duration or cycle starts nothing."""
    from .engine import Engine

    engine = Engine()
    for t in catalog.timer_starts:
        entry = catalog.processes[t.process_key]
        line = locate(entry.file, t.element_id)
        report.timer_starts.append({"expression": t.expression, "process": t.process_key, "element_id": t.element_id,
                                    "file": entry.file, "line": line})
        try:
            engine.start_schedule(entry, t.element_id, time.time())
        except ValueError as exc:
            yield Finding("error", "bad_timer_start", str(exc), entry.file, line, t.element_id)


def _file_of(entry: ProcessEntry, element_id: str) -> str:
    """The file that draws an element of a process: a call activity's process may live in another file."""
    for spec in (entry.spec, *entry.subprocess_specs.values()):
        if any(ts.bpmn_id == element_id for ts in spec.task_specs.values()) and getattr(spec, "file", None):
            return str(spec.file)
    return entry.file


def _keys_set_in(catalog: Catalog, c: CatchPoint) -> set[str]:
    """Correlation keys something else in the catch's process can set: a start event or another catch that
    receives a message with the key, or a throw whose payload carries it (one without a payload sets none)."""
    points: list[CatchPoint | ThrowPoint] = [
        *(o for o in _all(catalog.catches) if o.process_key == c.process_key and o.element_id != c.element_id),
        *(t for t in _all(catalog.throws) if t.process_key == c.process_key and t.payload_expression),
    ]
    keys = {k for point in points for p in point.properties for k in p.keys}
    keys |= {k for s in _all(catalog.starts) if s.process_key == c.process_key for p in s.properties for k in p.keys}
    return keys


def _all(index: dict[str, list[Any]]) -> list[Any]:
    return [point for points in index.values() for point in points]


def _catch_findings(catalog: Catalog, c: CatchPoint, file: str) -> list[Finding]:
    found = []
    line = locate(file, c.element_id)
    if not c.message_variable:
        found.append(Finding("warning", "payload_dropped",
                             f"{c.element_id} in {c.process_key} catches {c.message_name!r} without a "
                             "spiffworkflow:messageVariable: SpiffWorkflow drops the payload", file, line,
                             c.element_id))
    keys = catalog.processes[c.process_key].correlation_keys
    have = {p.name for p in c.properties}
    for key in sorted({k for p in c.properties for k in p.keys}):
        missing = [prop for prop in keys.get(key, []) if prop not in have]
        if missing:
            found.append(Finding("warning", "missing_retrieval_expression",
                                 f"message {c.message_name!r} has no retrieval expression for "
                                 f"{', '.join(missing)} of correlation key {key!r}: it can never match a value "
                                 "established for the whole key", file, line, c.element_id))
    wanted = sorted({k for p in c.properties for k in p.keys})
    entry = catalog.processes[c.process_key]
    if wanted and not c.process_properties and not entry.has_plain_start \
            and not set(wanted) & _keys_set_in(catalog, c):
        where = _file_of(entry, c.element_id)
        found.append(Finding("warning", "catch_accepts_any",
                             f"{c.element_id} in {c.process_key} catches {c.message_name!r} correlated on "
                             f"{', '.join(map(repr, wanted))}, but nothing in the process sets that key before it "
                             "(no start event, other catch or throw with a payload uses it, no "
                             "spiffworkflow:processVariableCorrelation, no plain start to take it from start data): "
                             "it can only ever accept any message of that name", where, locate(where, c.element_id),
                             c.element_id))
    return found


# -- scripts and service tasks ------------------------------------------------------------------------------------
def _task_specs(entry: ProcessEntry) -> Iterator[Any]:
    for spec in (entry.spec, *entry.subprocess_specs.values()):
        yield from spec.task_specs.values()


def _scripts(ts: Any) -> Iterator[str]:
    for attr in ("prescript", "script", "postscript"):
        text = getattr(ts, attr, None)
        if isinstance(text, str) and text.strip():
            yield text


def _assigned(tree: ast.AST) -> set[str]:
    """Names a script binds: assignments, loop and with targets, imports, functions, classes."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            out.add(node.id)
        elif isinstance(node, ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.add(node.name)
            out.update(a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name).partition(".")[0] for a in node.names)
        elif isinstance(node, ast.Lambda):
            out.update(a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg))
        elif isinstance(node, ast.ExceptHandler) and node.name:
            out.add(node.name)
    return out


def _process_names(entry: ProcessEntry) -> set[str]:
    """What the process itself puts in its data: names its scripts assign, message variables, service result
    variables, data objects and loop items."""
    names: set[str] = set()
    for ts in _task_specs(entry):
        for script in _scripts(ts):
            try:
                names |= _assigned(ast.parse(script))
            except SyntaxError:
                continue
        for attr in ("result_variable", "input_item", "output_item", "output_collection"):
            value = getattr(ts, attr, None)
            name = getattr(value, "bpmn_id", value)
            if isinstance(name, str):
                names.add(name)
        ed = getattr(ts, "event_definition", None)
        for md in [ed, *getattr(ed, "event_definitions", ())]:
            if isinstance(getattr(md, "message_var", None), str):
                names.add(md.message_var)
    for spec in (entry.spec, *entry.subprocess_specs.values()):
        names |= set(getattr(spec, "data_objects", {}) or {})
    return names


def _script_findings(catalog: Catalog, host_functions: frozenset[str]) -> list[Finding]:
    """A name a script reads that nothing provides: not a builtin, an environment name or a host function, and
    not set by the process (a script, message variable, result variable...). It may come from start data."""
    known_everywhere = environment_names() | host_functions
    found = []
    for entry in catalog.processes.values():
        known = known_everywhere | _process_names(entry)
        for ts in _task_specs(entry):
            for script in _scripts(ts):
                try:
                    tree = ast.parse(script)
                except SyntaxError as exc:
                    file = _file_of(entry, ts.bpmn_id)
                    found.append(Finding("warning", "script_syntax_error",
                                         f"the script of {ts.bpmn_id} in {entry.key} does not parse: {exc.msg} "
                                         f"(script line {exc.lineno})", file, locate(file, ts.bpmn_id), ts.bpmn_id))
                    continue
                reported: set[str] = set()
                for node in ast.walk(tree):
                    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in known \
                            and node.id not in reported:
                        reported.add(node.id)
                        file = _file_of(entry, ts.bpmn_id)
                        found.append(Finding(
                            "warning", "unknown_script_name",
                            f"the script of {ts.bpmn_id} in {entry.key} reads {node.id!r} (script line "
                            f"{node.lineno}), which is not a builtin, an environment name or a host function, and "
                            "nothing in the process sets it: a NameError unless the start data has it", file,
                            locate(file, ts.bpmn_id), ts.bpmn_id))
    return found


def _service_findings(catalog: Catalog, handled: frozenset[str], strict: bool) -> list[Finding]:
    found = []
    for entry in catalog.processes.values():
        for ts in _task_specs(entry):
            operator = getattr(ts, "operation_name", None)
            if isinstance(operator, str) and operator not in handled:
                file = _file_of(entry, ts.bpmn_id)
                found.append(Finding(
                    "error" if strict else "warning", "service_operator_without_handler",
                    f"service task {ts.bpmn_id} in {entry.key} calls {operator!r}, which has no handler: it waits "
                    "until a remote worker completes it (PUT .../tasks/{instance}/{task}/callback)", file,
                    locate(file, ts.bpmn_id), ts.bpmn_id))
    return found
