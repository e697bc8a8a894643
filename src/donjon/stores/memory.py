"""An in-process store: for tests and single-process apps."""

from __future__ import annotations

import threading
from collections import OrderedDict
from types import MappingProxyType
from typing import TYPE_CHECKING, final

from ..core import SystemClock
from ..errors import ConfigurationError
from ._base import DEVICE_FIELD, Record, SessionInfo, Write, device_of

if TYPE_CHECKING:
    from ..typing import Clock

__all__ = ["MemoryStore"]


@final
class MemoryStore:
    """A bounded in-memory store, safe across threads of one process.

    Guarantees: at most ``max_sessions`` records are kept; past that the
    record least recently written or touched is dropped (so a flood cannot
    exhaust memory — and the engine never creates records for bad cookies
    anyway; a live session is touched at least every ``touch_every``).
    Expired records are never returned. A loaded :class:`Record` is shared,
    not copied: its ``fields`` are a read-only mapping. Not guaranteed:
    anything survives a restart or is shared with another process.

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
        # Records are immutable and replaced whole: a load returns the stored
        # object itself, touching as little memory as a large table allows.
        self._items: OrderedDict[str, Record] = OrderedDict()
        self._users: dict[str, set[str]] = {}
        self._epochs: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._items)

    def _drop(self, key: str) -> None:
        record = self._items.pop(key, None)
        if record is not None and record.user_id is not None:
            keys = self._users.get(record.user_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._users[record.user_id]

    def _live(self, key: str) -> Record | None:
        record = self._items.get(key)
        if record is None:
            return None
        if record.expires_at <= self._clock.time():
            self._drop(key)
            return None
        return record

    def _put(self, key: str, record: Record) -> None:
        items = self._items
        items[key] = record
        items.move_to_end(key)
        if record.user_id is not None:
            self._users.setdefault(record.user_id, set()).add(key)
        while len(items) > self._max:
            self._drop(next(iter(items)))

    def load(self, key: str) -> Record | None:
        # A read does not reorder the records: moving a node of a large
        # table costs more cache misses than the read itself.
        with self._lock:
            return self._live(key)

    def write(self, write: Write) -> bool:
        with self._lock:
            if write.create:
                if self._live(write.key) is not None:
                    return False  # never overwrite a live session (a repeated genid id)
                self._drop(write.key)
                fields = dict(write.fields)
                created = write.created_at
                last_seen = write.last_seen
            else:
                found = self._live(write.key)
                if found is None:
                    return False
                if write.expect is not None:
                    name, text = write.expect
                    if found.fields.get(name) != text:
                        return False
                fields = dict(found.fields)
                fields.update(write.fields)
                created = found.created_at
                last_seen = max(found.last_seen, write.last_seen)
                for k in write.deleted:
                    fields.pop(k, None)
                if found.user_id != write.user_id and found.user_id is not None:
                    self._users.get(found.user_id, set()).discard(write.key)
            self._put(
                write.key,
                Record(
                    fields=MappingProxyType(fields),
                    session_class=write.session_class,
                    user_id=write.user_id,
                    created_at=created,
                    last_seen=last_seen,
                    expires_at=write.expires_at,
                ),
            )
            return True

    def delete(self, key: str) -> bool:
        with self._lock:
            found = key in self._items
            self._drop(key)
            return found

    def touch(self, key: str, *, last_seen: float, expires_at: float) -> None:
        with self._lock:
            e = self._live(key)
            if e is not None:
                self._put(
                    key,
                    e._replace(last_seen=max(e.last_seen, last_seen), expires_at=expires_at),
                )

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
                            device=device_of(e.fields.get(DEVICE_FIELD)),
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
