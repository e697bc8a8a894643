"""The engine: loads sessions from tokens and commits them, sync and async.

Both faces drive one sans-I/O logic (:class:`EngineCore`).
"""

from __future__ import annotations

from ._logic import EngineCore as EngineCore
from ._logic import Outcome as Outcome
from .aio import AsyncEngine as AsyncEngine
from .sync import Engine as Engine

__all__ = ["AsyncEngine", "Engine", "EngineCore", "Outcome"]
