"""The catalog: what the BPMN folder says about messages, built once at start-up and immutable afterwards.

Every ``*.bpmn`` and ``*.dmn`` under the root is parsed with SpiffWorkflow's own ``SpiffBpmnParser``; a file's
folder relative to the root is its process group, and each group gets a fresh parser (process ids are unique within
a group; call activities and business rule tasks resolve within it). The catalog indexes Message Start Events and
catch points by message name, with the correlation properties each catch evaluates, so the router never has to
look at a spec per message.
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
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
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
from SpiffWorkflow.spiff.parser.task_spec import SpiffTaskParser

from .correlation import ExpressionError, Property, compile_expression
from .names import ScopedName, depth, in_scope, process_key


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
    # Start events of event subprocesses that interrupt the process (SpiffWorkflow 3.2 does not read isInterrupting)
    interrupting_starts: frozenset[str] = frozenset()
    # Message Start Events that start no second instance while one with the same correlation key is active
    # (:data:`ONE_INSTANCE_PER_KEY`, on the start event or on the process)
    one_per_key_starts: frozenset[str] = frozenset()

    @property
    def has_plain_start(self) -> bool:
        """Whether the process has a start event without a message or a timer: ``POST /process-instances`` can
        start it (with data that may carry its correlation keys)."""
        starts = [ts for ts in self.spec.task_specs.values() if isinstance(ts, StartEventMixin)]
        return any(not list(message_definitions(getattr(ts, "event_definition", None)))
                   and not isinstance(getattr(ts, "event_definition", None), TimerEventDefinition) for ts in starts)

    @property
    def timer_starts(self) -> list[TimerStartPoint]:
        """The process's timer start events (each starts instances on its own schedule)."""
        return [TimerStartPoint(self.key, ts.bpmn_id, ts.event_definition.expression)
                for ts in self.spec.task_specs.values()
                if isinstance(ts, StartEventMixin) and isinstance(getattr(ts, "event_definition", None),
                                                                  TimerEventDefinition)]

    @property
    def display_name(self) -> str:
        """The process's ``name`` in its BPMN file, else its id (what Spiff Arena shows as the model's name)."""
        name = getattr(self.spec, "description", None)
        return str(name) if name else self.process_id

    @property
    def correlation_keys(self) -> dict[str, list[str]]:
        """Correlation key name -> the property ids it is made of (as the BPMN collaboration declares them)."""
        keys: dict[str, list[str]] = dict(getattr(self.spec, "correlation_keys", None) or {})
        return keys


def locate(file: str | None, element_id: str | None) -> int | None:
    """The line of an element in its BPMN file (for reports)."""
    return _locate(file, element_id)


@dataclass(frozen=True)
class TimerStartPoint:
    process_key: str
    element_id: str
    expression: str  # as the BPMN says it: an expression that evaluates to an ISO 8601 date, duration or cycle


@dataclass(frozen=True)
class StartPoint:
    message_name: str
    process_key: str
    process_id: str
    group: str
    element_id: str
    message_variable: str | None
    properties: tuple[Property, ...]
    one_per_key: bool = False  # no second instance while one with the same correlation key is active


# The spiffworkflow extension property that makes a process start one instance per correlation key (Zeebe's
# message start policy): ``<spiffworkflow:property name="one_instance_per_correlation_key" value="true"/>`` in the
# extensionElements of the process (each of its Message Start Events) or of one Message Start Event.
ONE_INSTANCE_PER_KEY = "one_instance_per_correlation_key"


@dataclass(frozen=True)
class CatchPoint:
    message_name: str
    process_key: str
    process_id: str
    group: str
    element_id: str
    # intermediate_catch | receive_task | boundary | event_based_gateway | event_subprocess_start | parallel_start
    kind: str
    interrupting: bool | None
    message_variable: str | None
    properties: tuple[Property, ...]
    # spiffworkflow:processVariableCorrelation: expected values read from the instance's data, not from a message
    process_properties: tuple[Property, ...] = ()


@dataclass(frozen=True)
class ThrowPoint:
    message_name: str
    process_key: str
    element_id: str
    kind: str  # send_task | intermediate_throw | end_event
    payload_expression: str | None  # spiffworkflow:messagePayload; None sends {} and sets no correlation key
    properties: tuple[Property, ...] = ()


def message_definitions(ed: Any) -> Iterator[Any]:
    """Message definitions behind an event definition (event-based gateways and multi-events hide them)."""
    if isinstance(ed, MessageEventDefinition):
        yield ed
    elif isinstance(ed, MultipleEventDefinition):
        for sub in ed.event_definitions:
            yield from message_definitions(sub)


