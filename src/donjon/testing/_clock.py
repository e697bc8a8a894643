from __future__ import annotations

import threading
from typing import final

__all__ = ["FrozenClock"]


@final
class FrozenClock:
    """A clock that only moves when told to; for tests.

    Args:
        start: The initial Unix time in seconds.
    """

    __slots__ = ("_lock", "_now")

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def time(self) -> float:
        """Return the frozen time."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward (or back, with a negative value); return the new time."""
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float) -> None:
        """Set the clock to an absolute Unix time."""
        with self._lock:
            self._now = float(when)

    def __repr__(self) -> str:
        return f"FrozenClock({self._now!r})"
