"""The catalog: what the BPMN folder says about messages, built once at start-up and immutable afterwards.

Every ``*.bpmn`` under the root is parsed with SpiffWorkflow's own ``SpiffBpmnParser``; a file's folder relative to
the root is its process group, and each group gets a fresh parser (process ids are unique within a group, call
activities resolve within it). The catalog indexes Message Start Events and catch points by message name, with
the correlation properties each catch evaluates, so the router never has to look at a spec per message.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree
from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
from SpiffWorkflow.bpmn.specs.event_definitions import MessageEventDefinition, MultipleEventDefinition
from SpiffWorkflow.bpmn.specs.mixins import (
    BoundaryEventMixin,
    EndEventMixin,
    EventBasedGatewayMixin,
    IntermediateCatchEventMixin,
    IntermediateThrowEventMixin,
    ReceiveTaskMixin,
    SendTaskMixin,
    StartEventMixin,
)
from SpiffWorkflow.spiff.parser import SpiffBpmnParser

from .correlation import ExpressionError, Property, compile_expression
from .names import ScopedName, in_scope


class CatalogError(Exception):
    """A BPMN file cannot be loaded; names the file, the element and the line when they are known."""

    def __init__(self, message: str, file: Path | str | None = None, element_id: str | None = None,
                 line: int | None = None) -> None:
        self.reason = message
        self.file = str(file) if file is not None else None
        self.element_id = element_id
        self.line = line
        where = ", ".join(
            part for part in (
                self.file,
                f"line {line}" if line else None,
                f"element {element_id!r}" if element_id else None,
            ) if part
        )
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True)
class ProcessEntry:
    key: str  # "group/process_id", or "process_id" at the root
    process_id: str
    group: str
    file: str
    spec_version: str
    spec: Any = field(repr=False, compare=False)
    subprocess_specs: dict[str, Any] = field(repr=False, compare=False)

    @property
    def correlation_keys(self) -> dict[str, list[str]]:
        """Correlation key name -> the property ids it is made of (as the BPMN collaboration declares them)."""
        keys: dict[str, list[str]] = dict(getattr(self.spec, "correlation_keys", None) or {})
        return keys


def locate(file: str | None, element_id: str | None) -> int | None:
    """The line of an element in its BPMN file (for reports)."""
    return _locate(file, element_id)


@dataclass(frozen=True)
class StartPoint:
    message_name: str
    process_key: str
    process_id: str
    group: str
    element_id: str
    message_variable: str | None
    properties: tuple[Property, ...]


@dataclass(frozen=True)
class CatchPoint:
    message_name: str
    process_key: str
    process_id: str
    group: str
    element_id: str
    kind: str  # intermediate_catch | receive_task | boundary | event_based_gateway
    interrupting: bool | None
    message_variable: str | None
    properties: tuple[Property, ...]


@dataclass(frozen=True)
class ThrowPoint:
    message_name: str
    process_key: str
    element_id: str
    kind: str  # send_task | intermediate_throw | end_event
    payload_expression: str | None


def message_definitions(ed: Any) -> Iterator[Any]:
    """Message definitions behind an event definition (event-based gateways and multi-events hide them)."""
    if isinstance(ed, MessageEventDefinition):
        yield ed
    elif isinstance(ed, MultipleEventDefinition):
        for sub in ed.event_definitions:
            yield from message_definitions(sub)


def properties_of(ed: Any) -> tuple[Property, ...]:
    return tuple(
        Property(cp.name, cp.retrieval_expression, tuple(cp.correlation_keys or ()))
        for cp in ed.correlation_properties
    )


def _catch_kind(ts: Any) -> str | None:
    if isinstance(ts, EventBasedGatewayMixin):
        return "event_based_gateway"
    if isinstance(ts, BoundaryEventMixin):
        return "boundary"
    if isinstance(ts, ReceiveTaskMixin):
        return "receive_task"
    if isinstance(ts, IntermediateCatchEventMixin):
        return "intermediate_catch"
    return None


def _throw_kind(ts: Any) -> str | None:
    if isinstance(ts, SendTaskMixin):
        return "send_task"
    if isinstance(ts, IntermediateThrowEventMixin):
        return "intermediate_throw"
    if isinstance(ts, EndEventMixin):
        return "end_event"
    return None


def _locate(file: str | None, element_id: str | None) -> int | None:
    """SpiffWorkflow leaves ``line_number`` empty for element errors: find the element's line with lxml."""
    if not file or not element_id:
        return None
    try:
        found = etree.parse(file).xpath("//*[@id=$i]", i=element_id)
    except (OSError, etree.XMLSyntaxError):
        return None
    return int(found[0].sourceline) if found else None


