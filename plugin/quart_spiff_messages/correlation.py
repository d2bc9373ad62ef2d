"""Correlation values: evaluate retrieval expressions on untrusted payloads and encode them canonically.

Retrieval expressions are written by the BPMN author; payloads come from outside. The rule that keeps a payload
from changing what an expression means: a name the expression *calls* (``str(order_id)``) is a function and is
never taken from the payload; every other free name is a payload field. Dunder names are never taken from the
payload. A field the payload lacks makes the expression fail, and a failed expression simply does not match.
The engine's script environment uses the same evaluator, so what we index is exactly what SpiffWorkflow checks.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import CodeType
from typing import Any

_BUILTINS: dict[str, Any] = dict(vars(builtins))


@dataclass(frozen=True)
class CompiledExpression:
    source: str
    code: CodeType
    value_names: tuple[str, ...]


class ExpressionError(ValueError):
    """A retrieval expression is not a valid Python expression."""


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> CompiledExpression:
    """Compile once; remember which free names are values (read from the context) and which are callees."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"{source!r} is not a Python expression: {exc.msg}") from exc
    called: set[str] = set()
    loaded: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            called.add(node.func.id)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            loaded.add(node.id)
    values = tuple(sorted(n for n in loaded - called if not (n.startswith("__") and n.endswith("__"))))
    return CompiledExpression(source, compile(tree, f"<expression {source!r}>", "eval"), values)


def evaluate(source: str, context: Mapping[str, Any], extra_globals: Mapping[str, Any] | None = None) -> Any:
    """Evaluate ``source`` with the names it reads taken from ``context`` (never its callees, never a name of
    ``extra_globals``: data cannot replace what the environment provides)."""
    compiled = compile_expression(source)
    scope: dict[str, Any] = {"__builtins__": _BUILTINS}
    if extra_globals:
        scope.update(extra_globals)
    for name in compiled.value_names:
        if name in context and not (extra_globals and name in extra_globals):
            scope[name] = context[name]
    return eval(compiled.code, scope)


def _normalize(value: Any) -> Any:
    """JSON-shaped copy where integral floats become ints, so ``7.0`` and ``7`` are one key."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return {str(k): _normalize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    raise TypeError(f"correlation value of type {type(value).__name__} is not JSON data")


def canonical(values: Mapping[str, Any]) -> str:
    """Canonical JSON for a key's values: sorted keys, no spaces; ``1``, ``true`` and ``"1"`` stay distinct."""
    return json.dumps(_normalize(values), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(canonical_values: str) -> str:
    """Fixed-width index key for a canonical encoding (values can be long; the index stays small)."""
    return hashlib.sha256(canonical_values.encode("utf-8")).hexdigest()[:40]


@dataclass(frozen=True)
class Property:
    """One correlation property of a catch: its name, its retrieval expression and the keys that use it."""

    name: str
    expression: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class KeyValue:
    key: str
    values: Mapping[str, Any]
    canonical: str
    digest: str


def key_values(properties: tuple[Property, ...], payload: Mapping[str, Any]) -> list[KeyValue] | None:
    """The correlation keys a payload carries for one catch definition.

    ``None`` when any property cannot be evaluated on the payload: SpiffWorkflow recomputes every property when
    it catches, so such a payload could not be delivered to that catch at all.
    """
    by_key: dict[str, dict[str, Any]] = {}
    for prop in properties:
        try:
            value = evaluate(prop.expression, payload)
        except Exception:
            return None
        for key in prop.keys:
            by_key.setdefault(key, {})[prop.name] = value
    out = []
    for key, values in sorted(by_key.items()):
        try:
            enc = canonical(values)
        except TypeError:
            return None
        out.append(KeyValue(key, values, enc, digest(enc)))
    return out


def expected_key_value(key: str, values: Mapping[str, Any]) -> KeyValue:
    enc = canonical(values)
    return KeyValue(key, values, enc, digest(enc))
