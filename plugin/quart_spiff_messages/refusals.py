"""Why a message was not accepted, as data a client can act on (``400 message_not_accepted``'s ``reason``).

Asked in the router's refusal path only, inside the send's own transaction, after nothing took the message. The
reasons, in the order they are looked for:

- ``no_receiver``: no process anywhere catches or starts on this name;
- ``out_of_scope``: some do, but only in groups the prefix excludes (``groups`` names them);
- ``ambiguous_start``: several processes equally near start on it (``process_model_identifiers``);
- ``instance_active``: the process starts one instance per correlation key and an active instance holds this
  payload's key (``process_instance_id``, ``process_model_identifier``, ``correlation_keys``); that instance takes
  the message only where it waits for it;
- ``missing_correlation_properties``: the payload lacks what the catches' retrieval expressions read
  (``properties`` names them);
- ``wait_ended``: an instance waited for these key values, but that wait has ended (``process_instance_id``);
- ``no_matching_wait``: ``waiting`` instances wait for this name (counted up to 1,000: ``waiting_at_least``),
  none for these key values (``correlation_keys``: the values computed from this payload; never another
  instance's values).

The text (``message``, also the row's ``failure_cause``) says the same in words.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .catalog import Catalog, StartPoint
from .correlation import KeyValue, Property, evaluate, key_values
from .names import ScopedName
from .store import Tx, active_keys
from .store.listing import WAITING_CAP, ended_receives, waiting_instances


@dataclass(frozen=True)
class Refusal:
    kind: str
    text: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.details}


def explain(tx: Tx, catalog: Catalog, scoped: ScopedName, payload: Mapping[str, Any],
            keys: list[KeyValue]) -> Refusal:
    """Why nothing took message ``scoped`` with ``payload`` (``keys``: what the router computed from it)."""
    name = scoped.name
    where = f" in group {scoped.group!r} or below" if scoped.group else ""
    everywhere = [*catalog.starts.get(name, ()), *catalog.catches.get(name, ())]
    if not everywhere:
        return Refusal("no_receiver", f"No process uses message {name!r}: none catches or starts on it.")
    in_scope = [*catalog.start_points(scoped), *catalog.catch_points(scoped)]
    if not in_scope:
        groups = sorted({p.group for p in everywhere})
        return Refusal("out_of_scope", f"No process in group {scoped.group!r} or below uses message {name!r}; it "
                       f"is caught or started only in groups {groups}.", {"groups": groups})
    nearest = [s.process_key for s in catalog.nearest_starts(scoped)]
    if len(nearest) > 1:
        return Refusal("ambiguous_start", f"Message {name!r} starts several processes ({', '.join(nearest)}) and "
                       "no waiting instance correlates: send it with a group prefix to choose one.",
                       {"process_model_identifiers": nearest})
    if len(nearest) == 1:
        active = _active_instance(tx, catalog.nearest_starts(scoped)[0], payload)
        if active is not None:
            return active
    missing = _missing(in_scope, payload)
    if missing and not keys:
        return Refusal("missing_correlation_properties",
                       f"The payload of message {name!r} lacks what its correlation properties "
                       f"{', '.join(missing)} read (their retrieval expressions fail on it).",
                       {"properties": missing})
    computed = {kv.key: dict(kv.values) for kv in keys}
    ended = _ended_wait(tx, name, computed)
    if ended is not None:
        return Refusal("wait_ended", f"Process instance {ended} waited for message {name!r} with these key "
                       "values, but that wait has ended.", {"process_instance_id": ended,
                                                             "correlation_keys": computed})
    waiting = waiting_instances(tx, name, scoped.group)
    if waiting:
        count = f"at least {waiting}" if waiting >= WAITING_CAP else str(waiting)
        return Refusal("no_matching_wait", f"No waiting process instance{where} correlates with message {name!r}: "
                       f"{count} process instance(s) wait for it, none for the key values {computed} computed "
                       "from this payload.", {"waiting": waiting, "waiting_at_least": waiting >= WAITING_CAP,
                                              "correlation_keys": computed})
    return Refusal("no_matching_wait", f"No waiting process instance{where} correlates with message {name!r}, and "
                   f"no Message Start Event{where} starts on it.", {"waiting": 0, "correlation_keys": computed})


def _active_instance(tx: Tx, start: StartPoint, payload: Mapping[str, Any]) -> Refusal | None:
    """The start makes one instance per correlation key and an active instance holds this payload's key."""
    if not start.one_per_key:
        return None
    keys = key_values(start.properties, payload) or []
    holder = active_keys.holder(tx, start.process_key, keys)
    if holder is None:
        return None
    computed = {kv.key: dict(kv.values) for kv in keys}
    return Refusal("instance_active", f"Process {start.process_key} starts one instance per correlation key, and "
                   f"process instance {holder} with the key values {computed} is still active; it takes message "
                   f"{start.message_name!r} only where it waits for it. Send it once that instance has completed, "
                   "or with time_to_live_in_seconds to keep it until then.",
                   {"process_instance_id": holder, "process_model_identifier": start.process_key,
                    "correlation_keys": computed})


def _missing(points: list[Any], payload: Mapping[str, Any]) -> list[str]:
    """Correlation properties whose retrieval expression fails on the payload (each named once, in order)."""
    props: dict[str, Property] = {}
    for point in points:
        for p in point.properties:
            props.setdefault(p.name, p)
    missing = []
    for prop in props.values():
        try:
            evaluate(prop.expression, payload)
        except Exception:
            missing.append(prop.name)
    return missing


def _ended_wait(tx: Tx, name: str, computed: dict[str, dict[str, Any]]) -> int | None:
    """An instance whose wait for ``name`` with one of these key values has ended (the latest), if any."""
    if not computed:
        return None
    for instance_id, keys in ended_receives(tx, name):
        if any(keys.get(k) == v for k, v in computed.items()):
            return instance_id
    return None
