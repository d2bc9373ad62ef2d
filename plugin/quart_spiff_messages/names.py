"""Names on the wire: ``orders:payment_failed`` is message ``payment_failed`` scoped to group ``orders``.

Colons stand for slashes because a slash cannot travel inside one path segment. A group prefix scopes matching
to that group and its sub-groups; no prefix means every group.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from .errors import InvalidName, InvalidProcessId

MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class ScopedName:
    group: str  # "" = every group
    name: str

    @property
    def key(self) -> str:
        """The process key this name stands for: ``group/name``, or ``name`` at the root."""
        return process_key(self.group, self.name)


def process_key(group: str, process_id: str) -> str:
    """How a process is known across groups: ``group/process_id``, or ``process_id`` in the root group."""
    return f"{group}/{process_id}" if group else process_id


# -- the group-scope rule ----------------------------------------------------------------------------------------
# A prefix scopes to that group and its sub-groups, by path segment ("a" covers "a" and "a/b", never "ab"). The
# catalog asks in_scope; the store matches waits by group_path prefix (store/statements.py in_group) and buffered
# messages with ancestor_groups. tests/test_properties.py checks that the three agree, in SQL too.
def in_scope(prefix: str, group: str) -> bool:
    """True when ``group`` is ``prefix`` or one of its sub-groups (path segments, not string prefixes)."""
    return not prefix or group == prefix or group.startswith(prefix + "/")


def group_path(group: str) -> str:
    """A group as stored with a wait: ``/`` for the root, ``/a/b/`` for group ``a/b``."""
    return f"/{group}/" if group else "/"


def ancestor_groups(group: str) -> list[str]:
    """The prefixes whose scope covers ``group``: "", "a", "a/b" for group "a/b"."""
    parts = group.split("/") if group else []
    return [""] + ["/".join(parts[: i + 1]) for i in range(len(parts))]


def depth(group: str) -> int:
    """How deep a group is: 0 at the root (the nearest Message Start Event is the shallowest)."""
    return len(group.split("/")) if group else 0


def _segment_flaw(segment: str, whole: str) -> str | None:
    if not segment.strip():
        return f"{whole!r} has an empty segment"
    if segment in (".", "..") or "/" in segment or "\\" in segment:
        return f"{whole!r} has a path segment {segment!r}"
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in segment):
        return f"{whole!r} contains control characters"
    return None


def parse_modified_name(modified: str, error: type[InvalidName | InvalidProcessId] = InvalidName,
                        field: str | None = None) -> ScopedName:
    """Split ``a:b:name`` into group ``a/b`` and name ``name``, refusing names no BPMN file could declare.

    The refusal is ``error`` (a message name's by default; :func:`parse_process_id` a process id's), with
    ``field`` naming where the name came from: one bad name is one error code wherever it is sent.
    """

    def refused(why: str) -> InvalidName | InvalidProcessId:
        return error(why, field=field) if field else error(why)

    if not modified or len(modified) > MAX_NAME_LENGTH:
        raise refused(f"names are 1 to {MAX_NAME_LENGTH} characters long")
    *groups, name = modified.split(":")
    for segment in [*groups, name]:
        flaw = _segment_flaw(segment, modified)
        if flaw is not None:
            raise refused(flaw)
    return ScopedName("/".join(groups), name)


def parse_process_id(modified: str, field: str | None = None) -> ScopedName:
    """A process id with its group as a colon prefix; ``invalid_process_id`` when it cannot be one."""
    return parse_modified_name(modified, InvalidProcessId, field)


def modified(group: str, name: str) -> str:
    return ":".join([*(group.split("/") if group else []), name])
