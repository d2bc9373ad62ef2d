"""The script environment: what BPMN scripts and expressions can name, and the host functions they can call.

Part of the engine layer (only :mod:`.engine` uses it). Scripts see Spiff Arena's default environment, so Arena
diagrams run unchanged: ``datetime`` (the class), ``timedelta``, ``time``, ``random``, ``json``, ``uuid``, ``re``,
``decimal``, ``calendar``, ``_strptime``, ``dateparser`` and ``pytz`` (the last two from the ``scripts`` extra),
plus the builtins. ``import`` works only for the modules of that environment (:data:`IMPORTABLE`), as in Arena.

The host adds functions (``SpiffMessages(app, script_functions=...)``). One that takes a ``context`` keyword gets a
:class:`ScriptContext`: the instance, process, task and the caller whose request caused the run. Names of the
environment and host functions are never taken from task data or payloads: a field called ``time`` cannot replace
the module. Conditions and other expressions of a task see the whole task data, as in SpiffWorkflow (``'x' in
vars()`` is true when the data has ``x``). Correlation retrieval expressions see none of this: they run on the
payload, untrusted, with builtins only and only the names they read (the environment's own ``evaluate``, which
SpiffWorkflow calls for them without an external context).

This is not a sandbox: a BPMN author is trusted like code.
"""

from __future__ import annotations

import builtins
import calendar
import contextvars
import datetime as _datetime
import decimal
import functools
import importlib
import inspect
import json
import random
import re
import time
import types
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine, TaskDataEnvironment

from .correlation import compile_expression, evaluate

_strptime = importlib.import_module("_strptime")  # Arena offers it; it has no stubs
EXTRA = "scripts"  # the package extra that installs dateparser and pytz
OPTIONAL_MODULES = ("dateparser", "pytz")


class MissingExtra(ImportError):
    """A script used a module of the ``scripts`` extra that is not installed."""


