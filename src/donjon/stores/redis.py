"""Sessions in Redis or Redis Cluster: :class:`RedisStore` and :class:`AsyncRedisStore`.

Needs the ``redis`` extra (``pip install 'donjon[redis]'``).

Layout (``P`` is the prefix, ``donjon:`` by default; ``xy`` the first two hex
digits of the record key, used as a Redis Cluster hash tag)::

    P{xy}:s:<record key>      HASH  one session: d:<name> -> JSON text, plus
                                    class, user, uh (SHA-256 of user), created,
                                    seen, expires; a Redis TTL ends it
    P{xy}:u:<sha256(user)>    SET   the record keys of one user's sessions whose
                                    record key starts with xy (256 shards per user)
    Pepochs                   HASH  class -> epoch (the kill switch)

A session and its index shard share the hash tag, so they live in one slot
and one Lua script updates both atomically, in a cluster too. The record key
is already a hash of the session id: the id itself, which is a bearer
credential, is never stored. The user id appears in no key name (only its
SHA-256 does); it is kept as the ``user`` field of its own sessions, because
:meth:`~RedisStore.load` must return it.

Every change to a record is one Lua script (EVALSHA, loaded again when the
server's script cache is empty), so a record is never half-written.
The command-building logic is written once, as generators that yield batches
of commands (sans-I/O); :class:`RedisStore` and :class:`AsyncRedisStore` only
differ in how they send a batch.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeVar, final

from ..core import SystemClock
from ..errors import ConfigurationError, MissingDependency, StoreUnavailable
from ._base import DEVICE_FIELD, Record, SessionInfo, Write, device_of
from ._resp import ConnectionLostError, ReplyError, RespClient, RespConnectionError

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

    from ..typing import Clock

__all__ = ["AsyncRedisStore", "DEFAULT_PREFIX", "RedisStore"]

log = logging.getLogger("donjon.store")

DEFAULT_PREFIX: Final = "donjon:"
"""The default prefix of every key the stores write."""

_T = TypeVar("_T")

# --------------------------------------------------------------------------
# Lua scripts: each one is atomic, so no reader ever sees half a write.
# Keys an index shard is built from inside a script (ARGV prefix .. user hash)
# carry the same hash tag as KEYS[1], so they are in the same cluster slot.
# --------------------------------------------------------------------------

_WRITE_LUA: Final = """
-- KEYS[1] session hash; KEYS[2] the new user's index shard (only with a user)
-- ARGV: member, index prefix, now, create (1/0), ttl ms, class, user, user hash,
--       created, seen, expires, n (fields set), expected field ('' none), its
--       expected value, n name/value pairs, deleted names
local s = KEYS[1]
local member, idxp = ARGV[1], ARGV[2]
local now, create, ttl = tonumber(ARGV[3]), ARGV[4] == '1', tonumber(ARGV[5])
local kind = redis.call('TYPE', s)['ok']
local olduh, oldseen = false, false
if kind == 'hash' then
  local meta = redis.call('HMGET', s, 'uh', 'expires', 'seen')
  olduh, oldseen = meta[1], meta[3]
  local exp = tonumber(meta[2])
  local live = exp ~= nil and exp > now
  -- an update needs a live record; a create never overwrites one
  if live == create then return 0 end
  if ARGV[13] ~= '' and redis.call('HGET', s, ARGV[13]) ~= ARGV[14] then return 0 end
elseif not create then
  return 0
end
local uh = ARGV[8]
if olduh and olduh ~= uh then redis.call('SREM', idxp .. olduh, member) end
if create and kind ~= 'none' then redis.call('DEL', s) end
if ttl <= 0 then
  redis.call('DEL', s)
  if uh ~= '' then redis.call('SREM', KEYS[2], member) end
  return 1
end
local seen = ARGV[10]
if not create and oldseen then
  local old = tonumber(oldseen)
  if old ~= nil and old > tonumber(seen) then seen = oldseen end
end
-- One HSET for the metadata and (up to 100) fields: a usual write is one call.
local set = {'class', ARGV[6], 'seen', seen, 'expires', ARGV[11]}
if create then
  set[7], set[8] = 'created', ARGV[9]