def _error_from(exc: Exception, file: str | None = None) -> CatalogError:
    if isinstance(exc, etree.XMLSyntaxError):
        return CatalogError(f"not well-formed XML: {exc.msg}", exc.filename or file, None, exc.lineno)
    if isinstance(exc, ValidationException):
        exc_file = exc.file_name or file
        element = exc.id or None
        line = exc.line_number if isinstance(exc.line_number, int) else _locate(exc_file, element)
        message = str(exc.args[0]) if exc.args else str(exc)
        return CatalogError(message, exc_file, element, line)
    return CatalogError(f"{type(exc).__name__}: {exc}", file)


class Catalog:
    """Processes, start points and catch points of one BPMN folder. Build it with :meth:`load`."""

    def __init__(self, root: Path, processes: dict[str, ProcessEntry], starts: list[StartPoint],
                 catches: list[CatchPoint], throws: list[ThrowPoint], messages: dict[str, set[str]]) -> None:
        self.root = root
        self.processes = processes
        self._starts: dict[str, list[StartPoint]] = defaultdict(list)
        self._catches: dict[str, list[CatchPoint]] = defaultdict(list)
        self._throws: dict[str, list[ThrowPoint]] = defaultdict(list)
        for s in starts:
            self._starts[s.message_name].append(s)
        for c in catches:
            self._catches[c.message_name].append(c)
        for t in throws:
            self._throws[t.message_name].append(t)
        self.messages = messages  # message name -> groups that declare it
        self.version = hashlib.sha256(
            "\n".join(f"{k}@{p.spec_version}" for k, p in sorted(processes.items())).encode()
        ).hexdigest()[:16]

    # -- lookups used by the router ---------------------------------------------------------------------------
    def start_points(self, scoped: ScopedName) -> list[StartPoint]:
        return [s for s in self._starts.get(scoped.name, ()) if in_scope(scoped.group, s.group)]

    def catch_points(self, scoped: ScopedName) -> list[CatchPoint]:
        return [c for c in self._catches.get(scoped.name, ()) if in_scope(scoped.group, c.group)]

    def catch_shapes(self, scoped: ScopedName) -> list[tuple[Property, ...]]:
        """Distinct sets of correlation properties the catches of this message evaluate (usually one)."""
        shapes: dict[tuple[Property, ...], None] = {}
        for c in self.catch_points(scoped):
            shapes.setdefault(c.properties, None)
        return list(shapes)

    def knows_message(self, name: str) -> bool:
        return name in self.messages

    def process(self, key: str) -> ProcessEntry | None:
        return self.processes.get(key)

    @property
    def starts(self) -> dict[str, list[StartPoint]]:
        return dict(self._starts)

    @property
    def catches(self) -> dict[str, list[CatchPoint]]:
        return dict(self._catches)

    @property
    def throws(self) -> dict[str, list[ThrowPoint]]:
        return dict(self._throws)

    # -- loading ----------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: Path | str) -> Catalog:
        root = Path(root)
        if not root.is_dir():
            raise CatalogError(f"BPMN folder {str(root)!r} does not exist")
        by_group: dict[str, list[Path]] = defaultdict(list)
        for path in sorted(root.rglob("*.bpmn")):
            group = path.parent.relative_to(root).as_posix()
            by_group["" if group == "." else group].append(path)
        processes: dict[str, ProcessEntry] = {}
        starts: list[StartPoint] = []
        catches: list[CatchPoint] = []
        throws: list[ThrowPoint] = []
        messages: dict[str, set[str]] = defaultdict(set)
        for group, files in sorted(by_group.items()):
            for entry in _load_group(group, files):
                processes[entry.key] = entry
                s, c, t = _scan(entry)
                starts += s
                catches += c
                throws += t
            _check_unique_starts(group, [s for s in starts if s.group == group], processes)
        for start in starts:
            messages[start.message_name].add(start.group)
        for catch in catches:
            messages[catch.message_name].add(catch.group)
        for throw in throws:
            messages[throw.message_name].add(processes[throw.process_key].group)
        return cls(root, processes, starts, catches, throws, dict(messages))