class _Optional:
    """A module of the extra, imported on first use; without the extra, using it says which extra to install."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: types.ModuleType | None = None

    def load(self) -> types.ModuleType:
        if self._module is None:
            try:
                self._module = importlib.import_module(self._name)
            except ImportError as exc:
                raise MissingExtra(
                    f"scripts use {self._name!r}, which comes with the {EXTRA!r} extra: "
                    f"pip install 'quart-spiff-messages[{EXTRA}]'") from exc
        return self._module

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self.load(), attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.load()(*args, **kwargs)  # type: ignore[operator]

    def __repr__(self) -> str:
        return f"<module {self._name!r} of the {EXTRA!r} extra, imported on first use>"


_OPTIONAL = {name: _Optional(name) for name in OPTIONAL_MODULES}

# Spiff Arena's default script environment (its CustomBpmnScriptEngine), names and meanings alike.
ENVIRONMENT: dict[str, Any] = {
    "_strptime": _strptime, "calendar": calendar, "datetime": _datetime.datetime, "decimal": decimal,
    "json": json, "random": random, "re": re, "time": time, "timedelta": _datetime.timedelta, "uuid": uuid,
    **_OPTIONAL,
}
IMPORTABLE: frozenset[str] = frozenset({"_strptime", "calendar", "datetime", "decimal", "json", "random", "re", "time",
                                        "uuid", *OPTIONAL_MODULES})


def _guarded_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
    """``import`` inside a script: only the modules of the environment."""
    top = name.partition(".")[0]
    if level != 0 or top not in IMPORTABLE:
        raise ImportError(f"scripts may import only {', '.join(sorted(IMPORTABLE))}; not {name!r}")
    if top in _OPTIONAL:
        _OPTIONAL[top].load()
    return importlib.__import__(name, globals, locals, fromlist, level)


SCRIPT_BUILTINS: dict[str, Any] = {**vars(builtins), "__import__": _guarded_import}


def environment_names() -> frozenset[str]:
    """Every name a script can use without assigning it first (the ``check`` command's list)."""
    return frozenset(ENVIRONMENT) | frozenset(n for n in vars(builtins) if not n.startswith("_"))


# -- host functions ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunInfo:
    """The instance a run is for (set by the transaction core before it runs an instance)."""

    instance_id: int
    process_id: str
    process_group: str
    process_model_identifier: str
    caller: Any = None


@dataclass(frozen=True)
class ScriptContext:
    """What a host function is told about the script that calls it."""

    process_instance_id: int | None
    process_id: str | None
    process_group: str | None
    process_model_identifier: str | None
    task_guid: str
    element_id: str
    caller: Any  # what the host's identify/authorize hook returned for the request that caused the run; None else


@dataclass(frozen=True)
class HostFunction:
    fn: Callable[..., Any]
    wants_context: bool


def host_function(fn: Callable[..., Any]) -> HostFunction:
    """A host function; it gets the :class:`ScriptContext` when it has a parameter named ``context``."""
    try:
        wants = "context" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        wants = False
    return HostFunction(fn, wants)


# The caller of the request being served, for the runs it causes (set by the API's access check).
current_caller: contextvars.ContextVar[Any] = contextvars.ContextVar("spiff_messages_caller", default=None)


def run_info(task: Any) -> RunInfo | None:
    wf = getattr(task.workflow, "top_workflow", None) or task.workflow
    info = getattr(wf, "_spiff_messages_run", None)
    return info if isinstance(info, RunInfo) else None


def script_context(task: Any) -> ScriptContext:
    info = run_info(task)
    return ScriptContext(
        process_instance_id=info.instance_id if info else None, process_id=info.process_id if info else None,
        process_group=info.process_group if info else None,
        process_model_identifier=info.process_model_identifier if info else None,
        task_guid=str(task.id), element_id=str(task.task_spec.bpmn_id), caller=info.caller if info else None)


@functools.lru_cache(maxsize=1024)
def compiled_script(script: str) -> types.CodeType:
    """A script task's code, compiled once per text (as ``exec`` of the text would: SpiffWorkflow finds the line
    of an error by the file name ``<string>``)."""
    return compile(script, "<string>", "exec")


# -- the environment SpiffWorkflow calls ---------------------------------------------------------------------------
class SafeExpressionEnvironment(TaskDataEnvironment):  # type: ignore[misc]
    """Two kinds of expression come here, told apart by how SpiffWorkflow calls.

    With an external context (the script engine's names: every condition, payload, cardinality or timer expression
    of a task) the expression runs on the whole task data, as SpiffWorkflow runs it, so ``'x' in vars()`` sees
    ``x``; the environment's names still win over data of the same name. Without one, it is a correlation
    retrieval expression SpiffWorkflow evaluates on a message's payload: that payload is untrusted, so the
    expression sees only the names it reads and never a callee or a dunder from it (:func:`.correlation.evaluate`).
    """

    def evaluate(self, expression: str, context: Mapping[str, Any],
                 external_context: Mapping[str, Any] | None = None) -> Any:
        if external_context is None:
            return evaluate(expression, context, self.globals)
        scope = {k: v for k, v in context.items() if not (k.startswith("__") and k.endswith("__"))}
        scope.update(self.globals)
        scope.update(external_context)
        scope["__builtins__"] = SCRIPT_BUILTINS
        return eval(compile_expression(expression).code, scope)

    def execute(self, script: str, context: dict[str, Any], external_context: Mapping[str, Any] | None = None) -> bool:
        """Run ``script`` on the task data ``context``; what it assigns becomes task data.

        The environment's names win over data of the same name (and that data stays as it was); functions, modules
        and the environment's own objects are not written back (they cannot be serialized).
        """
        env = {**self.globals, **(external_context or {})}
        scope: dict[str, Any] = {**context, **env, "__builtins__": SCRIPT_BUILTINS}
        exec(compiled_script(script), scope)
        for name, value in scope.items():
            if name == "__builtins__" or (name in env and env[name] is value):
                continue
            if callable(value) or isinstance(value, (types.ModuleType, _Optional)):
                continue
            context[name] = value
        for name in [n for n in context if n not in scope]:  # ``del x`` in the script
            del context[name]
        return True


class ScriptEngine(PythonScriptEngine):  # type: ignore[misc]
    """SpiffWorkflow's script engine with Arena's environment and the host's functions bound to each task.

    ``call_service`` hands service tasks to ``on_service`` (the engine's: it makes the task wait for the host).
    """

    def __init__(self, functions: Mapping[str, Callable[..., Any]] | None = None,
                 on_service: Callable[[Any, str, Mapping[str, Any]], Any] | None = None) -> None:
        super().__init__(environment=SafeExpressionEnvironment())
        self.functions: Mapping[str, Callable[..., Any]] = functions if functions is not None else {}
        self._wrapped: dict[Callable[..., Any], HostFunction] = {}
        self.on_service = on_service

    def names(self, task: Any, external_context: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Arena's environment, then the host functions bound to ``task`` (the host's win over Arena's names)."""
        names = dict(ENVIRONMENT)
        if self.functions:
            context = script_context(task)
            for name, fn in self.functions.items():
                hf = self._wrapped.get(fn)
                if hf is None:
                    hf = self._wrapped[fn] = host_function(fn)
                names[name] = partial(hf.fn, context=context) if hf.wants_context else hf.fn
        names.update(external_context or {})
        return names

    def evaluate(self, task: Any, expression: str, external_context: Mapping[str, Any] | None = None) -> Any:
        return super().evaluate(task, expression, self.names(task, external_context))

    def execute(self, task: Any, script: str, external_context: Mapping[str, Any] | None = None) -> Any:
        return super().execute(task, script, self.names(task, external_context))

    def call_service(self, task: Any, operation_name: str = "", operation_params: Mapping[str, Any] | None = None,
                     **kwargs: Any) -> Any:
        """Replaces SpiffWorkflow 3.2's, whose error path hides the cause behind ``name 'script' is not
        defined``."""
        if self.on_service is None:
            raise NotImplementedError(f"service task {task.task_spec.bpmn_id!r} calls {operation_name!r}, and "
                                      "nothing runs service tasks here")
        return self.on_service(task, operation_name, operation_params or {})
