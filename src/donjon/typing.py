"""Protocols and aliases that users implement or annotate with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeAlias

__all__ = ["Clock", "GenId", "JSONValue"]

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
"""A value that survives a JSON round trip: what a session may hold."""

GenId: TypeAlias = Callable[[], str]
"""An application's own session-id generator (express-session's ``genid``).

Ids it returns are signed like any other, so even a counter is unguessable
as a cookie. They must match ``[A-Za-z0-9_-]{1,128}``.
"""


class Clock(Protocol):
    """A source of wall-clock time, injected wherever time is read."""

    def time(self) -> float:
        """Return the current time as seconds since the Unix epoch."""
        ...
