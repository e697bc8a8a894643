"""Helpers for testing applications and third-party stores built on Donjon.

Nothing here needs pytest: failures are plain ``AssertionError``.
"""

from __future__ import annotations

from ._clock import FrozenClock as FrozenClock
from ._contract import check_async_store as check_async_store
from ._contract import check_store as check_store

__all__ = ["FrozenClock", "check_async_store", "check_store"]
