"""Sessions in PostgreSQL: :class:`PostgresStore` and :class:`AsyncPostgresStore`.

Needs the ``postgres`` extra (``psycopg`` 3 and ``psycopg-pool``)::

    pip install 'donjon[postgres]'

Both stores keep one row per session in ``<prefix>sessions`` (the session
data is a ``jsonb`` object, one member per session key holding that key's
JSON text as a string, so every value reads back byte for byte) and the class epochs
in ``<prefix>epochs``. They create and migrate these tables themselves on
first use. The SQL text, the schema migrations and the row decoding below are
shared by the sync and the async store; only the driving of the connection
differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import heapq
import itertools
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, TypeAlias, final

from ..core import SystemClock
from ..errors import ConfigurationError, MissingDependency, StoreError, StoreUnavailable
from ._base import Record, SessionInfo, Write, device_of

if TYPE_CHECKING:
    from psycopg import AsyncConnection, Connection
    from psycopg.rows import TupleRow
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    from ..typing import Clock

    SyncPool: TypeAlias = ConnectionPool[Connection[TupleRow]]
    AsyncPool: TypeAlias = AsyncConnectionPool[AsyncConnection[TupleRow]]

__all__ = ["AsyncPostgresStore", "PostgresStore"]

log = logging.getLogger("donjon.store")

_Row: TypeAlias = "tuple[Any, ...]"
_Statement: TypeAlias = "tuple[bytes, tuple[object, ...]]"

DEFAULT_PREFIX: Final = "donjon_"
_PREFIX_RE: Final = re.compile(r"[a-z_][a-z0-9_]{0,39}")

# -- schema ------------------------------------------------------------------
# Each migration is a tuple of single statements (psycopg runs one statement
# per execute), applied in order inside one transaction. Migrations should
# only add, so that a process still running an older donjon keeps working
# during a rolling upgrade (step 2, a data conversion made before the first
# release, is the exception: see its note). Never edit a released step;
# append a new one.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "CREATE TABLE IF NOT EXISTS {sessions} ("
        " key text PRIMARY KEY,"
        " session_class text NOT NULL,"
        " user_id text,"
        " created_at double precision NOT NULL,"
        " last_seen double precision NOT NULL,"
        " expires_at double precision NOT NULL,"
        " data jsonb NOT NULL DEFAULT '{{}}'::jsonb)",
        "CREATE INDEX IF NOT EXISTS {sessions_user_idx} ON {sessions} (user_id)"
        " WHERE user_id IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS {sessions_expiry_idx} ON {sessions} (expires_at)",
        "CREATE TABLE IF NOT EXISTS {epochs} ("
        " session_class text PRIMARY KEY,"
        " epoch double precision NOT NULL)",
    ),
    (
        # Step 2: each member of `data` holds its value's JSON text as a jsonb
        # string (step 1 stored parsed values, which jsonb normalises). Rows
        # are converted in place. Not rolling-upgrade safe: a process of an
        # earlier build would misread the converted rows; stop those first.
        "UPDATE {sessions} SET data = COALESCE("
        "(SELECT jsonb_object_agg(t.k, to_jsonb(t.v::text)) FROM jsonb_each(data) AS t(k, v)),"
        " '{{}}'::jsonb)",
    ),
)
"""The schema, as ordered steps; the schema version is the number of steps applied."""

_SCHEMA_SQL: Final = {
    # A migration may rewrite every row: the per-request statement timeout
    # must not cut it (it would roll back and start again on every request).
    "no_timeout": "SET LOCAL statement_timeout = 0",
    "lock": "SELECT pg_advisory_xact_lock(%s)",
    "exists": "SELECT to_regclass(%s) IS NOT NULL",
    "create": "CREATE TABLE IF NOT EXISTS {schema} ("
    " id integer PRIMARY KEY CHECK (id = 1), version integer NOT NULL)",
    "init": "INSERT INTO {schema} (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    "version": "SELECT version FROM {schema} WHERE id = 1",
    "set_version": "UPDATE {schema} SET version = %s WHERE id = 1",
}

# -- the contract's statements -------------------------------------------------
_SQL: Final = {
    "load": "SELECT session_class, user_id, created_at, last_seen, expires_at, data::text"
    " FROM {sessions}"
    " WHERE key = %s AND expires_at > %s",
    "create": "INSERT INTO {sessions}"
    " (key, session_class, user_id, created_at, last_seen, expires_at, data)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)"
    # A create never overwrites a live session (an app's genid may repeat an
    # id): only an expired row under the key is replaced.
    " ON CONFLICT (key) DO UPDATE SET session_class = EXCLUDED.session_class,"
    " user_id = EXCLUDED.user_id, created_at = EXCLUDED.created_at,"
    " last_seen = EXCLUDED.last_seen, expires_at = EXCLUDED.expires_at,"
    " data = EXCLUDED.data WHERE {sessions}.expires_at <= %s",
    # One statement: the merge happens on the row under its row lock, so two
    # requests changing different keys of one session both persist.
    "update": "UPDATE {sessions} SET session_class = %s, user_id = %s,"
    " last_seen = GREATEST(last_seen, %s), expires_at = %s,"
    " data = (data || %s::jsonb) - %s::text[]"
    " WHERE key = %s AND expires_at > %s"
    # the compare-and-set of Write.expect (NULL: none)
    " AND (%s::text IS NULL OR data -> %s::text = to_jsonb(%s::text))",
    "delete": "DELETE FROM {sessions} WHERE key = %s",
    "touch": "UPDATE {sessions} SET last_seen = GREATEST(last_seen, %s), expires_at = %s"
    " WHERE key = %s AND expires_at > %s",
    "sessions_of": "SELECT key, session_class, user_id, created_at, last_seen, expires_at,"
    " data ->> '__donjon_device' FROM {sessions}"
    " WHERE user_id = %s AND expires_at > %s ORDER BY created_at, key",
    "revoke_user": "WITH gone AS (DELETE FROM {sessions} WHERE user_id = %s"
    " RETURNING expires_at) SELECT count(*) FILTER (WHERE expires_at > %s) FROM gone",
    "epochs": "SELECT session_class, epoch FROM {epochs}",
    "raise_epoch": "INSERT INTO {epochs} (session_class, epoch) VALUES (%s, %s)"
    " ON CONFLICT (session_class) DO UPDATE"
    " SET epoch = GREATEST({epochs}.epoch, EXCLUDED.epoch) RETURNING epoch",
    "purge": "DELETE FROM {sessions} WHERE expires_at <= %s",
    "statement_timeout": "SELECT set_config('statement_timeout', %s, false)",
}


@dataclass(frozen=True, slots=True)
class _Queries:
    """Every statement of one store, rendered for its table prefix."""

    prefix: str
    lock_id: int
    sql: Mapping[str, bytes]
    schema: Mapping[str, bytes]
    migrations: tuple[tuple[bytes, ...], ...]


def _render(prefix: str) -> _Queries:
    """Render the statements for ``prefix`` (already validated: quoting is trivial)."""
    names = {
        "schema": f'"{prefix}schema"',
        "sessions": f'"{prefix}sessions"',
        "epochs": f'"{prefix}epochs"',
        "sessions_user_idx": f'"{prefix}sessions_user_idx"',
        "sessions_expiry_idx": f'"{prefix}sessions_expiry_idx"',
    }

    def fmt(text: str) -> bytes:
        return text.format_map(names).encode()

    digest = hashlib.sha256(f"donjon-schema:{prefix}".encode()).digest()
    return _Queries(
        prefix=prefix,
        lock_id=int.from_bytes(digest[:8], "big", signed=True),
        sql={name: fmt(text) for name, text in _SQL.items()},
        schema={name: fmt(text) for name, text in _SCHEMA_SQL.items()},
        migrations=tuple(tuple(fmt(s) for s in step) for step in MIGRATIONS),
    )


def _check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.fullmatch(prefix):
        raise ConfigurationError(
            f"table_prefix {prefix!r} is not usable: use 1-40 characters of"
            " a-z, 0-9 and _, not starting with a digit (e.g. 'donjon_')"
        )
    return prefix


def _schema_steps(q: _Queries) -> Generator[_Statement, list[_Row], None]:
    """Create or migrate the schema: yield statements, receive their rows.

    The driver runs this inside one transaction; the advisory lock taken
    first makes concurrent starts (several processes, several stores) wait
    for each other instead of racing on ``CREATE TABLE``.
    """
    yield q.schema["no_timeout"], ()
    yield q.schema["lock"], (q.lock_id,)
    (exists,), *_ = yield q.schema["exists"], (f"{q.prefix}schema",)
    if not exists:
        yield q.schema["create"], ()
    yield q.schema["init"], ()
    (current,), *_ = yield q.schema["version"], ()
    target = len(q.migrations)
    if current > target:
        log.warning(
            "PostgreSQL store %r: schema version %d is newer than this donjon knows (%d);"
            " continuing (migrations only add)",
            q.prefix,
            current,
            target,
        )
        return
    for step in q.migrations[current:]:
        for statement in step:
            yield statement, ()
    if current < target:
        log.info("PostgreSQL store %r: schema migrated from %d to %d", q.prefix, current, target)
        yield q.schema["set_version"], (target,)


def _check_purge_every(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ConfigurationError("purge_every must be an int >= 0 (0: never purge)")
    return n


# -- shared encoding and decoding ----------------------------------------------
def _reject_constant(name: str) -> None:
    raise ValueError(f"session field holds {name}, which JSON (and jsonb) cannot")


def _encode_fields(fields: Mapping[str, str]) -> str:
    """Turn the per-key JSON texts of a write into one JSON object text.

    Each member holds its key's JSON text as a *string*: ``jsonb`` keeps
    strings exactly, where it would normalise numbers (``1e16``) and reorder
    object keys of parsed values. Each text is still checked to be JSON.

    Raises:
        ValueError: A value is not JSON text (or holds NaN or Infinity).
    """
    for name, text in fields.items():
        try:
            json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"session field {name!r} is not JSON text: {exc}") from exc
    return json.dumps(dict(fields), separators=(",", ":"), ensure_ascii=False)


def _decode_fields(text: str) -> dict[str, str]:
    """Turn the stored object back into the per-key JSON texts it holds."""
    data = json.loads(text)
    return {
        # A non-string member is a parsed value written by an earlier build.
        name: value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        for name, value in data.items()
    }


def _record(rows: list[_Row]) -> Record | None:
    if not rows:
        return None
    cls, user, created, seen, expires, data = rows[0]
    return Record(
        fields=_decode_fields(data),
        session_class=cls,
        user_id=user,
        created_at=float(created),
        last_seen=float(seen),
        expires_at=float(expires),
    )


def _infos(rows: list[_Row]) -> list[SessionInfo]:
    return [
        SessionInfo(
            key=key,
            session_class=cls,
            user_id=user,
            created_at=float(created),
            last_seen=float(seen),
            expires_at=float(expires),
            device=device_of(device),
        )
        for key, cls, user, created, seen, expires, device in rows
    ]


def _write_statement(q: _Queries, write: Write, now: float) -> _Statement:
    data = _encode_fields(write.fields)
    if write.create:
        return q.sql["create"], (
            write.key,
            write.session_class,
            write.user_id,
            write.created_at,
            write.last_seen,
            write.expires_at,
            data,
            now,
        )
    return q.sql["update"], (
        write.session_class,
        write.user_id,
        write.last_seen,
        write.expires_at,
        data,
        sorted(write.deleted),
        write.key,
        now,
        *(_expect(write.expect) if write.expect is not None else (None, None, None)),
    )


def _expect(expect: tuple[str, str]) -> tuple[str, str, str]:
    name, text = expect
    _encode_fields({name: text})  # the same checks as a written value (JSON text)
    return name, name, text


# -- psycopg, imported on first use -----------------------------------------------
@dataclass(frozen=True, slots=True)
class _Psycopg:
    psycopg: ModuleType
    pool: ModuleType


@functools.cache
def _psycopg() -> _Psycopg:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise MissingDependency(exc.name or "psycopg", "postgres") from exc
    return _Psycopg(psycopg, psycopg_pool)


@contextlib.contextmanager
def _failures(where: str) -> Iterator[None]:
    """Translate psycopg errors into the store's errors."""
    pg = _psycopg().psycopg
    try:
        yield
    except pg.DataError as exc:
        # Not an outage: the data itself was refused (e.g. U+0000 in a jsonb string).
        raise StoreError(f"PostgreSQL store {where} refused the data: {exc}") from exc
    except pg.Error as exc:
        raise StoreUnavailable(f"PostgreSQL store {where}: {exc}") from exc


