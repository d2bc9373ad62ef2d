"""What a refusal suggests doing instead: the name the client probably meant.

Refusals say what to do (issue 23): a process id without its group (Arena names every process by its group) gets
the ``group:process`` ids that end in it, and a near miss the closest ids the catalog has.
"""

from __future__ import annotations

import difflib

from .catalog import Catalog
from .names import modified

MAX_SUGGESTIONS = 5


def processes_meant(catalog: Catalog, key: str) -> list[str]:
    """The modified ids (``group:process``) of the catalog's processes the client may have meant by ``key``
    (``group/process``): the same process id in another group first, else the closest spellings."""
    entries = list(catalog.processes.values())
    wanted = key.rsplit("/", 1)[-1]
    same_id = sorted(modified(p.group, p.process_id) for p in entries if p.process_id == wanted and p.key != key)
    if same_id:
        return same_id[:MAX_SUGGESTIONS]
    by_key = {p.key: modified(p.group, p.process_id) for p in entries}
    close = difflib.get_close_matches(key, list(by_key), n=MAX_SUGGESTIONS, cutoff=0.7)
    return [by_key[k] for k in close]


def did_you_mean(suggestions: list[str]) -> str:
    """``"; did you mean `orders:payment_recovery`?"`` (empty without suggestions), to end a refusal's text."""
    if not suggestions:
        return ""
    return "; did you mean " + " or ".join(f"`{s}`" for s in suggestions) + "?"
