"""The subscription index: one row per wait of an instance, and the lookup an incoming message makes in it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..names import group_path
from . import statements as sql
from .records import EndedWait, WaitingTask, WaitRow
from .tx_base import TxBase


class Waits(TxBase):
    """Queries of ``spiff_subscription``: what instances wait for."""

    def sync_subscriptions(self, instance_id: int, group: str, waits: Sequence[WaitRow],
                           indexed: bool = True) -> tuple[list[WaitRow], list[EndedWait]]:
        """Make the index say exactly ``waits``; unchanged waits keep their row (their place in line).

        Two statements, no read: delete what is no longer wanted, insert the rest skipping rows that exist
        (unique index), and learn from ``RETURNING`` which waits are new and which ended (a wait of a task and
        message no longer in ``waits``, with the keys it expected). ``indexed=False``: the instance has no row
        in the index yet (it is being made), so there is nothing to delete.
        """
        wanted = {(w.task_id, w.message_name, w.key.key if w.key else "", w.key.digest if w.key else ""): w
                  for w in waits}
        deleted: Any
        if not indexed:
            deleted = ()
        elif wanted:
            deleted = self.conn.execute(sql.DELETE_OTHER_WAITS, {"instance_id": instance_id, "keep": list(wanted)})
        else:
            deleted = self.conn.execute(sql.DELETE_WAITS, {"instance_id": instance_id})
        still = {(w.task_id, w.message_name) for w in waits}
        ended: dict[tuple[str, str], dict[str, Any]] = {}
        first: dict[tuple[str, str], int] = {}
        for task_id, name, key, values, row_id in deleted:
            if (task_id, name) not in still:
                wait = (str(task_id), str(name))
                keys = ended.setdefault(wait, {})
                first[wait] = min(first.get(wait, row_id), row_id)
                if key:
                    keys[str(key)] = json.loads(values)
        gone = [EndedWait(t, n, keys, first[(t, n)]) for (t, n), keys in ended.items()]
        if not wanted:
            return [], gone
        rows = [{"process_instance_id": instance_id, "message_name": w.message_name, "group_path": group_path(group),
                 "key_name": k[2], "values_digest": k[3], "values_json": w.key.canonical if w.key else "",
                 "task_id": w.task_id, "element_id": w.element_id, "created_at": self.now}
                for k, w in wanted.items()]
        ids = self.fresh_ids(len(rows))
        if ids is not None:
            rows = [{**r, "id": i} for r, i in zip(rows, ids, strict=True)]
        added = self.conn.execute(sql.insert_waits(self.store.dialect), rows).all()
        return [wanted[(t, m, k, d)] for t, m, k, d in added], gone

    def find_waiting_tasks(self, message_name: str, scope: str, keys: Sequence[tuple[str, str]],
                           limit: int = 8) -> list[WaitingTask]:
        """Tasks waiting for a message: exact key matches first, then accept-any waits, oldest first.

        One index seek per key (a branch of a UNION ALL, each already in id order), so the cost does not grow with
        the number of instances waiting for the same message name.
        """
        params: dict[str, Any] = {"name": message_name, "limit": limit}
        for i, (key, dig) in enumerate([*keys, ("", "")]):
            params[f"k{i}"], params[f"d{i}"] = key, dig
        if scope:
            params["group"] = group_path(scope)
        stmt = sql.subscription_lookup(len(keys), bool(scope))
        found = dict.fromkeys(WaitingTask(int(i), str(t)) for i, t in self.conn.execute(stmt, params))
        return list(found)
