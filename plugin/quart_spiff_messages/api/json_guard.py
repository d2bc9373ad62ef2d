"""Hostile bytes at the edge: what comes in is finite numbers and valid Unicode without NUL; what goes out is JSON.

``json.loads`` reads ``1e400`` as infinity and ``"\\ud800"`` as a lone surrogate; neither survives the database
(PostgreSQL refuses ``Infinity`` and text columns refuse NUL; UTF-8 cannot encode a lone surrogate) nor the answer
(``Infinity`` is not JSON). So incoming data is checked once, on the parsed value, and every answer is encoded with
``allow_nan=False``, falling back to a cleaned copy for whatever old rows hold.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import unquote_to_bytes

# NUL, and any surrogate: a decoded JSON string holds only lone ones (json.loads joins valid pairs).
_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# The only ways NUL or a surrogate gets into a string json.loads reads from valid UTF-8 (the escape of an escaped
# backslash matches too: that only costs a walk).
_BAD_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def may_hold_bad_strings(text: str) -> bool:
    """False when the JSON text cannot decode to a string with NUL or a surrogate: no string walk is needed."""
    return "\\u" in text and _BAD_ESCAPE.search(text) is not None


def scan(value: Any, strings: bool) -> tuple[int, bool]:
    """Nesting depth, and whether every number is finite and (when ``strings``) every string and key clean.

    One walk without recursion, on the hot path of every message; ``strings`` is ``may_hold_bad_strings(text)``.
    """
    stack: list[tuple[Any, int]] = [([value], 0)]  # the wrapper, at depth 0, lets a bare leaf be checked too
    deepest, clean = 0, True
    pop, push, isfinite, bad = stack.pop, stack.append, math.isfinite, _BAD_CHARACTER.search
    while stack:  # only containers are pushed; leaves are checked where they are met
        item, depth = pop()
        deepest = depth if depth > deepest else deepest
        if type(item) is dict:
            if strings and bad("".join(item)):
                clean = False
            item = item.values()
        for child in item:
            kind = type(child)
            if kind is dict or kind is list:
                push((child, depth + 1))
            elif kind is float:
                if not isfinite(child):
                    clean = False
            elif strings and kind is str and bad(child):
                clean = False
    return deepest, clean


def _step(path: str, key: str) -> str:
    return (f"{path}.{key}" if path else key) if _PLAIN_KEY.match(key) else f"{path}[{json.dumps(key)}]"


def _string_flaw(text: str) -> str | None:
    found = _BAD_CHARACTER.search(text)
    if found is None:
        return None
    return "contains NUL (U+0000)" if found.group() == "\x00" else \
        f"contains a lone surrogate (U+{ord(found.group()):04X}); strings must be valid Unicode"


def flaw(value: Any, path: str = "") -> tuple[str, str] | None:
    """Where the first unclean number, string or key is, and what is wrong with it (the slow path, for errors)."""
    if isinstance(value, dict):
        for key, child in value.items():
            where = _step(path, key)
            why = _string_flaw(key)
            if why is not None:
                return where, f"has a key that {why}"
            found = flaw(child, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found = flaw(child, f"{path}[{index}]")
            if found is not None:
                return found
    elif isinstance(value, float) and not math.isfinite(value):
        return path, f"is not a finite number ({value}); numbers must be finite"
    elif isinstance(value, str):
        why = _string_flaw(value)
        if why is not None:
            return path, why
    return None


def query_flaw(query_string: bytes) -> tuple[str, str] | None:
    """The first query parameter whose name or value is not valid UTF-8 once percent-decoded, or holds NUL.

    Werkzeug keeps undecodable escapes as literal ``%ED%A0%80`` text and decodes ``%00`` to NUL, so the raw query
    string is what can tell; a plain ASCII query without ``%`` (the usual send) is passed over at once.
    """
    if b"%" not in query_string and query_string.isascii() and b"\x00" not in query_string:
        return None
    for part in query_string.split(b"&"):
        raw_name, _, raw_value = part.partition(b"=")
        name = unquote_to_bytes(raw_name.replace(b"+", b" ")).decode("utf-8", "replace")
        for raw in (raw_name, raw_value):
            try:
                text = unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError:
                return name, "is not valid UTF-8 once percent-decoded (a lone surrogate or a broken sequence)"
            if "\x00" in text:
                return name, "contains NUL (U+0000)"
    return None


def path_is_utf8(raw_path: bytes | None) -> bool:
    """False when the raw request path percent-decodes to bytes that are not UTF-8 (servers replace them)."""
    if not raw_path or (b"%" not in raw_path and raw_path.isascii()):
        return True
    try:
        unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _cleaned(value: Any) -> Any:
    """A copy that any JSON encoder takes: non-finite numbers become null, surrogates U+FFFD, the rest text."""
    if isinstance(value, dict):
        return {_cleaned_key(k): _cleaned(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_cleaned(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int)):
        return value
    return _SURROGATE.sub("\ufffd", value if isinstance(value, str) else str(value))


def _cleaned_key(key: Any) -> Any:
    if key is None or isinstance(key, (bool, int)):
        return key
    if isinstance(key, float) and not math.isfinite(key):
        return str(key)
    return _SURROGATE.sub("\ufffd", key if isinstance(key, str) else str(key))


def dumps_text(value: Any, indent: int | None = None) -> str:
    """JSON text (RFC 8259) of anything an answer holds, whatever old rows stored; never raises on content."""
    try:
        text = json.dumps(value, default=str, allow_nan=False, ensure_ascii=False, indent=indent)
        text.encode("utf-8")  # a lone surrogate cannot be sent; ensure_ascii=False lets this find it
        return text
    except (ValueError, UnicodeEncodeError):
        return json.dumps(_cleaned(value), allow_nan=False, ensure_ascii=False, indent=indent)


def dumps(value: Any) -> bytes:
    """The UTF-8 body of a JSON answer: the fast encoder first, the cleaned copy only when that one refuses."""
    try:
        return json.dumps(value, default=str, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return json.dumps(_cleaned(value), allow_nan=False, ensure_ascii=False).encode("utf-8")
