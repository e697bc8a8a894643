"""Fleet-wide guard: :class:`RedisGuardSync` shares counts and lock-outs through Redis.

Needs the ``redis`` extra (``pip install 'donjon[redis]'``). Plug it into the
guard of every process::

    policy = GuardPolicy()
    sync = RedisGuardSync.from_url("redis://redis:6379/0", policy=policy)
    engine = Engine(keyring=ring, store=store, guard=Guard(policy, sync=sync))

Each process keeps its own in-memory :class:`~donjon.guard.Guard` (the check
on every request stays one dictionary look-up, no network). At most once per
``interval`` the guard hands this object what it counted since the last
exchange; one Lua script adds those counts to the fleet-wide counters, starts
lock-outs where the fleet-wide counts cross the policy's thresholds, and
returns every live lock-out, which the guard then enforces locally. So a
guesser who spreads attempts over many processes or machines is counted as
one client, and a client locked out anywhere is locked out everywhere within
about one ``interval``.

Layout (``P`` is the prefix, ``donjon:`` by default; ``h`` the first 32 hex
digits of the SHA-256 of a client key)::

    P{guard}:w:<h>   HASH  the sliding window: start, a, u (this window's attack
                           and UNKNOWN counts), pa, pu (the previous window's);
                           TTL 2 x window
    P{guard}:x:<h>   HASH  the back-off memory: strikes, struck (time of the
                           last lock-out), until; TTL until the lock-out ends
                           plus ``forgive_after``
    P{guard}:locks   ZSET  member = client key, score = locked-until; TTL
                           ``max_lockout`` + 1 s from the last lock-out;
                           ended lock-outs are removed by every exchange

Every key carries the hash tag ``{guard}``, so on Redis Cluster they share
one slot and each script touches one node only. Client keys appear in no key
name: they are hashed, because a client key is client-controlled text (a
custom ``Guard(key=...)`` may return anything, braces included, which would
move a key to another cluster slot) and because an address has no business
in a key listing. The sorted set, however, holds the *raw* client keys of
the clients locked out right now: that is how the lock map returned to the
guard maps back to the keys the guard knows. A client key therefore stays in
Redis only while its lock-out lasts; counters and back-off memory are keyed
by the hash alone.

The arithmetic is the in-memory guard's (:meth:`Guard.record
<donjon.guard.Guard.record>`): two fixed windows, the previous one weighted
by how much of it still overlaps the sliding window; a lock-out lasts
:meth:`GuardPolicy.lock_duration <donjon.guard.GuardPolicy.lock_duration>`
of the strike count, which starts again after ``forgive_after`` seconds
without a lock-out. Times are the guard's ``now`` (the engine's clock): the
hosts of a fleet should keep their clocks in step (NTP), as they must for
token expiry anyway.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, final

from .errors import ConfigurationError, MissingDependency, StoreUnavailable
from .guard import GuardPolicy

if TYPE_CHECKING:
    import redis
    import redis.cluster

__all__ = ["DEFAULT_PREFIX", "RedisGuardSync"]

log = logging.getLogger("donjon.guard")

DEFAULT_PREFIX: Final = "donjon:"
"""The default prefix of the guard's keys (the Redis store's default too)."""

BATCH: Final = 500
"""Clients per script call: a larger exchange is split, so no script blocks Redis for long."""

_HASH_HEX: Final = 32

# --------------------------------------------------------------------------
# One script per exchange. Every key it touches is declared in KEYS (they all
# share the {guard} hash tag), so it is valid on Redis Cluster as it is.
# --------------------------------------------------------------------------

_EXCHANGE_LUA: Final = """
-- KEYS[1] the locks sorted set; then per client: KEYS[2i] window, KEYS[2i+1] back-off
-- ARGV: now, window, threshold, unknown threshold, lockout, backoff, max lockout,
--       forgive after, max clients, want locks (1/0); then per client:
--       client key, attack delta, unknown delta
local locks = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local threshold, uthreshold = tonumber(ARGV[3]), tonumber(ARGV[4])
local lockout, backoff = tonumber(ARGV[5]), tonumber(ARGV[6])
local maxlock, forgive = tonumber(ARGV[7]), tonumber(ARGV[8])
local maxc = tonumber(ARGV[9])
local wttl = math.ceil(2 * window * 1000)
local started = 0
for i = 1, (#KEYS - 1) / 2 do
  local wk, xk = KEYS[2 * i], KEYS[2 * i + 1]
  local client = ARGV[8 + 3 * i]
  local da, du = tonumber(ARGV[9 + 3 * i]), tonumber(ARGV[10 + 3 * i])
  local w = redis.call('HMGET', wk, 'start', 'a', 'u', 'pa', 'pu')
  local start = tonumber(w[1])
  local a, u = tonumber(w[2]) or 0, tonumber(w[3]) or 0
  local pa, pu = tonumber(w[4]) or 0, tonumber(w[5]) or 0
  -- nothing, garbage, or a window far in the future (a host whose clock ran
  -- ahead, or corrupt data): a fresh window
  if start == nil or start ~= start or start > now + window then
    start, a, u, pa, pu = now, 0, 0, 0, 0
  end
  local elapsed = now - start
  if elapsed >= window then
    if elapsed < 2 * window then
      pa, pu, start = a, u, start + window
    else
      pa, pu, start = 0, 0, now
    end
    a, u = 0, 0
    elapsed = now - start
  end
  a, u = a + da, u + du
  -- A host whose clock lags may see a window that has not started yet.
  local weight = math.max(0, 1 - math.max(0, elapsed) / window)
  local x = redis.call('HMGET', xk, 'strikes', 'struck', 'until')
  local strikes = tonumber(x[1]) or 0
  local struck, untl = tonumber(x[2]) or 0, tonumber(x[3]) or 0
  if untl ~= untl or untl > now + maxlock + 60 then untl = 0 end  -- garbage or skew
  if untl <= now and (a + pa * weight >= threshold or u + pu * weight >= uthreshold) then
    if now - struck > forgive then strikes = 0 end
    strikes = strikes + 1
    untl = now + math.min(maxlock, lockout * backoff ^ math.max(0, strikes - 1))
    a, u, pa, pu = 0, 0, 0, 0
    redis.call('HSET', xk, 'strikes', strikes, 'struck', now, 'until', untl)
    redis.call('PEXPIRE', xk, math.ceil((untl - now + forgive) * 1000))
    redis.call('ZADD', locks, untl, client)
    redis.call('PEXPIRE', locks, math.ceil(maxlock * 1000) + 1000)
    started = started + 1
  end
  redis.call('HSET', wk, 'start', start, 'a', a, 'u', u, 'pa', pa, 'pu', pu)
  redis.call('PEXPIRE', wk, wttl)
end
-- Lock-outs that ended a while ago go (by this host's clock, lagged, so a
-- host whose clock runs ahead does not lift the fleet's running lock-outs).
redis.call('ZREMRANGEBYSCORE', locks, '-inf', now - maxlock)
local extra = redis.call('ZCARD', locks) - maxc
if extra > 0 then redis.call('ZREMRANGEBYRANK', locks, 0, extra - 1) end
local out = {started}
if ARGV[10] == '1' then
  local live = redis.call('ZRANGEBYSCORE', locks, '(' .. ARGV[1], '+inf', 'WITHSCORES',
                          'LIMIT', 0, maxc)
  for _, v in ipairs(live) do out[#out + 1] = v end
end
return out
"""

_UNLOCK_LUA: Final = """
-- KEYS[1] locks, KEYS[2] window, KEYS[3] back-off. ARGV[1] client key
redis.call('DEL', KEYS[2], KEYS[3])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""


def _import_redis() -> Any:
    try:
        import redis
        import redis.backoff
        import redis.cluster
        import redis.exceptions
        import redis.retry
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency("redis", "redis") from exc
    return redis


def _num(x: float) -> str:
    # repr: the shortest text that reads back as the same float.
    return repr(float(x))


def _text(v: object) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, str):
        return v
    raise ValueError(f"unexpected reply {type(v).__name__}")


def _client_hash(client: str) -> str:
    return hashlib.sha256(client.encode("utf-8")).hexdigest()[:_HASH_HEX]


@final
class RedisGuardSync:
    """Shares the guard's counters and lock-outs across processes and machines.

    Implements :class:`~donjon.guard.GuardSync`: give one to the
    :class:`~donjon.guard.Guard` of every process, with the same
    :class:`~donjon.guard.GuardPolicy` as the guard (the fleet-wide
    thresholds and back-off are this object's policy).

    Guarantees:

    - **At most one Redis round trip per** ``interval`` **per process**, never
      one per request: the guard calls :meth:`exchange` only when due, and an
      exchange that finds another one in flight or one done less than
      ``interval`` ago (threads, or concurrent requests of an async engine)
      does not call Redis but folds its counts into the next one.
    - Each exchange is one Lua script (one per :data:`BATCH` clients for a
      very large one), so concurrent exchanges of many processes add up
      exactly and a lock-out starts once, on the exchange that crosses the
      threshold.
    - **Fail open for the sharing only.** A Redis failure (down, timeout,
      cluster error, an unreadable reply) never raises into a request:
      :meth:`exchange` logs a warning once per outage, returns the fleet-wide
      lock-outs it last knew (those not yet over) and keeps the counts for
      the next exchange (for at most one ``window``; older counts are
      dropped, as the window they belonged to is over). After a failure
      the next attempt waits ``interval``, doubling up to ``max_backoff``,
      so a dead server costs a request at most one connection timeout now
      and then. Meanwhile each process's own guard keeps counting and
      locking out on its own: the site stays protected, only the sharing
      pauses. It resumes by itself once Redis is back (an emptied Redis
      simply starts counting again).
    - Memory is bounded: in Redis by the TTLs (window counters live 2 x
      ``window``; back-off memory until the lock-out ends plus
      ``forgive_after``) and by ``max_clients`` members in the lock set (the
      lock-outs ending soonest are dropped first); in the process by
      ``max_clients`` clients of pending counts.
    - No key name holds a client key (see the module docstring for what the
      lock set holds).

    Not guaranteed: a lock-out reaches other processes after up to one
    ``interval`` (plus their own ``interval``), not at once; counts are
    exact only as long as Redis keeps its data (a restart without
    persistence forgets counters and lock-outs, and each process's own guard
    keeps its own); a client key that cannot be encoded as UTF-8 (a lone
    surrogate) is never shared (it is still guarded locally).

    Args:
        client: A ``redis.Redis`` or ``redis.cluster.RedisCluster``. Give it
            short socket timeouts (a sync engine exchanges on the request
            path), or use :meth:`from_url`, which does.
        policy: The thresholds and back-off; use the guards' own policy.
            :class:`~donjon.guard.GuardPolicy` defaults when omitted.
        prefix: Prepended to every key; must not contain ``{`` or ``}``.
        interval: Seconds between exchanges (the guard asks when due).
        max_backoff: The longest wait, in seconds, between attempts while
            Redis is failing.
        close_client: Close ``client`` in :meth:`close` (``from_url`` sets it).

    Raises:
        MissingDependency: The ``redis`` package is not installed.
        ConfigurationError: A brace in the prefix, or a bad interval.
    """

    __slots__ = (
        "_busy",
        "_close_client",
        "_down",
        "_exchange",
        "_failures",
        "_last_at",
        "_lock",
        "_locks",
        "_locks_key",
        "_pending",
        "_pending_at",
        "_retry_at",
        "_unlock",
        "client",
        "exchanges",
        "failures",
        "interval",
        "lockouts",
        "max_backoff",
        "policy",
        "prefix",
    )

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        policy: GuardPolicy | None = None,
        prefix: str = DEFAULT_PREFIX,
        interval: float = 1.0,
        max_backoff: float = 30.0,
        close_client: bool = False,
    ) -> None:
        r = _import_redis()
        if "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                f"Redis key prefix {prefix!r} must not contain '{{' or '}}':"
                " donjon adds its own hash tag for Redis Cluster"
            )
        for name, value in (("interval", interval), ("max_backoff", max_backoff)):
            if not math.isfinite(value) or value <= 0:
                raise ConfigurationError(f"RedisGuardSync {name} must be > 0 seconds")
        self.client = client
        self.policy = policy or GuardPolicy()
        self.prefix = prefix
        self.interval = float(interval)
        """Seconds between exchanges (read by the guard)."""
        self.max_backoff = float(max_backoff)
        self.exchanges = 0
        """Exchanges that reached Redis (for metrics and tests)."""
        self.failures = 0
        """Exchanges that failed (for metrics and tests)."""
        self.lockouts = 0
        """Fleet-wide lock-outs that this process's exchanges started."""
        self._close_client = close_client
        self._down: tuple[type[BaseException], ...] = (
            r.exceptions.RedisError,
            r.exceptions.RedisClusterException,
            OSError,
            ValueError,  # an unreadable reply (UnicodeDecodeError is a ValueError)
        )
        c: Any = client
        self._exchange = c.register_script(_EXCHANGE_LUA)
        self._unlock = c.register_script(_UNLOCK_LUA)
        self._locks_key = f"{prefix}{{guard}}:locks"
        self._lock = threading.Lock()
        self._busy = threading.Lock()
        self._pending: dict[str, list[int]] = {}
        self._pending_at: float | None = None
        self._locks: dict[str, float] = {}
        self._failures = 0
        self._retry_at = float("-inf")
        self._last_at = float("-inf")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        policy: GuardPolicy | None = None,
        prefix: str = DEFAULT_PREFIX,
        interval: float = 1.0,
        max_backoff: float = 30.0,
        socket_timeout: float = 0.5,
        socket_connect_timeout: float = 0.5,
        **client_kwargs: Any,
    ) -> RedisGuardSync:
        """Make a sync for ``url`` with fail-fast timeouts (it connects on first use).

        Args:
            url: The server (``redis://``, ``rediss://``, ``unix://``), or any
                node of a cluster.
            cluster: Use a ``RedisCluster`` client.
            policy: The thresholds and back-off (the guards' own policy).
            prefix: Prepended to every key.
            interval: Seconds between exchanges.
            max_backoff: The longest wait between attempts while Redis fails.
            socket_timeout: Seconds to wait for a reply before giving up.
            socket_connect_timeout: Seconds to wait for a connection.
            **client_kwargs: More options for the redis-py client.

        Raises:
            StoreUnavailable: A cluster client could not reach any node to
                learn the cluster's layout (a standalone client connects
                lazily, so a standalone Redis may be down at start-up).
        """
        r = _import_redis()
        kwargs: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            # One quick retry reconnects a socket the server closed; more would
            # make a dead server answer slowly, on the request path.
            "retry": r.retry.Retry(r.backoff.ExponentialBackoff(cap=0.05, base=0.01), 1),
        }
        kwargs.update(client_kwargs)
        client: redis.Redis | redis.cluster.RedisCluster
        try:
            if cluster:
                client = r.cluster.RedisCluster.from_url(url, **kwargs)
            else:
                client = r.Redis.from_url(url, **kwargs)
        except (r.exceptions.RedisError, r.exceptions.RedisClusterException, OSError) as exc:
            raise StoreUnavailable(f"cannot reach Redis at {url!r}: {exc}") from exc
        return cls(
            client,
            policy=policy,
            prefix=prefix,
            interval=interval,
            max_backoff=max_backoff,
            close_client=True,
        )

    # -- key names ---------------------------------------------------------
    def _window_key(self, client: str) -> str:
        return f"{self.prefix}{{guard}}:w:{_client_hash(client)}"

    def _backoff_key(self, client: str) -> str:
        return f"{self.prefix}{{guard}}:x:{_client_hash(client)}"

    # -- GuardSync -----------------------------------------------------------
    def exchange(self, deltas: Mapping[str, tuple[int, int]], now: float) -> dict[str, float]:
        """Push (attack, unknown) counts per client; return client -> locked-until.

        Never raises for a Redis failure (see the class docstring): the
        lock-outs last known are returned instead, and the counts wait for
        the next exchange.

        Args:
            deltas: What the guard counted per client key since the last exchange.
            now: The guard's time (Unix seconds).

        Returns:
            Every fleet-wide lock-out not over at ``now`` (at most
            ``max_clients``), as client key -> Unix time it ends.
        """
        self._fold(deltas, now)
        if not self._busy.acquire(blocking=False):
            # Another exchange is in flight: these counts ride on the next one.
            return self._known(now)
        try:
            if now < self._retry_at or now - self._last_at < self.interval:
                # Backing off after a failure, or a late duplicate of this
                # interval's exchange (async engines dispatch it to a thread).
                return self._known(now)
            self._last_at = now
            with self._lock:
                batch, since = self._pending, self._pending_at
                self._pending, self._pending_at = {}, None
            try:
                locks, started = self._send(batch, now)
            except self._down as exc:
                self._failed(exc, batch, since, now)
                return self._known(now)
            if self._failures:
                log.warning(
                    "donjon guard: fleet sharing through Redis resumed after %d failed exchanges",
                    self._failures,
                )
            self._failures = 0
            self._retry_at = float("-inf")
            self.exchanges += 1
            if started:
                self.lockouts += started
                log.warning("donjon guard: %d client(s) locked out fleet-wide", started)
            self._locks = locks
            return self._known(now)
        finally:
            self._busy.release()

    def _fold(self, deltas: Mapping[str, tuple[int, int]], now: float) -> None:
        """Add counts to the pending ones (bounded; stale ones dropped first)."""
        with self._lock:
            if self._pending_at is not None and now - self._pending_at >= self.policy.window:
                self._pending.clear()
                self._pending_at = None
            for client, (attack, unknown) in deltas.items():
                if attack <= 0 and unknown <= 0:
                    continue
                cur = self._pending.get(client)
                if cur is None:
                    if len(self._pending) >= self.policy.max_clients:
                        continue
                    self._pending[client] = [attack, unknown]
                else:
                    cur[0] += attack
                    cur[1] += unknown
                if self._pending_at is None:
                    self._pending_at = now

    def _failed(
        self, exc: BaseException, batch: dict[str, list[int]], since: float | None, now: float
    ) -> None:
        self.failures += 1
        self._failures += 1
        wait = min(self.max_backoff, self.interval * 2 ** min(self._failures - 1, 30))
        self._retry_at = now + wait
        if self._failures == 1:
            log.warning(
                "donjon guard: fleet exchange with Redis failed (%s: %s); the local guard"
                " keeps working alone, retrying in %.1fs",
                type(exc).__name__,
                exc,
                wait,
            )
        else:
            log.debug("donjon guard: fleet exchange failed again (%s)", type(exc).__name__)
        with self._lock:
            for client, (attack, unknown) in batch.items():
                cur = self._pending.get(client)
                if cur is not None:
                    cur[0] += attack
                    cur[1] += unknown
                elif len(self._pending) < self.policy.max_clients:
                    self._pending[client] = [attack, unknown]
            if since is not None:
                # The counts keep the age of their oldest: _fold drops them a window later.
                at = self._pending_at
                self._pending_at = since if at is None else min(at, since)

    def _known(self, now: float) -> dict[str, float]:
        return {k: v for k, v in self._locks.items() if v > now}

    def _send(self, batch: dict[str, list[int]], now: float) -> tuple[dict[str, float], int]:
        """Run the script over ``batch``; clients sent are removed from it as their chunk lands.

        So after a failure half-way through a very large exchange, ``batch``
        holds only the counts Redis has not added yet.
        """
        p = self.policy
        head: list[str | int] = [
            _num(now),
            _num(p.window),
            p.threshold,
            p.unknown_threshold,
            _num(p.lockout),
            _num(p.backoff),
            _num(p.max_lockout),
            _num(p.forgive_after),
            p.max_clients,
        ]
        items = []
        for client, (attack, unknown) in batch.items():
            try:
                client.encode("utf-8")
            except UnicodeEncodeError:
                continue  # cannot be a Redis member; the local guard still counts it
            items.append((client, attack, unknown))
        chunks = [items[i : i + BATCH] for i in range(0, len(items), BATCH)] or [[]]
        started = 0
        reply: Any = None
        for n, chunk in enumerate(chunks):
            keys = [self._locks_key]
            args: list[str | int] = [*head, 1 if n == len(chunks) - 1 else 0]
            for client, attack, unknown in chunk:
                keys += (self._window_key(client), self._backoff_key(client))
                args += (client, attack, unknown)
            reply = self._exchange(keys=keys, args=args)
            started += int(reply[0])
            for client, _, _ in chunk:
                del batch[client]
        rest = reply[1:]
        locks = {_text(rest[i]): float(_text(rest[i + 1])) for i in range(0, len(rest) - 1, 2)}
        return locks, started

    # -- administration ------------------------------------------------------
    def unlock(self, client: str) -> bool:
        """Lift a client's lock-out fleet-wide and forget its counts and back-off.

        Call :meth:`Guard.unlock <donjon.guard.Guard.unlock>` too, in the
        processes where it is locked locally (each process's guard keeps its
        own lock-outs); other processes stop enforcing the fleet-wide one at
        their next exchange.

        Returns:
            Whether the client was locked out fleet-wide.

        Raises:
            StoreUnavailable: Redis failed (an administrator's action is not
                silently dropped, unlike an exchange).
        """
        keys = [self._locks_key, self._window_key(client), self._backoff_key(client)]
        try:
            removed = self._unlock(keys=keys, args=[client])
        except self._down as exc:
            raise StoreUnavailable(f"Redis guard sync: {type(exc).__name__}: {exc}") from exc
        self._locks.pop(client, None)
        return bool(removed)

    @property
    def healthy(self) -> bool:
        """Whether the last exchange reached Redis (``True`` before the first one)."""
        return self._failures == 0

    def close(self) -> None:
        """Close the client if this object owns it (it does when made by :meth:`from_url`)."""
        if self._close_client:
            self.client.close()

    def __repr__(self) -> str:
        return f"RedisGuardSync(prefix={self.prefix!r}, interval={self.interval})"
