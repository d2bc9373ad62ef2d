"""Names on the wire: ``orders:payment_failed`` is message ``payment_failed`` scoped to group ``orders``.

Colons stand for slashes because a slash cannot travel inside one path segment. A group prefix scopes matching
to that group and its sub-groups; no prefix means every group.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

MAX_NAME_LENGTH = 255


class InvalidName(ValueError):
    """The name cannot be a message or process name; the message says why."""


@dataclass(frozen=True)
class ScopedName:
    group: str  # "" = every group
    name: str

    def in_scope(self, group: str) -> bool:
        return in_scope(self.group, group)


def in_scope(prefix: str, group: str) -> bool:
    """True when ``group`` is ``prefix`` or one of its sub-groups (path segments, not string prefixes)."""
    return not prefix or group == prefix or group.startswith(prefix + "/")


def _check_segment(segment: str, whole: str) -> None:
    if not segment.strip():
        raise InvalidName(f"{whole!r} has an empty segment")
    if segment in (".", "..") or "/" in segment or "\\" in segment:
        raise InvalidName(f"{whole!r} has a path segment {segment!r}")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in segment):
        raise InvalidName(f"{whole!r} contains control characters")


def parse_modified_name(modified: str) -> ScopedName:
    """Split ``a:b:name`` into group ``a/b`` and name ``name``, refusing names no BPMN file could declare."""
    if not modified or len(modified) > MAX_NAME_LENGTH:
        raise InvalidName(f"names are 1 to {MAX_NAME_LENGTH} characters long")
    *groups, name = modified.split(":")
    for segment in [*groups, name]:
        _check_segment(segment, modified)
    return ScopedName("/".join(groups), name)


def modified(group: str, name: str) -> str:
    return ":".join([*(group.split("/") if group else []), name])