def properties_of(ed: Any) -> tuple[Property, ...]:
    return _as_properties(ed.correlation_properties)


def _as_properties(correlation_properties: Iterable[Any]) -> tuple[Property, ...]:
    """Each property once: SpiffWorkflow's parser appends a message's properties once per file that declares them
    (Arena's layout repeats the shared ones in every file), which would list and evaluate them twice."""
    return tuple(dict.fromkeys(
        Property(cp.name, cp.retrieval_expression, tuple(cp.correlation_keys or ()))
        for cp in correlation_properties
    ))


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


def _add_dmn(parser: Any, path: Path, data: bytes, decisions: dict[str, str]) -> None:
    """Add one DMN file to the group's parser and parse its decision at once.

    SpiffWorkflow parses a decision only when a business rule task asks for it, so a broken table would otherwise
    be blamed on that task's BPMN file, or on nothing when no task uses it yet. The file is parsed from the bytes
    that went into the spec version (``add_dmn_file`` would read it again, in the locale's text encoding).
    """
    file = str(path)
    try:
        root = etree.fromstring(data, base_url=file)
    except etree.XMLSyntaxError as exc:
        raise _error_from(exc, file) from exc
    found = root.xpath("*[local-name()='decision']")
    if not found:
        raise CatalogError("no DMN decision in this file", file, root.get("id"), root.sourceline)
    if len(found) > 1:
        extra = found[1]
        raise CatalogError("SpiffWorkflow reads one decision per DMN file: put each decision in a file of its own",
                           file, extra.get("id"), extra.sourceline)
    decision = found[0]
    before = dict(parser.dmn_parsers)
    try:
        parser.add_dmn_xml(root, filename=file)
        decision_id, dmn = next((k, v) for k, v in parser.dmn_parsers.items() if before.get(k) is not v)
        dmn.parse()
    except Exception as exc:
        raise _dmn_error(exc, file, root, decision) from exc
    if decision_id in decisions:
        raise CatalogError(f"decision {decision_id!r} is also declared in {decisions[decision_id]}: decision ids "
                           "are unique within a group", file, decision_id, decision.sourceline)
    decisions[decision_id] = file
    if not dmn.decision.decisionTables:
        raise CatalogError(f"decision {decision_id!r} has no decisionTable: SpiffWorkflow runs decision tables only",
                           file, decision_id, decision.sourceline)


def _dmn_error(exc: Exception, file: str, root: Any, decision: Any) -> CatalogError:
    """A DMN parse failure at the element SpiffWorkflow was reading (it names one only for some errors)."""
    element = None
    if isinstance(exc, ValidationException) and exc.id:
        element = next(iter(root.xpath("//*[@id=$i]", i=exc.id)), None)
    if element is None:
        element = _failing_element(exc)
    if element is None:
        element = decision
    if isinstance(exc, ValidationException):
        message = str(exc.args[0]).strip() if exc.args else str(exc)
    elif isinstance(exc, KeyError):
        message = f"missing attribute {exc.args[0]!r}" if exc.args else "missing attribute"
    else:
        message = f"{type(exc).__name__}: {exc}"
    return CatalogError(message, file, element.get("id") or None, element.sourceline)


def _failing_element(exc: BaseException) -> Any | None:
    """The XML element the innermost SpiffWorkflow frame was working on (its most recently bound one)."""
    frames = []
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None  # skip the frame that caught it
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        elements = [v for v in frame.f_locals.values() if isinstance(v, etree._Element)]
        if elements:
            return elements[-1]
    return None


