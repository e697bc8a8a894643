from __future__ import annotations

import time
from typing import final

__all__ = ["SystemClock"]


@final
class SystemClock:
    """The wall clock. The only place in Donjon that calls :func:`time.time`."""

    __slots__ = ()

    # The builtin itself, not a wrapper: codecs bind it once and call it per verify.
    time = staticmethod(time.time)
    """Return the current Unix time in seconds."""

    def __repr__(self) -> str:
        return "SystemClock()"
