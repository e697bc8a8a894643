"""The embedded default store: one SQLite file in WAL mode, no server."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final, final

from ..core import SystemClock
from ..errors import ConfigurationError, StoreUnavailable
from ._base import DEVICE_FIELD, Record, SessionInfo, Write, device_of

if TYPE_CHECKING:
    from ..typing import Clock

__all__ = ["SQLiteStore"]

log = logging.getLogger("donjon.store")

SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS donjon_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS donjon_sessions (
    key TEXT PRIMARY KEY,
    session_class TEXT NOT NULL,
    user_id TEXT,
    created_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS donjon_sessions_user ON donjon_sessions (user_id)
    WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS donjon_sessions_expiry ON donjon_sessions (expires_at);
CREATE TABLE IF NOT EXISTS donjon_fields (
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (key, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS donjon_epochs (
    session_class TEXT PRIMARY KEY,
    epoch REAL NOT NULL
) WITHOUT ROWID;
"""


@final
class SQLiteStore:
    """Sessions in one SQLite file: the embedded default.

    WAL mode lets readers run alongside one writer; every write is one
    ``BEGIN IMMEDIATE`` transaction, so a record is never half-written and
    concurrent requests that change different keys both persist (each key is
    its own row). Expired records are skipped on read and removed by
    :meth:`purge_expired`, which the store runs itself after every
    ``purge_every``-th new record (so anonymous sessions cannot grow the file
    without bound).

    Guarantees: safe across threads and across processes sharing the file.
    Not guaranteed: use over a network file system.

    Args:
        path: The database file; created with its folder if missing.
        timeout: Seconds to wait for a lock before :class:`StoreUnavailable`.
        clock: The time source for expiry.
        purge_every: Purge expired records after every this many new records
            (0: never; then call :meth:`purge_expired` from a scheduled job).
    """

    blocking = True
    inline_reads = True
    """WAL readers never wait for the writer: the async face reads on the loop."""

    def __init__(
        self,
        path: str | os.PathLike[str] = "donjon-sessions.sqlite3",
        *,
        timeout: float = 5.0,
        clock: Clock | None = None,
        purge_every: int = 1000,
    ) -> None:
        if not isinstance(purge_every, int) or isinstance(purge_every, bool) or purge_every < 0:
            raise ConfigurationError("purge_every must be an int >= 0 (0: never purge)")
        self._purge_every = purge_every
        self._creates = itertools.count(1)
        self.path = Path(path)
        self._timeout = timeout
        self._clock: Clock = clock or SystemClock()
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn().executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot create schema in {self.path}: {exc}") from exc
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO donjon_meta (name, value) VALUES ('schema', ?)",
                (str(SCHEMA_VERSION),),
            )

    # -- plumbing -------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(
                    self.path,
                    timeout=self._timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
                self._wal(db)
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open SQLite store {self.path}: {exc}") from exc
            self._local.db = db
            with self._all_lock:
                self._all.append(db)
        return db

    def _wal(self, db: sqlite3.Connection) -> None:
        # Switching to WAL takes an exclusive lock without calling the busy
        # handler, so processes opening a new file together retry it here.
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
            else:
                return

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc

    def _read(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc

    # -- contract -------------------------------------------------------
    def load(self, key: str) -> Record | None:
        rows = self._read(
            "SELECT s.session_class, s.user_id, s.created_at, s.last_seen, s.expires_at,"
            " f.name, f.value FROM donjon_sessions s"
            " LEFT JOIN donjon_fields f ON f.key = s.key"
            " WHERE s.key = ? AND s.expires_at > ?",
            (key, self._clock.time()),
        )
        if not rows:
            return None
        cls, user, created, seen, expires = rows[0][:5]
        fields = {str(r[5]): str(r[6]) for r in rows if r[5] is not None}
        return Record(
            fields=fields,
            session_class=str(cls),
            user_id=None if user is None else str(user),
            created_at=float(created),  # type: ignore[arg-type]
            last_seen=float(seen),  # type: ignore[arg-type]
            expires_at=float(expires),  # type: ignore[arg-type]
        )

    def write(self, write: Write) -> bool:
        with self._tx() as db:
            if write.create:
                live = db.execute(
                    "SELECT 1 FROM donjon_sessions WHERE key = ? AND expires_at > ?",
                    (write.key, self._clock.time()),
                ).fetchone()
                if live is not None:
                    return False  # never overwrite a live session (a repeated genid id)
                db.execute("DELETE FROM donjon_fields WHERE key = ?", (write.key,))
                db.execute(
                    "INSERT OR REPLACE INTO donjon_sessions"
                    " (key, session_class, user_id, created_at, last_seen, expires_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        write.key,
                        write.session_class,
                        write.user_id,
                        write.created_at,
                        write.last_seen,
                        write.expires_at,
                    ),
                )
            else:
                if write.expect is not None:
                    row = db.execute(
                        "SELECT value FROM donjon_fields WHERE key = ? AND name = ?",
                        (write.key, write.expect[0]),
                    ).fetchone()
                    if row is None or row[0] != write.expect[1]:
                        return False  # (BEGIN IMMEDIATE: nobody wrote in between)
                cur = db.execute(
                    "UPDATE donjon_sessions SET session_class = ?, user_id = ?,"
                    " last_seen = max(last_seen, ?), expires_at = ?"
                    " WHERE key = ? AND expires_at > ?",
                    (
                        write.session_class,
                        write.user_id,
                        write.last_seen,
                        write.expires_at,
                        write.key,
                        self._clock.time(),
                    ),
                )
                if cur.rowcount == 0:
                    return False
                if write.deleted:
                    db.executemany(
                        "DELETE FROM donjon_fields WHERE key = ? AND name = ?",
                        [(write.key, n) for n in write.deleted],
                    )
            if write.fields:
                db.executemany(
                    "INSERT OR REPLACE INTO donjon_fields (key, name, value) VALUES (?, ?, ?)",
                    [(write.key, n, v) for n, v in write.fields.items()],
                )
        if write.create and self._purge_every and next(self._creates) % self._purge_every == 0:
            with contextlib.suppress(StoreUnavailable):  # the write itself is done
                self.purge_expired()
        return True

    def delete(self, key: str) -> bool:
        with self._tx() as db:
            cur = db.execute("DELETE FROM donjon_sessions WHERE key = ?", (key,))
            db.execute("DELETE FROM donjon_fields WHERE key = ?", (key,))
            return cur.rowcount > 0

    def touch(self, key: str, *, last_seen: float, expires_at: float) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE donjon_sessions SET last_seen = max(last_seen, ?), expires_at = ?"
                " WHERE key = ? AND expires_at > ?",
                (last_seen, expires_at, key, self._clock.time()),
            )

    def sessions_of(self, user_id: str) -> list[SessionInfo]:
        rows = self._read(
            "SELECT s.key, s.session_class, s.user_id, s.created_at, s.last_seen,"
            " s.expires_at, f.value FROM donjon_sessions s"
            " LEFT JOIN donjon_fields f ON f.key = s.key AND f.name = ?"
            " WHERE s.user_id = ? AND s.expires_at > ? ORDER BY s.created_at",
            (DEVICE_FIELD, user_id, self._clock.time()),
        )
        return [
            SessionInfo(
                key=str(r[0]),
                session_class=str(r[1]),
                user_id=str(r[2]),
                created_at=float(r[3]),  # type: ignore[arg-type]
                last_seen=float(r[4]),  # type: ignore[arg-type]
                expires_at=float(r[5]),  # type: ignore[arg-type]
                device=device_of(r[6]),  # type: ignore[arg-type]
            )
            for r in rows
        ]

    def revoke_user(self, user_id: str) -> int:
        now = self._clock.time()
        with self._tx() as db:
            keys = [
                (r[0], r[1] > now)
                for r in db.execute(
                    "SELECT key, expires_at FROM donjon_sessions WHERE user_id = ?", (user_id,)
                )
            ]
            db.executemany("DELETE FROM donjon_fields WHERE key = ?", [(k,) for k, _ in keys])
            db.execute("DELETE FROM donjon_sessions WHERE user_id = ?", (user_id,))
        return sum(1 for _, live in keys if live)

    def epochs(self) -> dict[str, float]:
        rows = self._read("SELECT session_class, epoch FROM donjon_epochs", ())
        return {str(c): float(e) for c, e in rows}  # type: ignore[arg-type]

    def raise_epoch(self, session_class: str, epoch: float) -> float:
        with self._tx() as db:
            db.execute(
                "INSERT INTO donjon_epochs (session_class, epoch) VALUES (?, ?)"
                " ON CONFLICT (session_class) DO UPDATE SET epoch = max(epoch, excluded.epoch)",
                (session_class, float(epoch)),
            )
            (stored,) = db.execute(
                "SELECT epoch FROM donjon_epochs WHERE session_class = ?", (session_class,)
            ).fetchone()
        return float(stored)

    def purge_expired(self, now: float | None = None) -> int:
        """Delete expired records; return how many."""
        t = self._clock.time() if now is None else now
        with self._tx() as db:
            db.execute(
                "DELETE FROM donjon_fields WHERE key IN"
                " (SELECT key FROM donjon_sessions WHERE expires_at <= ?)",
                (t,),
            )
            n = db.execute("DELETE FROM donjon_sessions WHERE expires_at <= ?", (t,)).rowcount
        return int(n)

    def close(self) -> None:
        """Close every connection this store opened."""
        with self._all_lock:
            for db in self._all:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            self._all.clear()
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"SQLiteStore({os.fspath(self.path)!r})"
