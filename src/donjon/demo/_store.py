"""A store wrapper that counts round trips, so the lab can show who reached the store.

The design promises that forged, malformed and expired cookies cost zero
store round trips. The lab proves it: each attack runs inside
:func:`counting`, and every store call made on its behalf (in the worker
thread too: :func:`asyncio.to_thread` carries the context along) adds one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from ..stores import Record, SessionInfo, Store, Write

__all__ = ["CountingStore", "counting"]

_calls: ContextVar[list[int] | None] = ContextVar("donjon_demo_store_calls", default=None)


@contextlib.contextmanager
def counting() -> Iterator[list[int]]:
    """Count the store calls made in this context; the count is ``box[0]``."""
    box = [0]
    token = _calls.set(box)
    try:
        yield box
    finally:
        _calls.reset(token)


def _count() -> None:
    box = _calls.get()
    if box is not None:
        box[0] += 1


@final
class CountingStore:
    """Delegate every call to a blocking store, counting it for :func:`counting`."""

    blocking = True

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def load(self, key: str) -> Record | None:
        """Load a record (counted)."""
        _count()
        return self.inner.load(key)

    def write(self, write: Write) -> bool:
        """Write a record (counted)."""
        _count()
        return self.inner.write(write)

    def delete(self, key: str) -> bool:
        """Delete a record (counted)."""
        _count()
        return self.inner.delete(key)

    def touch(self, key: str, *, last_seen: float, expires_at: float) -> None:
        """Touch a record (counted)."""
        _count()
        self.inner.touch(key, last_seen=last_seen, expires_at=expires_at)

    def sessions_of(self, user_id: str) -> list[SessionInfo]:
        """List a user's sessions (counted)."""
        _count()
        return self.inner.sessions_of(user_id)

    def revoke_user(self, user_id: str) -> int:
        """Revoke a user's sessions (counted)."""
        _count()
        return self.inner.revoke_user(user_id)

    def epochs(self) -> dict[str, float]:
        """Read the class epochs (counted)."""
        _count()
        return self.inner.epochs()

    def raise_epoch(self, session_class: str, epoch: float) -> float:
        """Raise a class epoch (counted)."""
        _count()
        return self.inner.raise_epoch(session_class, epoch)

    def close(self) -> None:
        """Close the inner store."""
        self.inner.close()

    def __repr__(self) -> str:
        return f"CountingStore({self.inner!r})"
