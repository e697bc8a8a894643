"""An in-process store: for tests and single-process apps."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

from ..core import SystemClock
from ..errors import ConfigurationError
from ._base import Record, SessionInfo, Write

if TYPE_CHECKING:
    from ..typing import Clock

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Entry:
    fields: dict[str, str]
    session_class: str
    user_id: str | None
    created_at: float
    last_seen: float
    expires_at: float


@final
class MemoryStore:
    """A bounded in-memory store, safe across threads of one process.

    Guarantees: at most ``max_sessions`` records are kept; past that the
    least recently used one is dropped (so a flood cannot exhaust memory —
    and the engine never creates records for bad cookies anyway). Expired
    records are never returned. Not guaranteed: anything survives a restart
    or is shared with another process.

    Args:
        max_sessions: The bound on stored records.
        clock: The time source for expiry.
    """

    blocking = False
    """Calls never block: the async face calls it inline."""

    def __init__(self, *, max_sessions: int = 100_000, clock: Clock | None = None) -> None:
        if max_sessions < 1:
            raise ConfigurationError("max_sessions must be >= 1")
        self._max = max_sessions
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._items: OrderedDict[str, _Entry] = OrderedDict()
        self._users: dict[str, set[str]] = {}
        self._epochs: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._items)

    def _drop(self, key: str) -> None:
        entry = self._items.pop(key, None)
        if entry is not None and entry.user_id is not None:
            keys = self._users.get(entry.user_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._users[entry.user_id]

    def _live(self, key: str) -> _Entry | None:
        entry = self._items.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock.time():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return entry

    def load(self, key: str) -> Record | None:
        with self._lock:
            e = self._live(key)
            if e is None:
                return None
            return Record(
                fields=dict(e.fields),
                session_class=e.session_class,
                user_id=e.user_id,
                created_at=e.created_at,
                last_seen=e.last_seen,
                expires_at=e.expires_at,
            )

    def write(self, write: Write) -> bool:
        with self._lock:
            if write.create:
                self._drop(write.key)
                entry = _Entry(
                    dict(write.fields),
                    write.session_class,
                    write.user_id,
                    write.created_at,
                    write.last_seen,
                    write.expires_at,
                )
            else:
                found = self._live(write.key)
                if found is None:
                    return False
                entry = found
                entry.fields.update(write.fields)
                for k in write.deleted:
                    entry.fields.pop(k, None)
                if entry.user_id != write.user_id and entry.user_id is not None:
                    self._users.get(entry.user_id, set()).discard(write.key)
                entry.session_class = write.session_class
                entry.user_id = write.user_id
                entry.last_seen = write.last_seen
                entry.expires_at = write.expires_at
            self._items[write.key] = entry
            self._items.move_to_end(write.key)
            if entry.user_id is not None:
                self._users.setdefault(entry.user_id, set()).add(write.key)
            while len(self._items) > self._max:
                oldest = next(iter(self._items))
                self._drop(oldest)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._drop(key)

    def touch(self, key: str, *, last_seen: float, expires_at: float) -> None:
        with self._lock:
            e = self._live(key)
            if e is not None:
                e.last_seen = max(e.last_seen, last_seen)
                e.expires_at = expires_at

    def sessions_of(self, user_id: str) -> list[SessionInfo]:
        with self._lock:
            out = []
            for key in list(self._users.get(user_id, ())):
                e = self._live(key)
                if e is not None:
                    out.append(
                        SessionInfo(
                            key=key,
                            session_class=e.session_class,
                            user_id=e.user_id,
                            created_at=e.created_at,
                            last_seen=e.last_seen,
                            expires_at=e.expires_at,
                        )
                    )
            return sorted(out, key=lambda i: i.created_at)

    def revoke_user(self, user_id: str) -> int:
        with self._lock:
            keys = list(self._users.get(user_id, ()))
            live = 0
            for key in keys:
                if self._live(key) is not None:
                    live += 1
                self._drop(key)
            return live

    def epochs(self) -> dict[str, float]:
        with self._lock:
            return dict(self._epochs)

    def raise_epoch(self, session_class: str, epoch: float) -> float:
        with self._lock:
            current = max(self._epochs.get(session_class, 0.0), float(epoch))
            self._epochs[session_class] = current
            return current

    def purge_expired(self, now: float | None = None) -> int:
        """Drop expired records; return how many."""
        t = self._clock.time() if now is None else now
        with self._lock:
            dead = [k for k, e in self._items.items() if e.expires_at <= t]
            for k in dead:
                self._drop(k)
            return len(dead)

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"MemoryStore(max_sessions={self._max}, size={len(self._items)})"