class Catalog:
    """Processes, start points and catch points of one BPMN folder. Build it with :meth:`load`."""

    def __init__(self, processes: dict[str, ProcessEntry], starts: list[StartPoint], catches: list[CatchPoint],
                 throws: list[ThrowPoint], messages: dict[str, set[str]],
                 definitions: dict[str, dict[str, str]] | None = None) -> None:
        self.processes = processes
        # group -> process id -> the file that defines it: every <bpmn:process>, called ones included
        self.definitions = definitions if definitions is not None else {}
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

    @classmethod
    def empty(cls) -> Catalog:
        """A catalog of no processes (instances then run on the spec versions stored with them)."""
        return cls({}, [], [], [], {})

    # -- lookups used by the router ---------------------------------------------------------------------------
    def start_points(self, scoped: ScopedName) -> list[StartPoint]:
        return [s for s in self._starts.get(scoped.name, ()) if in_scope(scoped.group, s.group)]

    def nearest_starts(self, scoped: ScopedName) -> list[StartPoint]:
        """The Message Start Events in scope in the shallowest group that has one: one per process, by key.

        A message starts the nearest Message Start Event; more than one here means the name is ambiguous in this
        scope (the caller names them in its refusal). A process with two start events on the message keeps the
        first in document order.
        """
        starts = self.start_points(scoped)
        if not starts:
            return []
        nearest = min(depth(s.group) for s in starts)
        by_process: dict[str, StartPoint] = {}
        for s in starts:
            if depth(s.group) == nearest:
                by_process.setdefault(s.process_key, s)
        return [by_process[key] for key in sorted(by_process)]

    def pick_start(self, scoped: ScopedName) -> StartPoint | None:
        """The one nearest Message Start Event, or None: none in scope, or two processes equally near."""
        nearest = self.nearest_starts(scoped)
        return nearest[0] if len(nearest) == 1 else None

    def catch_points(self, scoped: ScopedName) -> list[CatchPoint]:
        return [c for c in self._catches.get(scoped.name, ()) if in_scope(scoped.group, c.group)]

    def catch_shapes(self, scoped: ScopedName) -> list[tuple[Property, ...]]:
        """Distinct sets of correlation properties the catches of this message evaluate (usually one), then those
        of the Message Start Events that start one instance per correlation key (their key is locked and indexed
        like a catch's)."""
        shapes: dict[tuple[Property, ...], None] = {}
        for c in self.catch_points(scoped):
            shapes.setdefault(c.properties, None)
        for s in self.start_points(scoped):
            if s.one_per_key:
                shapes.setdefault(s.properties, None)
        return list(shapes)

    def one_per_key_starts(self, process_key: str) -> list[StartPoint]:
        """The Message Start Events of a process that start one instance per correlation key."""
        entry = self.processes.get(process_key)
        if entry is None or not entry.one_per_key_starts:
            return []
        return [s for points in self._starts.values() for s in points
                if s.process_key == process_key and s.one_per_key]

    def knows_message(self, name: str) -> bool:
        return name in self.messages

    def process(self, key: str) -> ProcessEntry | None:
        return self.processes.get(key)

    @property
    def timer_starts(self) -> list[TimerStartPoint]:
        return [t for key in sorted(self.processes) for t in self.processes[key].timer_starts]

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
        dmn_by_group: dict[str, list[Path]] = defaultdict(list)
        for pattern, into in (("*.bpmn", by_group), ("*.dmn", dmn_by_group)):
            for path in sorted(root.rglob(pattern)):
                group = path.parent.relative_to(root).as_posix()
                into["" if group == "." else group].append(path)
        processes: dict[str, ProcessEntry] = {}
        starts: list[StartPoint] = []
        catches: list[CatchPoint] = []
        throws: list[ThrowPoint] = []
        messages: dict[str, set[str]] = defaultdict(set)
        definitions: dict[str, dict[str, str]] = {}
        for group in sorted(by_group.keys() | dmn_by_group.keys()):
            definitions[group] = {}
            for entry in _load_group(group, by_group.get(group, []), dmn_by_group.get(group, []),
                                     definitions[group]):
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
        return cls(processes, starts, catches, throws, dict(messages), definitions)

    def defining_file(self, process_id: str, group: str) -> str | None:
        """The file that defines ``process_id`` (a called process too), looked for in ``group`` first (where a
        call activity finds it), then in every other group."""
        found = self.definitions.get(group, {}).get(process_id)
        if found is not None:
            return found
        return next((files[process_id] for files in self.definitions.values() if process_id in files), None)


def _load_group(group: str, files: list[Path], dmn_files: list[Path], origin: dict[str, str]
                ) -> Iterable[ProcessEntry]:
    """The group's executable top-level processes; ``origin`` is filled with process id -> defining file."""
    parser = SpiffBpmnParser()
    contents = hashlib.sha256()
    for path in files:
        try:
            data = path.read_bytes()
            contents.update(path.name.encode() + b"\0" + data + b"\0")
            before = set(parser.process_parsers)
            parser.add_bpmn_file(str(path))
            origin.update({pid: str(path) for pid in set(parser.process_parsers) - before})
        except Exception as exc:
            raise _error_from(exc, str(path)) from exc
    decisions: dict[str, str] = {}  # decision id -> file
    for path in dmn_files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise _error_from(exc, str(path)) from exc
        # after the BPMN files, so a group without DMN keeps the spec version it had before DMN was read
        contents.update(path.name.encode() + b"\0" + data + b"\0")
        _add_dmn(parser, path, data, decisions)
    version = contents.hexdigest()[:16]
    top = [pid for pid, pp in parser.process_parsers.items() if pp.parent is None and pp.process_executable]
    entries = []
    for pid in sorted(top):
        try:
            spec = parser.get_spec(pid)
            subs = parser.get_subprocess_specs(pid)
        except Exception as exc:
            raise _error_from(exc, origin.get(pid)) from exc
        key = process_key(group, pid)
        node = parser.process_parsers[pid].node
        entries.append(ProcessEntry(key, pid, group, origin.get(pid, ""), version, spec, subs,
                                    _interrupting_starts(node), _one_per_key_starts(node, origin.get(pid))))
    return entries