end
if uh ~= '' then
  set[#set + 1], set[#set + 2] = 'user', ARGV[7]
  set[#set + 1], set[#set + 2] = 'uh', uh
elseif olduh then
  redis.call('HDEL', s, 'user', 'uh')
end
local last = 14 + 2 * tonumber(ARGV[12])
local i = 15
local j = math.min(i + 199, last)
for k = i, j do set[#set + 1] = ARGV[k] end
redis.call('HSET', s, unpack(set))
i = j + 1
while i <= last do
  j = math.min(i + 199, last)
  redis.call('HSET', s, unpack(ARGV, i, j))
  i = j + 1
end
i = last + 1
while i <= #ARGV do
  local j = math.min(i + 199, #ARGV)
  redis.call('HDEL', s, unpack(ARGV, i, j))
  i = j + 1
end
redis.call('PEXPIRE', s, ttl)
if uh ~= '' then
  redis.call('SADD', KEYS[2], member)
  if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
end
return 1
"""

_TOUCH_LUA: Final = """
-- KEYS[1] session hash. ARGV: member, index prefix, now, ttl ms, seen, expires
local s = KEYS[1]
if redis.call('TYPE', s)['ok'] ~= 'hash' then return 0 end
local meta = redis.call('HMGET', s, 'expires', 'seen', 'uh')
local exp = tonumber(meta[1])
if exp == nil or exp <= tonumber(ARGV[3]) then return 0 end
local ttl = tonumber(ARGV[4])
if ttl <= 0 then
  redis.call('DEL', s)
  if meta[3] then redis.call('SREM', ARGV[2] .. meta[3], ARGV[1]) end
  return 1
end
local old = tonumber(meta[2])
if old == nil or old < tonumber(ARGV[5]) then redis.call('HSET', s, 'seen', ARGV[5]) end
redis.call('HSET', s, 'expires', ARGV[6])
redis.call('PEXPIRE', s, ttl)
if meta[3] then
  local idx = ARGV[2] .. meta[3]
  if redis.call('PTTL', idx) < ttl then redis.call('PEXPIRE', idx, ttl) end
end
return 1
"""

_DELETE_LUA: Final = """
-- KEYS[1] session hash. ARGV: member, index prefix
local s = KEYS[1]
if redis.call('TYPE', s)['ok'] == 'hash' then
  local uh = redis.call('HGET', s, 'uh')
  if uh then redis.call('SREM', ARGV[2] .. uh, ARGV[1]) end
end
return redis.call('DEL', s)
"""

_PRUNE_LUA: Final = """
-- KEYS[1] index shard. ARGV: session prefix, user hash, members to re-check
local n = 0
for i = 3, #ARGV do
  local s = ARGV[1] .. ARGV[i]
  local gone = redis.call('TYPE', s)['ok'] ~= 'hash'
  if not gone then gone = redis.call('HGET', s, 'uh') ~= ARGV[2] end
  if gone then n = n + redis.call('SREM', KEYS[1], ARGV[i]) end
end
return n
"""

_REVOKE_LUA: Final = """
-- KEYS[1] index shard. ARGV: session prefix, user hash, now
local live = 0
local now = tonumber(ARGV[3])
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local s = ARGV[1] .. m
  if redis.call('TYPE', s)['ok'] == 'hash' then
    local meta = redis.call('HMGET', s, 'uh', 'expires')
    if meta[1] == ARGV[2] then
      local exp = tonumber(meta[2])
      if exp ~= nil and exp > now then live = live + 1 end
      redis.call('DEL', s)
    end
  end
end
redis.call('DEL', KEYS[1])
return live
"""

_RAISE_EPOCH_LUA: Final = """
-- KEYS[1] epochs hash. ARGV: class, epoch
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and tonumber(cur) and tonumber(cur) >= tonumber(ARGV[2]) then return cur end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return ARGV[2]
"""


@dataclass(frozen=True, slots=True)
class _Script:
    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> _Script:
        # Redis names scripts by SHA-1 (EVALSHA); nothing secret depends on it.
        return cls(source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())


_WRITE: Final = _Script.of(_WRITE_LUA)
_TOUCH: Final = _Script.of(_TOUCH_LUA)
_DELETE: Final = _Script.of(_DELETE_LUA)
_PRUNE: Final = _Script.of(_PRUNE_LUA)
_REVOKE: Final = _Script.of(_REVOKE_LUA)
_RAISE_EPOCH: Final = _Script.of(_RAISE_EPOCH_LUA)

_META: Final = ("class", "user", "uh", "created", "seen", "expires")
_DEVICE: Final = "d:" + DEVICE_FIELD
_SHARDS: Final = tuple(f"{i:02x}" for i in range(256))
_SHARD_SET: Final = frozenset(_SHARDS)


class _Call(NamedTuple):
    """One command to send; ``script`` is set when ``args`` is an EVALSHA."""

    args: tuple[str | int, ...]
    script: _Script | None = None


# An operation: a generator yielding batches of calls and receiving their
# results in order (an error that concerns the data, such as WRONGTYPE,
# arrives as an exception *value*; unavailability is raised by the runner).
_Op = Generator[list[_Call], list[Any], _T]


def _cmd(*args: str | int) -> _Call:
    return _Call(args)


def _eval(script: _Script, keys: Sequence[str], args: Sequence[str | int]) -> _Call:
    return _Call(("EVALSHA", script.sha, len(keys), *keys, *args), script)


def _num(x: float) -> str:
    """Format a time for Redis: the shortest text that reads back as the same float."""
    text = repr(float(x))
    if text in _NOT_FINITE:
        raise ValueError(f"times must be finite numbers, not {x!r}")
    return text


_NOT_FINITE: Final = frozenset({"inf", "-inf", "nan"})


def _text(v: object) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, str):
        return v
    raise ValueError(f"unexpected reply {type(v).__name__}")


def _pairs(flat: list[Any]) -> Iterator[tuple[Any, Any]]:
    """``[k1, v1, k2, v2, ...]`` as pairs (an odd length is a ValueError: corrupt)."""
    it = iter(flat)
    return zip(it, it, strict=True)


def _user_hash(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


def _shard(key: str) -> str:
    head = key[:2]
    if head in _SHARD_SET:
        return head
    # Not a lowercase-hex record key: derive the shard, so it still spreads evenly.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:2]


def _corrupt(message: str, key: str | None = None) -> None:
    """Log unreadable stored data: no traceback (it would quote the data), a short key."""
    if key is None:
        log.error(message)
    else:
        log.error(message, key[:12])


def _check(result: Any) -> Any:
    """Return ``result``, or raise StoreUnavailable if it is an error value."""
    if isinstance(result, BaseException):
        raise StoreUnavailable(f"Redis store: {result}") from result
    return result


class _Logic:
    """Key names and command batches for every store operation (no I/O)."""

    __slots__ = ("clock", "prefix")

    def __init__(self, prefix: str, clock: Clock) -> None:
        if "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                f"Redis key prefix {prefix!r} must not contain '{{' or '}}':"
                " donjon adds its own hash tags for Redis Cluster"
            )
        self.prefix = prefix
        self.clock = clock

    # -- key names -------------------------------------------------------
    def session_key(self, key: str) -> str:
        """Return the name of the hash holding record ``key``."""
        return f"{self.prefix}{{{_shard(key)}}}:s:{key}"

    def index_key(self, shard: str, user_hash: str) -> str:
        """Return the name of one shard of a user's index."""
        return f"{self.prefix}{{{shard}}}:u:{user_hash}"

    def _session_prefix(self, shard: str) -> str:
        return f"{self.prefix}{{{shard}}}:s:"

    def _index_prefix(self, shard: str) -> str:
        return f"{self.prefix}{{{shard}}}:u:"

    @property
    def epochs_key(self) -> str:
        """Return the name of the epochs hash."""
        return f"{self.prefix}epochs"

    # -- parsing -----------------------------------------------------------
    def _record(self, key: str, raw: Any) -> Record | None:
        """A record from an ``HGETALL`` reply: a dict (redis-py) or a flat list (lean)."""
        if isinstance(raw, BaseException):  # not a hash, or not UTF-8
            _corrupt("session record %s in Redis cannot be read; treated as missing", key)
            return None
        if not raw:
            return None
        pairs = raw.items() if isinstance(raw, dict) else _pairs(raw)
        fields: dict[str, str] = {}
        meta: dict[str, str] = {}
        try:
            for name, value in pairs:
                # bytes from the lean client and redis-py; UnicodeDecodeError is a ValueError
                name = name.decode() if name.__class__ is bytes else _text(name)
                value = value.decode() if value.__class__ is bytes else _text(value)
                if name.startswith("d:"):
                    fields[name[2:]] = value
                else:
                    meta[name] = value
            rec = Record(
                fields=fields,
                session_class=meta["class"],
                user_id=meta.get("user"),
                created_at=float(meta["created"]),
                last_seen=float(meta["seen"]),
                expires_at=float(meta["expires"]),
            )
        except (KeyError, ValueError):
            _corrupt("session record %s in Redis is corrupt; treated as missing", key)
            return None
        if rec.expires_at <= self.clock.time():
            return None
        return rec

    # -- operations ----------------------------------------------------------
    def load(self, key: str) -> _Op[Record | None]:
        """Read one record."""
        (raw,) = yield [_cmd("HGETALL", self.session_key(key))]
        return self._record(key, raw)

    def write(self, w: Write) -> _Op[bool]:
        """Create or update one record and its user's index, in one script."""
        (res,) = yield [self.write_call(w)]
        return bool(_check(res))

    def write_call(self, w: Write) -> _Call:
        """The script call of :meth:`write`."""
        now = self.clock.time()
        ttl = math.ceil((float(w.expires_at) - now) * 1000)
        shard = _shard(w.key)
        uh = _user_hash(w.user_id) if w.user_id is not None else ""
        keys = [self.session_key(w.key)]
        if w.user_id is not None:
            keys.append(self.index_key(shard, uh))
        args: list[str | int] = [
            w.key,
            self._index_prefix(shard),
            _num(now),
            1 if w.create else 0,
            ttl,
            w.session_class,
            w.user_id or "",
            uh,
            # The creation time is only read when the record is created.
            _num(w.created_at) if w.create else "",
            _num(w.last_seen),
            _num(w.expires_at),
            len(w.fields),
            *((f"d:{w.expect[0]}", w.expect[1]) if w.expect and not w.create else ("", "")),
        ]
        for name, value in w.fields.items():
            args += (f"d:{name}", value)
        if not w.create:
            args += (f"d:{name}" for name in w.deleted if name not in w.fields)
        return _eval(_WRITE, keys, args)

    def delete(self, key: str) -> _Op[bool]:
        """Delete one record and its index entry; whether it was there."""
        args = [key, self._index_prefix(_shard(key))]
        (res,) = yield [_eval(_DELETE, [self.session_key(key)], args)]
        _check(res)
        return bool(res)

    def touch(self, key: str, last_seen: float, expires_at: float) -> _Op[None]:
        """Refresh last-seen and the TTL of a live record."""
        seen, expires = _num(last_seen), _num(expires_at)
        now = self.clock.time()
        ttl = math.ceil((float(expires_at) - now) * 1000)
        args: list[str | int] = [
            key,
            self._index_prefix(_shard(key)),
            _num(now),
            ttl,
            seen,
            expires,
        ]
        (res,) = yield [_eval(_TOUCH, [self.session_key(key)], args)]
        _check(res)

    def _members(self, user_hash: str) -> _Op[list[tuple[str, str]]]:
        replies = yield [_cmd("SMEMBERS", self.index_key(sh, user_hash)) for sh in _SHARDS]
        out: list[tuple[str, str]] = []
        for shard, members in zip(_SHARDS, replies, strict=True):
            for m in _check(members):
                try:
                    out.append((shard, _text(m)))
                except ValueError:
                    _corrupt("a user index in Redis holds an unreadable member; skipped")
        return out

    def sessions_of(self, user_id: str) -> _Op[list[SessionInfo]]:
        """List a user's live sessions; drop index entries whose record is gone."""
        uh = _user_hash(user_id)
        members = yield from self._members(uh)
        if not members:
            return []
        metas = yield [_cmd("HMGET", self.session_key(k), *_META, _DEVICE) for _, k in members]
        now = self.clock.time()
        out: list[SessionInfo] = []
        stale: dict[str, list[str]] = {}
        for (shard, key), meta in zip(members, metas, strict=True):
            if isinstance(meta, BaseException):  # not a hash, or not UTF-8
                _corrupt("session record %s in Redis cannot be read; not listed", key)
                stale.setdefault(shard, []).append(key)
                continue
            if all(v is None for v in meta):  # gone: expired or deleted
                stale.setdefault(shard, []).append(key)
                continue
            try:
                cls, user, muh, created, seen, expires, device = (
                    None if v is None else _text(v) for v in meta
                )
                if muh != uh or user is None:
                    stale.setdefault(shard, []).append(key)
                    continue
                info = SessionInfo(
                    key=key,
                    session_class=_text(cls),
                    user_id=user,
                    created_at=float(_text(created)),
                    last_seen=float(_text(seen)),
                    expires_at=float(_text(expires)),
                    device=device_of(device),
                )
            except ValueError:
                _corrupt("session record %s in Redis is corrupt; not listed", key)
                continue
            if info.expires_at > now:
                out.append(info)
        if stale:
            # Re-checked inside a script: a record that came back meanwhile stays indexed.
            results = yield [
                _eval(_PRUNE, [self.index_key(sh, uh)], [self._session_prefix(sh), uh, *keys])
                for sh, keys in stale.items()
            ]
            for r in results:
                _check(r)
        return sorted(out, key=lambda i: (i.created_at, i.key))

    def revoke_user(self, user_id: str) -> _Op[int]:
        """Delete every session of a user, shard by shard (each shard atomically)."""
        uh = _user_hash(user_id)
        members = yield from self._members(uh)
        shards = sorted({sh for sh, _ in members})
        if not shards:
            return 0
        now = _num(self.clock.time())
        counts = yield [
            _eval(_REVOKE, [self.index_key(sh, uh)], [self._session_prefix(sh), uh, now])
            for sh in shards
        ]
        return sum(int(_check(c)) for c in counts)

    def epochs(self) -> _Op[dict[str, float]]:
        """Read every class epoch."""
        (raw,) = yield [_cmd("HGETALL", self.epochs_key)]
        out: dict[str, float] = {}
        for k, v in _check(raw).items():
            try:
                out[_text(k)] = float(_text(v))
            except ValueError:
                _corrupt("a class epoch in Redis is corrupt; ignored")
        return out

    def raise_epoch(self, session_class: str, epoch: float) -> _Op[float]:
        """Move one class epoch forward (a max, in one script)."""
        (res,) = yield [_eval(_RAISE_EPOCH, [self.epochs_key], [session_class, _num(epoch)])]
        return float(_text(_check(res)))


# --------------------------------------------------------------------------
# Execution: the only part that differs between the sync and async stores.
# --------------------------------------------------------------------------


def _import_redis() -> ModuleType:
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.cluster
        import redis.asyncio.retry
        import redis.backoff
        import redis.cluster
        import redis.exceptions
        import redis.retry
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency("redis", "redis") from exc
    return redis


def _client_kwargs(
    r: ModuleType,
    socket_timeout: float,
    socket_connect_timeout: float,
    extra: Mapping[str, Any],
    *,
    aio: bool,
) -> dict[str, Any]:
    # One quick retry reconnects a pooled socket the server closed (e.g. after
    # a restart); more retries with long back-off would make a dead server
    # answer slowly instead of failing closed at once.
    retry_cls = r.asyncio.retry.Retry if aio else r.retry.Retry
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "retry": retry_cls(r.backoff.ExponentialBackoff(cap=0.05, base=0.01), 1),
    }
    kwargs.update(extra)
    return kwargs


class _Base:
    __slots__ = ("_close_client", "_cluster", "_down", "_logic", "_noscript", "_value_errors")

    def __init__(self, prefix: str, clock: Clock | None, close_client: bool, cluster: bool) -> None:
        r = _import_redis()
        self._logic = _Logic(prefix, clock or SystemClock())
        self._cluster = cluster
        self._close_client = close_client
        ex = r.exceptions
        self._down: tuple[type[BaseException], ...] = (
            ex.RedisError,
            ex.RedisClusterException,
            OSError,
        )
        self._noscript: type[BaseException] = ex.NoScriptError
        self._value_errors: tuple[type[BaseException], ...] = (ex.ResponseError, ReplyError)

    @property
    def prefix(self) -> str:
        """The prefix of every key this store writes."""
        return self._logic.prefix

    def _is_value_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` concerns one record (wrong type, bad bytes), not the server."""
        if isinstance(exc, UnicodeDecodeError):
            return True
        return isinstance(exc, self._value_errors) and str(exc).startswith("WRONGTYPE")

    def _triage(self, results: list[Any]) -> list[Any]:
        for res in results:
            if isinstance(res, BaseException) and not self._is_value_error(res):
                raise StoreUnavailable(f"Redis store: {res}") from res
        return results

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        if isinstance(exc, UnicodeDecodeError):
            return StoreUnavailable(
                "Redis store: a reply is not UTF-8 text; give the store a client"
                " with decode_responses=False to read such records as missing"
            )
        return StoreUnavailable(f"Redis store unavailable: {type(exc).__name__}: {exc}")


@final
class RedisStore(_Base):
    """Sessions in Redis or Redis Cluster, for synchronous apps.

    Guarantees:

    - Every write is one Lua script: a record is created whole, or updated
      field by field (``HSET`` what changed, ``HDEL`` what was deleted), never
      left half-written; concurrent requests changing different keys of one
      session all persist.
    - An update finds the live record or returns ``False``: a deleted or
      expired record is never brought back.
    - Records expire through Redis TTLs (``PEXPIRE``, computed from the
      store's clock so a skew between app host and Redis host does not shift
      it); loads also check the stored expiry against the clock.
    - The session id is never stored (the engine passes a hash of it); the
      user id is in no key name.
    - Every Redis failure (connection refused, timeout, cluster down, loading,
      any ``RedisError``) raises :class:`~donjon.StoreUnavailable`; once the
      server is back, the same store works again.

    Not guaranteed: durability beyond what the Redis server is configured for
    (a restart without persistence loses every session: users log in again),
    an atomic :meth:`revoke_user` across shards (each of the 256 index
    shards is revoked atomically; a login racing the revoke may survive it),
    and hiding user ids from whoever can read Redis (each session holds its
    user id; index names hold its unsalted SHA-256).

    Args:
        client: A ``redis.Redis`` or ``redis.cluster.RedisCluster``. Give it
            socket timeouts and a short retry policy (redis-py's default
            retries ten times with back-off, so a dead server answers
            slowly), or use :meth:`from_url`, which does both.
        prefix: Prepended to every key; must not contain ``{`` or ``}``.
        clock: The time source for expiry.
        close_client: Close ``client`` in :meth:`close` (``from_url`` sets it).

    Raises:
        MissingDependency: The ``redis`` package is not installed.
        ConfigurationError: The prefix holds a brace.
    """

    __slots__ = ("client",)

    blocking = True
    """Calls block on the network: the async engine runs them in threads
    (prefer :class:`AsyncRedisStore` there)."""

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock | None = None,
        close_client: bool = False,
    ) -> None:
        r = _import_redis()
        super().__init__(prefix, clock, close_client, isinstance(client, r.cluster.RedisCluster))
        self.client = client

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock | None = None,
        socket_timeout: float = 1.0,
        socket_connect_timeout: float = 1.0,
        **client_kwargs: Any,
    ) -> RedisStore:
        """Connect to ``url`` (``redis://``, ``rediss://``, ``unix://``) with fail-fast timeouts.

        Args:
            url: The server, or any node of a cluster.
            cluster: Use a ``RedisCluster`` client.
            prefix: Prepended to every key.
            clock: The time source for expiry.
            socket_timeout: Seconds to wait for a reply before StoreUnavailable.
            socket_connect_timeout: Seconds to wait for a connection.
            **client_kwargs: More options for the redis-py client.

        Raises:
            StoreUnavailable: A cluster client could not reach any node
                (a standalone client connects lazily).
        """
        r = _import_redis()
        kwargs = _client_kwargs(r, socket_timeout, socket_connect_timeout, client_kwargs, aio=False)
        client: redis.Redis | redis.cluster.RedisCluster
        try:
            if cluster:
                client = r.cluster.RedisCluster.from_url(url, **kwargs)
            else:
                client = r.Redis.from_url(url, **kwargs)
        except (r.exceptions.RedisError, r.exceptions.RedisClusterException, OSError) as exc:
            raise StoreUnavailable(f"cannot connect to Redis at {url!r}: {exc}") from exc
        return cls(client, prefix=prefix, clock=clock, close_client=True)

    # -- execution -------------------------------------------------------
    def _run(self, op: _Op[_T]) -> _T:
        try:
            calls = next(op)
            while True:
                calls = op.send(self._execute(calls))
        except StopIteration as stop:
            result: _T = stop.value
            return result

    def _execute(self, calls: list[_Call]) -> list[Any]:
        c: Any = self.client
        try:
            if len(calls) == 1 or (self._cluster and any(x.script for x in calls)):
                # Cluster pipelines refuse EVALSHA: scripts there go one by one.
                return self._triage([self._one(x) for x in calls])
            pipe = c.pipeline() if self._cluster else c.pipeline(transaction=False)
            for x in calls:
                pipe.execute_command(*x.args)
            try:
                results: list[Any] = pipe.execute(raise_on_error=False)
            except UnicodeDecodeError:
                # A decoding client met bytes that are not UTF-8 (redis-py has
                # dropped that connection). Reads are safe to repeat one by one,
                # so each bad record is reported on its own; scripts are not.
                if any(x.script for x in calls):
                    raise
                return self._triage([self._one(x) for x in calls])
            results = [
                self._one(x) if isinstance(res, self._noscript) else res
                for x, res in zip(calls, results, strict=True)
            ]
            return self._triage(results)
        except StoreUnavailable:
            raise
        except self._down as exc:
            raise self._unavailable(exc) from exc
        except UnicodeDecodeError as exc:
            raise self._unavailable(exc) from exc

    def _one(self, call: _Call) -> Any:
        c: Any = self.client
        try:
            try:
                return c.execute_command(*call.args)
            except self._noscript:
                if call.script is None:
                    raise
                # The server's script cache is empty (a restart): load it, retry once.
                c.script_load(call.script.source)
                return c.execute_command(*call.args)
        except UnicodeDecodeError as exc:
            return exc
        except self._value_errors as exc:
            return exc

    # -- contract ----------------------------------------------------------
    def load(self, key: str) -> Record | None:
        """Return the live record under ``key``, or ``None``.

        A record that cannot be read (not a hash, bytes that are not UTF-8,
        missing metadata) is logged and treated as missing. Field values are
        returned as stored: the engine decodes the JSON.
        """
        return self._run(self._logic.load(key))

    def write(self, write: Write) -> bool:
        """Save a record atomically; return ``False`` when an update found no live record."""
        return self._run(self._logic.write(write))

    def delete(self, key: str) -> bool:
        """Delete a record and its user-index entry; no error if missing."""
        return self._run(self._logic.delete(key))

    def touch(self, key: str, *, last_seen: float, expires_at: float) -> None:
        """Move a live record's last-seen time forward and reset its TTL; never creates one."""
        self._run(self._logic.touch(key, last_seen, expires_at))

    def sessions_of(self, user_id: str) -> list[SessionInfo]:
        """List a user's live sessions, oldest first (reads all 256 index shards).

        Index entries whose record has expired or gone are removed on the way.
        """
        return self._run(self._logic.sessions_of(user_id))

    def revoke_user(self, user_id: str) -> int:
        """Delete every session of a user; return how many were live."""
        return self._run(self._logic.revoke_user(user_id))

    def epochs(self) -> dict[str, float]:
        """Return the class epochs stored in Redis."""
        return self._run(self._logic.epochs())

    def raise_epoch(self, session_class: str, epoch: float) -> float:
        """Move a class epoch forward, never back (atomically); return the stored epoch."""
        return self._run(self._logic.raise_epoch(session_class, epoch))

    def close(self) -> None:
        """Close the client if this store owns it (it does when made by :meth:`from_url`)."""
        if self._close_client:
            self.client.close()

    def __repr__(self) -> str:
        kind = "cluster" if self._cluster else "standalone"
        return f"RedisStore({kind}, prefix={self.prefix!r})"


@final
class AsyncRedisStore(_Base):
    """The asyncio twin of :class:`RedisStore`: same layout, same guarantees.

    :meth:`from_url` talks to a single server over Donjon's own pipelined
    connection (one socket, commands of concurrent requests share it, replies
    parsed by hiredis when installed): a command costs a fraction of the CPU
    time redis-py's asyncio client spends on it. A cluster, or any option
    only redis-py knows, goes through redis-py.

    Args:
        client: A ``redis.asyncio.Redis``, a ``redis.asyncio.cluster.RedisCluster``,
            or (as :meth:`from_url` makes) Donjon's lean client.
        prefix: Prepended to every key; must not contain ``{`` or ``}``.
        clock: The time source for expiry.
        close_client: Close ``client`` in :meth:`close` (``from_url`` sets it).

    Raises:
        MissingDependency: The ``redis`` package is not installed.
        ConfigurationError: The prefix holds a brace.
    """

    __slots__ = ("_lean", "client")

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster | RespClient,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock | None = None,
        close_client: bool = False,
    ) -> None:
        r = _import_redis()
        super().__init__(
            prefix, clock, close_client, isinstance(client, r.asyncio.cluster.RedisCluster)
        )
        self.client = client
        self._lean = client if isinstance(client, RespClient) else None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock | None = None,
        socket_timeout: float = 1.0,
        socket_connect_timeout: float = 1.0,
        **client_kwargs: Any,
    ) -> AsyncRedisStore:
        """Make a client for ``url`` with fail-fast timeouts (it connects on first use).

        A single server (``redis://``, ``rediss://``, ``unix://``) gets the
        lean pipelined client; ``cluster=True``, any ``client_kwargs``, or URL
        options the lean client does not know (it knows ``db`` and
        ``ssl_cert_reqs``) get a redis-py client.

        Args:
            url: The server, or any node of a cluster.
            cluster: Use a ``redis.asyncio.cluster.RedisCluster`` client.
            prefix: Prepended to every key.
            clock: The time source for expiry.
            socket_timeout: Seconds to wait for a reply before StoreUnavailable.
            socket_connect_timeout: Seconds to wait for a connection.
            **client_kwargs: Options for a redis-py client (choosing redis-py).

        Raises:
            ValueError: The URL cannot be read.
        """
        if not cluster and not client_kwargs:
            try:
                lean = RespClient(
                    url,
                    socket_timeout=socket_timeout,
                    socket_connect_timeout=socket_connect_timeout,
                )
            except ValueError:
                pass  # URL options only redis-py knows (or a bad URL: redis-py says why)
            else:
                return cls(lean, prefix=prefix, clock=clock, close_client=True)
        r = _import_redis()
        kwargs = _client_kwargs(r, socket_timeout, socket_connect_timeout, client_kwargs, aio=True)
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
        if cluster:
            client = r.asyncio.cluster.RedisCluster.from_url(url, **kwargs)
        else:
            client = r.asyncio.Redis.from_url(url, **kwargs)
        return cls(client, prefix=prefix, clock=clock, close_client=True)

    # -- execution -------------------------------------------------------
    async def _run(self, op: _Op[_T]) -> _T:
        lean = self._lean
        try:
            calls = next(op)
            while True:
                if lean is not None:
                    calls = op.send(await self._execute_lean(lean, calls))
                else:
                    calls = op.send(await self._execute(calls))
        except StopIteration as stop:
            result: _T = stop.value
            return result

    async def _execute(self, calls: list[_Call]) -> list[Any]:
        c: Any = self.client
        try:
            if len(calls) == 1:
                return self._triage([await self._one(calls[0])])
            if self._cluster and any(x.script for x in calls):
                # Cluster pipelines refuse EVALSHA: send the scripts concurrently.
                gathered = await asyncio.gather(
                    *(self._one(x) for x in calls), return_exceptions=True
                )
                return self._triage(list(gathered))
            pipe = c.pipeline() if self._cluster else c.pipeline(transaction=False)
            for x in calls:
                pipe.execute_command(*x.args)
            try:
                results = await pipe.execute(raise_on_error=False)
            except UnicodeDecodeError:
                if any(x.script for x in calls):  # see RedisStore._execute
                    raise
                return self._triage([await self._one(x) for x in calls])
            results = [
                await self._one(x) if isinstance(res, self._noscript) else res
                for x, res in zip(calls, results, strict=True)
            ]
            return self._triage(results)
        except StoreUnavailable:
            raise
        except self._down as exc:
            raise self._unavailable(exc) from exc
        except UnicodeDecodeError as exc:
            raise self._unavailable(exc) from exc

    async def _execute_lean(self, client: RespClient, calls: list[_Call]) -> list[Any]:
        """One pipelined batch; scripts the server lost are loaded and run again.

        A batch whose connection broke is sent once more on a new connection
        (a restarted server): every operation of this store is idempotent.
        """
        commands = [x.args for x in calls]
        try:
            try:
                replies = await client.send(commands)
            except ConnectionLostError:
                replies = await client.send(commands)
            lost = None
            for i, res in enumerate(replies):
                if res.__class__ is ReplyError:
                    x = calls[i]
                    if x.script is not None and str(res).startswith("NOSCRIPT"):
                        lost = lost or {}
                        lost[i] = x.script.source
                elif res.__class__ is list and calls[i].args[0] == "HGETALL":
                    # The shape redis-py gives: a hash as a dict.
                    replies[i] = dict(zip(res[::2], res[1::2], strict=True))
            if lost:
                loaded = await client.execute([("SCRIPT", "LOAD", s) for s in set(lost.values())])
                self._triage(loaded)
                again = await client.execute([calls[i].args for i in lost])
                for i, res in zip(lost, again, strict=True):
                    replies[i] = res
        except RespConnectionError as exc:
            raise self._unavailable(exc) from exc
        return self._triage(replies)

    async def _one(self, call: _Call) -> Any:
        c: Any = self.client
        try:
            try:
                return await c.execute_command(*call.args)
            except self._noscript:
                if call.script is None:
                    raise
                await c.script_load(call.script.source)
                return await c.execute_command(*call.args)
        except UnicodeDecodeError as exc:
            return exc
        except self._value_errors as exc:
            return exc

    # -- contract ----------------------------------------------------------
    async def load(self, key: str) -> Record | None:
        """Return the live record under ``key``, or ``None`` (see :meth:`RedisStore.load`)."""
        lean = self._lean
        if lean is None:
            return await self._run(self._logic.load(key))
        # Every request's read: one command, sent without building a batch.
        logic = self._logic
        return logic._record(key, await self._lean_one(lean, ("HGETALL", logic.session_key(key))))

    async def write(self, write: Write) -> bool:
        """Save a record atomically; return ``False`` when an update found no live record."""
        lean = self._lean
        if lean is None:
            return await self._run(self._logic.write(write))
        call = self._logic.write_call(write)
        return bool(_check(await self._lean_one(lean, call.args, call.script)))

    async def _lean_one(
        self, client: RespClient, args: tuple[str | int, ...], script: _Script | None = None
    ) -> Any:
        """One command on the lean connection; :meth:`_execute_lean` for a single call."""
        try:
            try:
                (reply,) = await client.send((args,))
            except ConnectionLostError:  # a restarted server: the command is idempotent
                (reply,) = await client.send((args,))
            if reply.__class__ is ReplyError:
                if script is not None and str(reply).startswith("NOSCRIPT"):
                    self._triage(await client.execute([("SCRIPT", "LOAD", script.source)]))
                    (reply,) = await client.execute([args])
                self._triage([reply])
        except RespConnectionError as exc:
            raise self._unavailable(exc) from exc
        return reply

    async def delete(self, key: str) -> bool:
        """Delete a record and its user-index entry; no error if missing."""
        return await self._run(self._logic.delete(key))

    async def touch(self, key: str, *, last_seen: float, expires_at: float) -> None:
        """Move a live record's last-seen time forward and reset its TTL; never creates one."""
        await self._run(self._logic.touch(key, last_seen, expires_at))

    async def sessions_of(self, user_id: str) -> list[SessionInfo]:
        """List a user's live sessions, oldest first (reads all 256 index shards)."""
        return await self._run(self._logic.sessions_of(user_id))

    async def revoke_user(self, user_id: str) -> int:
        """Delete every session of a user; return how many were live."""
        return await self._run(self._logic.revoke_user(user_id))

    async def epochs(self) -> dict[str, float]:
        """Return the class epochs stored in Redis."""
        return await self._run(self._logic.epochs())

    async def raise_epoch(self, session_class: str, epoch: float) -> float:
        """Move a class epoch forward, never back (atomically); return the stored epoch."""
        return await self._run(self._logic.raise_epoch(session_class, epoch))

    async def close(self) -> None:
        """Close the client if this store owns it (it does when made by :meth:`from_url`)."""
        if self._close_client:
            await self.client.aclose()

    def __repr__(self) -> str:
        kind = "cluster" if self._cluster else "standalone"
        return f"AsyncRedisStore({kind}, prefix={self.prefix!r})"
