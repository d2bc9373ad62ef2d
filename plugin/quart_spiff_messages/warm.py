"""Warm instances: an instance's deserialized workflow kept between its transactions, reused only on its own state.

Loading (JSON and SpiffWorkflow's restore of every task) is a tenth of a delivery's work. After a change commits,
the workflow it left is kept with the exact state text it was saved as; the next change of that instance, in this
process, takes it back only when the state it reads under its row lock is that same text (any other worker's or
process's change, a rollback that never committed, a reload of the catalog: not the same, so it loads afresh).
Taking removes it, so no two transactions share one; a change that fails or rolls back never puts it back. Bounded:
the least recently kept go first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class Warm(Generic[T]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._kept: OrderedDict[int, tuple[str, T]] = OrderedDict()
        self._lock = threading.Lock()  # kept on the event loop after a commit, taken on SQLite's writer thread
        self.hits = self.misses = 0

    def take(self, key: int, state: str) -> T | None:
        """The object kept for ``key`` if it was kept with exactly ``state`` (it is no longer kept)."""
        with self._lock:
            found = self._kept.pop(key, None)
        if found is not None and found[0] == state:
            self.hits += 1
            return found[1]
        self.misses += 1
        return None

    def keep(self, key: int, state: str, obj: T) -> None:
        """Keep ``obj`` as the object of ``key`` whose committed state is ``state``."""
        if self.size <= 0:
            return
        with self._lock:
            self._kept[key] = (state, obj)
            self._kept.move_to_end(key)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)

    def drop(self, key: int) -> None:
        with self._lock:
            self._kept.pop(key, None)

    def __len__(self) -> int:
        return len(self._kept)