def _table_missing(exc: StoreUnavailable) -> bool:
    undefined = _psycopg().psycopg.errors.UndefinedTable
    return isinstance(exc.__cause__, undefined)


def _positive(name: str, value: float) -> float:
    if not value > 0 or math.isinf(value):
        raise ConfigurationError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def _check_url(url: str) -> str:
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError(
            "a PostgreSQL URL starts with 'postgresql://' (e.g."
            " 'postgresql://app@db.internal:5432/app'); pass other connection strings"
            " as conninfo"
        )
    return url


@dataclass(frozen=True, slots=True)
class _PoolSettings:
    """How a store builds its own pool (ignored for a pool passed in)."""

    conninfo: str
    kwargs: dict[str, Any]
    min_size: int
    max_size: int
    timeout: float
    statement_timeout_ms: str
    where: str


def _pool_settings(
    conninfo: str,
    *,
    min_size: int,
    max_size: int,
    connect_timeout: float,
    pool_timeout: float,
    statement_timeout: float,
) -> _PoolSettings:
    pg = _psycopg().psycopg
    if not 0 <= min_size <= max_size or max_size < 1:
        raise ConfigurationError("need 0 <= min_size <= max_size and max_size >= 1")
    _positive("connect_timeout", connect_timeout)
    _positive("pool_timeout", pool_timeout)
    _positive("statement_timeout", statement_timeout)
    try:
        given = pg.conninfo.conninfo_to_dict(conninfo)
    except pg.ProgrammingError as exc:
        raise ConfigurationError(f"invalid PostgreSQL connection string: {exc}") from exc
    kwargs: dict[str, Any] = {"autocommit": True}
    # Only defaults: what the connection string says wins.
    if "connect_timeout" not in given:
        # libpq takes whole seconds and treats 1 as 2.
        kwargs["connect_timeout"] = max(2, math.ceil(connect_timeout))
    if "application_name" not in given:
        kwargs["application_name"] = "donjon"
    where = "{}:{}/{}".format(
        given.get("host", "localhost"), given.get("port", 5432), given.get("dbname", "")
    )
    return _PoolSettings(
        conninfo=conninfo,
        kwargs=kwargs,
        min_size=min_size,
        max_size=max_size,
        timeout=pool_timeout,
        statement_timeout_ms=str(max(1, round(statement_timeout * 1000))),
        where=where,
    )


