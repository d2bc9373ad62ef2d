"""The extension's clock: what is due or expired is decided by it, so tests move time instead of sleeping."""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]  # seconds since the epoch, like time.time


class ManualClock:
    """A clock that stands still until told to move: call :meth:`advance` instead of sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.listeners: list[Callable[[], None]] = []  # called after each move (the timer loop wakes)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for listener in self.listeners:
            listener()

    def __repr__(self) -> str:
        return f"ManualClock(now={self.now})"


def iso_time(seconds: float) -> str:
    """A time for people beside the epoch seconds views keep for programs: ISO 8601 in UTC, to the millisecond."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