def _load_group(group: str, files: list[Path]) -> Iterable[ProcessEntry]:
    parser = SpiffBpmnParser()
    contents = hashlib.sha256()
    origin: dict[str, str] = {}
    for path in files:
        try:
            data = path.read_bytes()
            contents.update(path.name.encode() + b"\0" + data + b"\0")
            before = set(parser.process_parsers)
            parser.add_bpmn_file(str(path))
            origin.update({pid: str(path) for pid in set(parser.process_parsers) - before})
        except Exception as exc:
            raise _error_from(exc, str(path)) from exc
    version = contents.hexdigest()[:16]
    top = [pid for pid, pp in parser.process_parsers.items() if pp.parent is None and pp.process_executable]
    entries = []
    for pid in sorted(top):
        try:
            spec = parser.get_spec(pid)
            subs = parser.get_subprocess_specs(pid)
        except Exception as exc:
            raise _error_from(exc, origin.get(pid)) from exc
        key = f"{group}/{pid}" if group else pid
        entries.append(ProcessEntry(key, pid, group, origin.get(pid, ""), version, spec, subs))
    return entries


def _all_task_specs(entry: ProcessEntry) -> Iterator[Any]:
    yield from entry.spec.task_specs.values()
    for sub in entry.subprocess_specs.values():
        yield from sub.task_specs.values()


def _scan(entry: ProcessEntry) -> tuple[list[StartPoint], list[CatchPoint], list[ThrowPoint]]:
    starts: list[StartPoint] = []
    catches: list[CatchPoint] = []
    throws: list[ThrowPoint] = []
    top_level = set(entry.spec.task_specs.values())
    for ts in _all_task_specs(entry):
        ed = getattr(ts, "event_definition", None)
        if ed is None:
            continue
        for md in message_definitions(ed):
            props = properties_of(md)
            for prop in props:
                try:
                    compile_expression(prop.expression or "")
                except ExpressionError as exc:
                    raise CatalogError(
                        f"correlation property {prop.name!r} of message {md.name!r}: {exc}",
                        entry.file, ts.bpmn_id, _locate(entry.file, ts.bpmn_id),
                    ) from exc
            var = getattr(md, "message_var", None)
            if isinstance(ts, StartEventMixin) and ts in top_level:
                starts.append(StartPoint(md.name, entry.key, entry.process_id, entry.group, ts.bpmn_id, var, props))
                continue
            kind = "event_subprocess_start" if isinstance(ts, StartEventMixin) else _catch_kind(ts)
            if kind is not None:
                interrupting = getattr(ts, "cancel_activity", None) if kind == "boundary" else None
                catches.append(CatchPoint(md.name, entry.key, entry.process_id, entry.group, ts.bpmn_id, kind,
                                          interrupting, var, props))
                continue
            throw_kind = _throw_kind(ts)
            if throw_kind is not None:
                throws.append(ThrowPoint(md.name, entry.key, ts.bpmn_id, throw_kind, getattr(md, "expression", None)))
    return starts, catches, throws


def _check_unique_starts(group: str, starts: list[StartPoint], processes: dict[str, ProcessEntry]) -> None:
    seen: dict[str, StartPoint] = {}
    for s in starts:
        first = seen.setdefault(s.message_name, s)
        if first.process_key != s.process_key:
            other = processes[first.process_key]
            here = processes[s.process_key]
            raise CatalogError(
                f"message {s.message_name!r} starts two processes in group {group or '(root)'!r}: "
                f"{first.process_id!r} ({other.file}) and {s.process_id!r}; a message must start one process per group",
                here.file, s.element_id, _locate(here.file, s.element_id),
            )