# -- the client-side deadline ---------------------------------------------------------
@final
class _Watchdog:
    """Breaks the connection of a statement that outlives its deadline.

    ``statement_timeout`` is enforced by the server: a server that hangs (or a
    network that drops packets) never answers, and libpq would wait for ever
    (a frozen server's kernel still acknowledges every byte, so TCP timeouts
    do not fire either). One daemon thread keeps the deadlines; when one
    passes, it shuts the connection's socket down, so the waiting read fails
    at once (psycopg raises, the store raises :class:`StoreUnavailable`, the
    pool drops the connection). Shutting a socket down from another thread is
    safe: only the descriptor's duplicate is closed here.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int, int]] = []  # (deadline, ticket, fd)
        self._live: set[int] = set()
        self._tickets = itertools.count()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def guard(self, fileno: int, seconds: float) -> Iterator[None]:
        """Break connection ``fileno`` unless the block ends within ``seconds``."""
        ticket = next(self._tickets)
        entry = (time.monotonic() + seconds, ticket, fileno)
        with self._lock:
            heapq.heappush(self._heap, entry)
            self._live.add(ticket)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="donjon-postgres-watchdog", daemon=True
                )
                self._thread.start()
            if self._heap[0] is entry:
                self._lock.notify()  # only a new earliest deadline wakes the thread
        try:
            yield
        finally:
            with self._lock:
                self._live.discard(ticket)
                heap = self._heap
                if len(heap) > 2 * len(self._live) + 64:
                    # Finished entries leave lazily: drop them in bulk, so the
                    # heap stays proportional to the statements running now.
                    self._heap = [e for e in heap if e[1] in self._live]
                    heapq.heapify(self._heap)

    def _watch(self) -> None:
        while True:
            with self._lock:
                while not self._heap:
                    self._lock.wait()
                deadline, ticket, fileno = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._lock.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if ticket not in self._live:
                    continue
                self._live.discard(ticket)
                # Under the lock: the guarded block cannot have ended (leaving it
                # waits for this lock), so the descriptor is still its connection's,
                # never one reused by another socket or another request.
                _shut(fileno)
            log.error("PostgreSQL store: no answer within the deadline; connection broken")


def _shut(fileno: int) -> None:
    with contextlib.suppress(OSError):
        dup = socket.socket(fileno=os.dup(fileno))
        try:
            dup.shutdown(socket.SHUT_RDWR)
        finally:
            dup.close()


_WATCHDOG: Final = _Watchdog()
_MIGRATION_DEADLINE: Final = 3600.0
"""Schema set-up and migrations may rewrite every row: no statement timeout
(see ``no_timeout``), and an hour before the watchdog steps in."""


# -- the stores ----------------------------------------------------------------------
_NEED_ONE: Final = (
    "give exactly one of conninfo (a libpq connection string or a postgresql:// URL) and pool"
)


class _Common:
    __slots__ = (
        "_clock",
        "_closed",
        "_creates",
        "_deadline",
        "_owns_pool",
        "_purge_every",
        "_q",
        "_ready",
        "_where",
    )

    def __init__(
        self,
        conninfo: str | None,
        has_pool: bool,
        *,
        table_prefix: str,
        clock: Clock | None,
        purge_every: int,
        pool_timeout: float,
        statement_timeout: float,
    ) -> None:
        _psycopg()
        if (conninfo is None) != has_pool:
            raise ConfigurationError(_NEED_ONE)
        self._purge_every = _check_purge_every(purge_every)
        self._creates = itertools.count(1)
        _positive("pool_timeout", pool_timeout)
        _positive("statement_timeout", statement_timeout)
        # The client-side deadline of one statement (see _Watchdog).
        self._deadline = pool_timeout + statement_timeout + 1.0
        self._q = _render(_check_prefix(table_prefix))
        self._clock: Clock = clock or SystemClock()
        self._owns_pool = not has_pool
        self._where = ""
        self._ready = False
        self._closed = False

    def _purge_due(self, write: Write) -> bool:
        """Whether this create is the one of every ``purge_every`` that purges."""
        return bool(
            write.create and self._purge_every and next(self._creates) % self._purge_every == 0
        )

    def _repr(self, pool_name: str) -> str:
        target = self._where if self._owns_pool else f"pool {pool_name!r}"
        return f"{type(self).__name__}({target}, table_prefix={self._q.prefix!r})"


@final
class PostgresStore(_Common):
    """Sessions in PostgreSQL, for sync applications (a psycopg 3 ``ConnectionPool``).

    Guarantees:

    - Every method is one statement (schema migration aside, which runs in
      one transaction), so a record is never half-written; an update merges
      the changed fields into the stored ``jsonb`` object and removes the
      deleted ones in that one statement, so concurrent requests that change
      different keys of one session all persist.
    - An update finds only an existing, unexpired record: it returns
      ``False`` and never brings back a deleted or expired one. ``touch``
      likewise never revives an expired record.
    - Records are keyed by the key the engine gives (a hash of the session
      id): the table holds neither session ids nor cookies.
    - Any connection failure, pool timeout or statement timeout raises
      :class:`~donjon.StoreUnavailable` within about ``pool_timeout`` (or
      ``statement_timeout``) seconds; broken connections are checked for and
      replaced, so the same store works again once the server is back. A
      server that hangs without answering (which the server-side
      ``statement_timeout`` cannot catch) is cut off by a client-side
      deadline of ``pool_timeout + statement_timeout + 1`` seconds.

    Not guaranteed: expiry by the server. PostgreSQL has no TTL: expired rows
    are ignored on read and deleted by :meth:`purge_expired`, which the store
    runs itself after every ``purge_every``-th new record (1000 by default;
    0 turns it off, e.g. when a scheduled job purges instead).

    Args:
        conninfo: A libpq connection string or ``postgresql://`` URL; the store
            builds and owns its pool. Give this or ``pool``.
        pool: An existing pool to use instead; the store does not open or
            close it, and sets no timeouts on its connections.
        table_prefix: Prefix of the table names (``<prefix>sessions``,
            ``<prefix>epochs``, ``<prefix>schema``): 1-40 of ``a-z0-9_``.
        clock: The time source for expiry.
        min_size: Connections the owned pool keeps open.
        max_size: Connections the owned pool may open.
        connect_timeout: Seconds to wait for a new connection (libpq rounds
            up to whole seconds, at least 2) unless the connection string
            sets ``connect_timeout``.
        pool_timeout: Seconds to wait for a free working connection before
            :class:`~donjon.StoreUnavailable`.
        statement_timeout: The server-side limit of one statement, in seconds.
        purge_every: Purge expired rows after every this many new records
            (0: never; then run :meth:`purge_expired` from a scheduled job).

    Raises:
        MissingDependency: ``psycopg`` or ``psycopg-pool`` is not installed.
        ConfigurationError: Bad arguments (checked at construction).
    """

    __slots__ = ("_pool", "_setup_lock")

    blocking = True
    """Calls block on the network: the async face runs them in threads."""

    def __init__(
        self,
        conninfo: str | None = None,
        *,
        pool: SyncPool | None = None,
        table_prefix: str = DEFAULT_PREFIX,
        clock: Clock | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 2.0,
        pool_timeout: float = 2.0,
        statement_timeout: float = 3.0,
        purge_every: int = 1000,
    ) -> None:
        super().__init__(
            conninfo,
            pool is not None,
            table_prefix=table_prefix,
            clock=clock,
            purge_every=purge_every,
            pool_timeout=pool_timeout,
            statement_timeout=statement_timeout,
        )
        self._setup_lock = threading.Lock()
        if pool is not None:
            self._pool = pool
            self._where = f"pool {pool.name!r}"
            return
        if conninfo is None:
            raise ConfigurationError(_NEED_ONE)
        s = _pool_settings(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
            statement_timeout=statement_timeout,
        )
        self._where = s.where
        pool_mod = _psycopg().pool

        def configure(conn: Connection[TupleRow]) -> None:
            conn.execute(self._q.sql["statement_timeout"], (s.statement_timeout_ms,))

        self._pool = pool_mod.ConnectionPool(
            s.conninfo,
            kwargs=s.kwargs,
            min_size=s.min_size,
            max_size=s.max_size,
            timeout=s.timeout,
            # Short: the pool gives up a failing reconnection soon and the next
            # request starts a fresh one, so recovery does not wait for backoff.
            reconnect_timeout=s.timeout,
            configure=configure,
            check=self._check,
            name="donjon",
            open=False,
        )

    def _check(self, conn: Connection[TupleRow]) -> None:
        """The pool's check of a connection it hands out, under the deadline."""
        with _WATCHDOG.guard(conn.fileno(), self._deadline):
            _psycopg().pool.ConnectionPool.check_connection(conn)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresStore:
        """Build a store from a ``postgresql://`` URL; ``options`` as for the constructor."""
        return cls(_check_url(url), **options)

    # -- plumbing -------------------------------------------------------
    def _ensure(self) -> None:
        with self._setup_lock:
            if self._closed:
                raise StoreUnavailable(f"{self!r} is closed")
            if self._ready:
                return
            if self._owns_pool:
                with _failures(self._where):
                    self._pool.open(wait=False)
            with (
                _failures(self._where),
                self._pool.connection() as conn,
                _WATCHDOG.guard(conn.fileno(), _MIGRATION_DEADLINE),
                conn.transaction(),
            ):
                steps = _schema_steps(self._q)
                with contextlib.suppress(StopIteration):
                    sql, params = next(steps)
                    while True:
                        cur = conn.execute(sql, params)
                        sql, params = steps.send(cur.fetchall() if cur.description else [])
            self._ready = True

    def _run(self, statement: _Statement) -> tuple[list[_Row], int]:
        if not self._ready:
            self._ensure()
        sql, params = statement
        try:
            with (
                _failures(self._where),
                self._pool.connection() as conn,
                _WATCHDOG.guard(conn.fileno(), self._deadline),
            ):
                cur = conn.execute(sql, params)
                return (cur.fetchall() if cur.description else []), cur.rowcount
        except StoreUnavailable as exc:
            if _table_missing(exc):
                self._ready = False  # dropped behind our back: create it again next time
            raise

    # -- contract -------------------------------------------------------
    def load(self, key: str) -> Record | None:
        """Return the record under ``key`` unless it is missing or expired (one query)."""
        rows, _ = self._run((self._q.sql["load"], (key, self._clock.time())))
        return _record(rows)

    def write(self, write: Write) -> bool:
        """Create a record, or update an existing unexpired one field by field.

        Returns:
            ``False`` when an update found no live record, or a create found
            one (a create replaces only an expired row): nothing is written.
        """
        _, count = self._run(_write_statement(self._q, write, self._clock.time()))
        if count and self._purge_due(write):
            with contextlib.suppress(StoreUnavailable):  # the write itself is done
                self.purge_expired()
        return count > 0

    def delete(self, key: str) -> bool:
        """Delete a record; no error if it is missing. Whether it was there."""
        _, count = self._run((self._q.sql["delete"], (key,)))
        return count > 0

    def touch(self, key: str, *, last_seen: float, expires_at: float) -> None:
        """Move a live record's last-seen time forward and set its storage expiry."""
        self._run((self._q.sql["touch"], (last_seen, expires_at, key, self._clock.time())))

    def sessions_of(self, user_id: str) -> list[SessionInfo]:
        """List a user's live sessions, oldest first."""
        rows, _ = self._run((self._q.sql["sessions_of"], (user_id, self._clock.time())))
        return _infos(rows)

    def revoke_user(self, user_id: str) -> int:
        """Delete every session of a user; return how many were live."""
        rows, _ = self._run((self._q.sql["revoke_user"], (user_id, self._clock.time())))
        return int(rows[0][0])

    def epochs(self) -> dict[str, float]:
        """Return every class epoch."""
        rows, _ = self._run((self._q.sql["epochs"], ()))
        return {cls: float(epoch) for cls, epoch in rows}

    def raise_epoch(self, session_class: str, epoch: float) -> float:
        """Move a class epoch forward, atomically and never back; return the stored one."""
        rows, _ = self._run((self._q.sql["raise_epoch"], (session_class, float(epoch))))
        return float(rows[0][0])

    def purge_expired(self, now: float | None = None) -> int:
        """Delete expired records (PostgreSQL has no TTL); return how many."""
        t = self._clock.time() if now is None else now
        _, count = self._run((self._q.sql["purge"], (t,)))
        return count

    def close(self) -> None:
        """Close the pool if the store built it; the store is unusable afterwards."""
        with self._setup_lock:
            self._closed = True
            self._ready = False
        if self._owns_pool:
            self._pool.close()

    def __repr__(self) -> str:
        return self._repr(self._pool.name)


