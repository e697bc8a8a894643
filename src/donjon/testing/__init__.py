"""Helpers for testing applications and third-party stores built on Donjon.

Nothing here needs pytest: failures are plain ``AssertionError``.
"""

from __future__ import annotations

from ._clock import FrozenClock as FrozenClock

__all__ = ["FrozenClock"]