def _one_per_key_starts(process_node: Any, file: str | None) -> frozenset[str]:
    """Ids of the process's Message Start Events that declare :data:`ONE_INSTANCE_PER_KEY` (or whose process
    does); a value other than true or false, or the property on a start event without a message, is a load error."""
    declared = _flag(process_node, file)
    starts = process_node.xpath("./bpmn:startEvent", namespaces={"bpmn": _BPMN})
    out, on_messages = set(), False
    for start in starts:
        own = _flag(start, file)
        on_message = bool(start.xpath("./bpmn:messageEventDefinition", namespaces={"bpmn": _BPMN}))
        on_messages |= on_message
        if own and not on_message:
            raise CatalogError(f"{ONE_INSTANCE_PER_KEY} is for Message Start Events; this start event has no "
                               "message", file, start.get("id"), start.sourceline)
        if on_message and (own if own is not None else declared):
            out.add(str(start.get("id")))
    if declared and not on_messages:
        raise CatalogError(f"process declares {ONE_INSTANCE_PER_KEY} but has no Message Start Event", file,
                           process_node.get("id"), process_node.sourceline)
    return frozenset(out)


_BPMN = "http://www.omg.org/spec/BPMN/20100524/MODEL"


def _flag(node: Any, file: str | None) -> bool | None:
    """The element's own :data:`ONE_INSTANCE_PER_KEY` property: True, False, or None when it has none."""
    value = (SpiffTaskParser._parse_extensions(node).get("properties") or {}).get(ONE_INSTANCE_PER_KEY)
    if value is None:
        return None
    if value.strip().lower() not in ("true", "false"):
        raise CatalogError(f"{ONE_INSTANCE_PER_KEY} is {value!r}; write true or false", file, node.get("id"),
                           node.sourceline)
    return bool(value.strip().lower() == "true")


def _interrupting_starts(process_node: Any) -> frozenset[str]:
    """Ids of the start events of the process's event subprocesses that interrupt it (``isInterrupting`` is true
    unless it says otherwise, as BPMN defines)."""
    starts = process_node.xpath(".//bpmn:subProcess[@triggeredByEvent='true']/bpmn:startEvent",
                                namespaces={"bpmn": "http://www.omg.org/spec/BPMN/20100524/MODEL"})
    return frozenset(str(s.get("id")) for s in starts if s.get("isInterrupting", "true").lower() != "false")


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
                one_per_key = ts.bpmn_id in entry.one_per_key_starts
                if one_per_key and not props:
                    raise CatalogError(
                        f"{ONE_INSTANCE_PER_KEY}: message {md.name!r} has no correlation property to key the "
                        "instances by", entry.file, ts.bpmn_id, _locate(entry.file, ts.bpmn_id))
                starts.append(StartPoint(md.name, entry.key, entry.process_id, entry.group, ts.bpmn_id, var, props,
                                         one_per_key))
                if isinstance(ed, MultipleEventDefinition) and ed.parallel:
                    # once one of its messages started an instance, the start waits for the others like a catch
                    catches.append(CatchPoint(md.name, entry.key, entry.process_id, entry.group, ts.bpmn_id,
                                              "parallel_start", None, var, props))
                continue
            kind = "event_subprocess_start" if isinstance(ts, StartEventMixin) else _catch_kind(ts)
            if kind is not None:
                interrupting = getattr(ts, "cancel_activity", None) if kind == "boundary" else \
                    ts.bpmn_id in entry.interrupting_starts if kind == "event_subprocess_start" else None
                catches.append(CatchPoint(md.name, entry.key, entry.process_id, entry.group, ts.bpmn_id, kind,
                                          interrupting, var, props,
                                          _as_properties(getattr(md, "process_correlations", None) or ())))
                continue
            throw_kind = _throw_kind(ts)
            if throw_kind is not None:
                throws.append(ThrowPoint(md.name, entry.key, ts.bpmn_id, throw_kind, getattr(md, "expression", None),
                                         props))
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
