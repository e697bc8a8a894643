from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "DEVICE_FIELD",
    "AsyncStore",
    "Record",
    "SessionInfo",
    "Store",
    "SupportsPurge",
    "Write",
    "as_async",
]


DEVICE_FIELD: Final = "__donjon_device"
"""Reserved record field: the device a session was created on (JSON text of a
str, like every field), shown by ``sessions_of``; never session data."""


def device_of(text: str | bytes | None) -> str | None:
    """Decode a stored :data:`DEVICE_FIELD` value; ``None`` when absent or not a str."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, str) else None


class Record(NamedTuple):
    """A session record as a store returns it (immutable).

    ``fields`` maps each session key to its value as JSON text; the engine
    decodes it. ``expires_at`` is when the store may forget the record (the
    earlier of the absolute expiry and the idle deadline at last touch).
    Build it with keywords; it is a named tuple (made on every load, and a
    tuple is made several times faster than a frozen dataclass).
    """

    fields: Mapping[str, str]
    session_class: str
    user_id: str | None
    created_at: float
    last_seen: float
    expires_at: float


class Write(NamedTuple):
    """One field-level save of a session record (immutable; build it with keywords).

    With ``create`` the record is written whole (never over a live one).
    Without it, ``fields`` are set and ``deleted`` removed on the existing
    record only; a record that no longer exists is not brought back.
    ``expect`` (updates only): ``(name, text)`` — write only if that field
    holds exactly that text now, atomically (a compare-and-set: the refresh
    credential's rotation, so one credential is never exchanged twice).
    """

    key: str
    fields: Mapping[str, str]
    session_class: str
    user_id: str | None
    created_at: float
    last_seen: float
    expires_at: float
    create: bool
    deleted: frozenset[str] = frozenset()
    expect: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionInfo:
    """What a listing of a user's sessions shows (never the id or a cookie)."""

    key: str
    """The record key (a hash of the id): usable to revoke, useless as a cookie."""
    session_class: str
    user_id: str | None
    created_at: float
    last_seen: float
    expires_at: float
    device: str | None = None
    """The device the session was created on (its browser's ``User-Agent``,
    trimmed), when the engine recorded it; for the user to recognise it."""


class Store(Protocol):
    """The contract every synchronous session store fulfils.

    ``donjon.testing.check_store`` checks it. Every method raises
    :class:`~donjon.StoreUnavailable` when the backend is down or too slow,
    and never leaves a half-written record.
    """

    def load(self, key: str) -> Record | None:
        """Return the record stored under ``key``, or ``None`` (missing or expired)."""
        ...

    def write(self, write: Write) -> bool:
        """Save a record; return ``False`` when an update found no live record,
        or when a create found one already live under that key (a create never
        overwrites a live session: an app's ``genid`` may repeat an id)."""
        ...

    def delete(self, key: str) -> bool:
        """Delete a record (and its place in its user's index); no error if missing.

        Returns whether a record was there to delete.
        """
        ...

    def touch(self, key: str, *, last_seen: float, expires_at: float) -> None:
        """Refresh a record's last-seen time and storage expiry, if it exists."""
        ...

    def sessions_of(self, user_id: str) -> list[SessionInfo]:
        """List the live sessions of a user."""
        ...

    def revoke_user(self, user_id: str) -> int:
        """Delete every session of a user ("log out everywhere"); return how many."""
        ...

    def epochs(self) -> dict[str, float]:
        """Return the shared class epochs (kill switch) known to the store."""
        ...

    def raise_epoch(self, session_class: str, epoch: float) -> float:
        """Move a class epoch forward (never back); return the stored epoch."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class AsyncStore(Protocol):
    """The asynchronous twin of :class:`Store`: same methods, awaited."""

    async def load(self, key: str) -> Record | None: ...
    async def write(self, write: Write) -> bool: ...
    async def delete(self, key: str) -> bool: ...
    async def touch(self, key: str, *, last_seen: float, expires_at: float) -> None: ...
    async def sessions_of(self, user_id: str) -> list[SessionInfo]: ...
    async def revoke_user(self, user_id: str) -> int: ...
    async def epochs(self) -> dict[str, float]: ...
    async def raise_epoch(self, session_class: str, epoch: float) -> float: ...
    async def close(self) -> None: ...


@runtime_checkable
class SupportsPurge(Protocol):
    """A store whose backend has no TTL and needs expired records purged."""

    def purge_expired(self, now: float | None = None) -> int:
        """Delete expired records; return how many."""
        ...


class _ThreadedAsync:
    """Run a blocking :class:`Store` in worker threads behind the async API."""

    __slots__ = ("_inline", "_inline_reads", "sync")

    def __init__(self, store: Store, *, inline: bool, inline_reads: bool = False) -> None:
        self.sync = store
        self._inline = inline
        self._inline_reads = inline or inline_reads

    async def _call(self, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
        if self._inline:
            return fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def load(self, key: str) -> Record | None:
        if self._inline_reads:
            return self.sync.load(key)
        return await self._call(self.sync.load, key)  # type: ignore[return-value]

    async def write(self, write: Write) -> bool:
        return await self._call(self.sync.write, write)  # type: ignore[return-value]

    async def delete(self, key: str) -> bool:
        return await self._call(self.sync.delete, key)  # type: ignore[return-value]

    async def touch(self, key: str, *, last_seen: float, expires_at: float) -> None:
        await self._call(self.sync.touch, key, last_seen=last_seen, expires_at=expires_at)

    async def sessions_of(self, user_id: str) -> list[SessionInfo]:
        return await self._call(self.sync.sessions_of, user_id)  # type: ignore[return-value]

    async def revoke_user(self, user_id: str) -> int:
        return await self._call(self.sync.revoke_user, user_id)  # type: ignore[return-value]

    async def epochs(self) -> dict[str, float]:
        if self._inline_reads:
            return self.sync.epochs()
        return await self._call(self.sync.epochs)  # type: ignore[return-value]

    async def raise_epoch(self, session_class: str, epoch: float) -> float:
        return await self._call(  # type: ignore[return-value]
            self.sync.raise_epoch, session_class, epoch
        )

    async def close(self) -> None:
        await self._call(self.sync.close)


def as_async(store: Store | AsyncStore) -> AsyncStore:
    """Return an :class:`AsyncStore` for any store.

    An async store is returned as is. A blocking sync store runs in worker
    threads; a store that declares ``blocking = False`` (such as
    :class:`~donjon.stores.MemoryStore`) is called inline, and one that
    declares ``inline_reads = True`` (SQLite in WAL mode, whose readers never
    wait for a lock) reads inline and writes in a thread.
    """
    if asyncio.iscoroutinefunction(getattr(store, "load", None)):
        return store  # type: ignore[return-value]
    inline = not getattr(store, "blocking", True)
    inline_reads = bool(getattr(store, "inline_reads", False))
    return _ThreadedAsync(store, inline=inline, inline_reads=inline_reads)  # type: ignore[arg-type]