@final
class AsyncPostgresStore(_Common):
    """Sessions in PostgreSQL, for asyncio applications (a psycopg 3 ``AsyncConnectionPool``).

    The same table layout, statements, guarantees and arguments as
    :class:`PostgresStore` (``pool`` is an ``AsyncConnectionPool``); the two
    can share one database. The owned pool opens on first use, inside the
    running event loop.
    """

    __slots__ = ("_pool", "_setup_lock")

    def __init__(
        self,
        conninfo: str | None = None,
        *,
        pool: AsyncPool | None = None,
        table_prefix: str = DEFAULT_PREFIX,
        clock: Clock | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 2.0,
        pool_timeout: float = 2.0,
        statement_timeout: float = 3.0,
        purge_every: int = 1000,
    ) -> None:
        super().__init__(
            conninfo,
            pool is not None,
            table_prefix=table_prefix,
            clock=clock,
            purge_every=purge_every,
            pool_timeout=pool_timeout,
            statement_timeout=statement_timeout,
        )
        self._setup_lock = asyncio.Lock()
        if pool is not None:
            self._pool = pool
            self._where = f"pool {pool.name!r}"
            return
        if conninfo is None:
            raise ConfigurationError(_NEED_ONE)
        s = _pool_settings(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
            statement_timeout=statement_timeout,
        )
        self._where = s.where
        pool_mod = _psycopg().pool

        async def configure(conn: AsyncConnection[TupleRow]) -> None:
            await conn.execute(self._q.sql["statement_timeout"], (s.statement_timeout_ms,))

        self._pool = pool_mod.AsyncConnectionPool(
            s.conninfo,
            kwargs=s.kwargs,
            min_size=s.min_size,
            max_size=s.max_size,
            timeout=s.timeout,
            reconnect_timeout=s.timeout,  # see PostgresStore
            configure=configure,
            check=self._check,
            name="donjon",
            open=False,
        )

    async def _check(self, conn: AsyncConnection[TupleRow]) -> None:
        """The pool's check of a connection it hands out, under the deadline."""
        with _WATCHDOG.guard(conn.fileno(), self._deadline):
            await _psycopg().pool.AsyncConnectionPool.check_connection(conn)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncPostgresStore:
        """Build a store from a ``postgresql://`` URL; ``options`` as for the constructor."""
        return cls(_check_url(url), **options)

    # -- plumbing -------------------------------------------------------
    async def _ensure(self) -> None:
        async with self._setup_lock:
            if self._closed:
                raise StoreUnavailable(f"{self!r} is closed")
            if self._ready:
                return
            if self._owns_pool:
                with _failures(self._where):
                    await self._pool.open(wait=False)
            with _failures(self._where):
                async with self._pool.connection() as conn:
                    with _WATCHDOG.guard(conn.fileno(), _MIGRATION_DEADLINE):
                        async with conn.transaction():
                            steps = _schema_steps(self._q)
                            with contextlib.suppress(StopIteration):
                                sql, params = next(steps)
                                while True:
                                    cur = await conn.execute(sql, params)
                                    rows = await cur.fetchall() if cur.description else []
                                    sql, params = steps.send(rows)
            self._ready = True

    async def _run(self, statement: _Statement) -> tuple[list[_Row], int]:
        if not self._ready:
            await self._ensure()
        sql, params = statement
        try:
            with _failures(self._where):
                async with self._pool.connection() as conn:
                    with _WATCHDOG.guard(conn.fileno(), self._deadline):
                        cur = await conn.execute(sql, params)
                        return (await cur.fetchall() if cur.description else []), cur.rowcount
        except StoreUnavailable as exc:
            if _table_missing(exc):
                self._ready = False
            raise

    # -- contract -------------------------------------------------------
    async def load(self, key: str) -> Record | None:
        """Return the record under ``key`` unless it is missing or expired (one query)."""
        rows, _ = await self._run((self._q.sql["load"], (key, self._clock.time())))
        return _record(rows)

    async def write(self, write: Write) -> bool:
        """Create a record, or update an existing unexpired one field by field.

        Returns:
            ``False`` when an update found no live record, or a create found
            one (a create replaces only an expired row): nothing is written.
        """
        _, count = await self._run(_write_statement(self._q, write, self._clock.time()))
        if count and self._purge_due(write):
            with contextlib.suppress(StoreUnavailable):  # the write itself is done
                await self.purge_expired()
        return count > 0

    async def delete(self, key: str) -> bool:
        """Delete a record; no error if it is missing. Whether it was there."""
        _, count = await self._run((self._q.sql["delete"], (key,)))
        return count > 0

    async def touch(self, key: str, *, last_seen: float, expires_at: float) -> None:
        """Move a live record's last-seen time forward and set its storage expiry."""
        await self._run((self._q.sql["touch"], (last_seen, expires_at, key, self._clock.time())))

    async def sessions_of(self, user_id: str) -> list[SessionInfo]:
        """List a user's live sessions, oldest first."""
        rows, _ = await self._run((self._q.sql["sessions_of"], (user_id, self._clock.time())))
        return _infos(rows)

    async def revoke_user(self, user_id: str) -> int:
        """Delete every session of a user; return how many were live."""
        rows, _ = await self._run((self._q.sql["revoke_user"], (user_id, self._clock.time())))
        return int(rows[0][0])

    async def epochs(self) -> dict[str, float]:
        """Return every class epoch."""
        rows, _ = await self._run((self._q.sql["epochs"], ()))
        return {cls: float(epoch) for cls, epoch in rows}

    async def raise_epoch(self, session_class: str, epoch: float) -> float:
        """Move a class epoch forward, atomically and never back; return the stored one."""
        rows, _ = await self._run((self._q.sql["raise_epoch"], (session_class, float(epoch))))
        return float(rows[0][0])

    async def purge_expired(self, now: float | None = None) -> int:
        """Delete expired records (PostgreSQL has no TTL); return how many."""
        t = self._clock.time() if now is None else now
        _, count = await self._run((self._q.sql["purge"], (t,)))
        return count

    async def close(self) -> None:
        """Close the pool if the store built it; the store is unusable afterwards."""
        async with self._setup_lock:
            self._closed = True
            self._ready = False
        if self._owns_pool:
            await self._pool.close()

    def __repr__(self) -> str:
        return self._repr(self._pool.name)
