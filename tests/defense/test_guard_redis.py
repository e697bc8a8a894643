"""RedisGuardSync against the real Redis server (and the 3-node cluster): nothing mocked.

The guard's counting rules are checked in tests/test_guard.py; here the same
rules must hold fleet-wide: counts of several guards add up, the Lua script
agrees with the in-memory guard decision for decision, keys expire, and a
Redis outage never reaches a request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from donjon import ConfigurationError, KeyRing, StoreUnavailable, Verdict
from donjon.engine import AsyncEngine, Engine
from donjon.guard import Guard, GuardPolicy
from donjon.guard_redis import RedisGuardSync
from donjon.stores import MemoryStore
from donjon.testing import FrozenClock
from tests.servers.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis

POLICY = GuardPolicy(
    window=60,
    threshold=6,
    unknown_threshold=8,
    lockout=10,
    backoff=2,
    max_lockout=35,
    forgive_after=1000,
    max_clients=1000,
)
T0 = 1_800_000_000.0
ATTACKER = "203.0.113.66"
TINY = 1e-6
"""An interval for tests that call ``exchange`` themselves at close times."""


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client to look at what the sync wrote."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def make_sync(redis_url: str, redis_prefix: str) -> Iterator[Callable[..., RedisGuardSync]]:
    """Make RedisGuardSync objects on this test's prefix; closed afterwards."""
    made: list[RedisGuardSync] = []

    def make(**kw: Any) -> RedisGuardSync:
        kw.setdefault("policy", POLICY)
        kw.setdefault("prefix", redis_prefix)
        kw.setdefault("interval", TINY)
        url = kw.pop("url", redis_url)
        sync = RedisGuardSync.from_url(url, **kw)
        made.append(sync)
        return sync

    yield make
    for sync in made:
        sync.close()


def _keys(raw: redis.Redis, prefix: str) -> list[str]:
    return sorted(raw.scan_iter(match=f"{prefix}*"))


# -- sharing ------------------------------------------------------------------


def test_counts_of_two_guards_add_up(make_sync: Callable[..., RedisGuardSync]) -> None:
    a = Guard(POLICY, sync=make_sync())
    b = Guard(POLICY, sync=make_sync())
    for i in range(3):
        assert not a.record(ATTACKER, Verdict.FORGED, T0 + i * 0.1)
        assert not b.record(ATTACKER, Verdict.MALFORMED, T0 + i * 0.1)
    a.exchange(T0 + 1)
    assert a.retry_after(ATTACKER, T0 + 1) is None, "3 of 6: not yet"
    b.exchange(T0 + 1.1)
    # 3 + 3 crossed the threshold on b's exchange, though neither guard saw 6.
    assert b.retry_after(ATTACKER, T0 + 1.1) == pytest.approx(10.0)
    assert a.retry_after(ATTACKER, T0 + 1.1) is None, "a learns it at its next exchange"
    a.exchange(T0 + 1.2)
    assert a.retry_after(ATTACKER, T0 + 1.2) == pytest.approx(9.9)
    assert a.retry_after("198.51.100.1", T0 + 1.2) is None
    assert a.locked_clients(T0 + 1.2) == {ATTACKER: pytest.approx(9.9)}
    assert a.retry_after(ATTACKER, T0 + 11.2) is None, "the fleet-wide lock-out ends too"


def test_unknown_bursts_add_up(make_sync: Callable[..., RedisGuardSync]) -> None:
    a, b = make_sync(), make_sync()
    assert a.exchange({ATTACKER: (0, 4)}, T0) == {}
    assert b.exchange({ATTACKER: (0, 3)}, T0 + 1) == {}
    assert a.exchange({ATTACKER: (0, 1)}, T0 + 2) == {ATTACKER: T0 + 12}
    assert a.lockouts == 1 and b.lockouts == 0


def test_escalation_doubles_is_capped_and_is_forgiven(
    make_sync: Callable[..., RedisGuardSync],
) -> None:
    sync = make_sync()
    now = T0
    waits = []
    for _ in range(4):
        locks = sync.exchange({ATTACKER: (POLICY.threshold, 0)}, now)
        waits.append(locks[ATTACKER] - now)
        now = locks[ATTACKER] + 0.01
    assert waits == [10, 20, 35, 35]
    # After forgive_after seconds without a lock-out, back-off starts again.
    now += POLICY.forgive_after + 1
    locks = sync.exchange({ATTACKER: (POLICY.threshold, 0)}, now)
    assert locks[ATTACKER] - now == 10


def test_a_lock_out_does_not_restart_while_it_lasts(
    make_sync: Callable[..., RedisGuardSync],
) -> None:
    sync = make_sync()
    until = sync.exchange({ATTACKER: (6, 0)}, T0)[ATTACKER]
    assert sync.exchange({ATTACKER: (50, 0)}, T0 + 5) == {ATTACKER: until}
    assert sync.lockouts == 1


GAPS = [0.001, 0.3, 1.0, 2.0, 4.0, 9.0, 0.001, 0.3, 1.0, 2.0, 31.0, 59.0, 61.0, 130.0, 1200.0]
"""Seconds between events: bursts, window roll-overs, expired windows, forgiveness."""


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_script_decides_as_the_in_memory_guard(
    make_sync: Callable[..., RedisGuardSync], seed: int
) -> None:
    """Event by event, the fleet-wide counters lock out exactly when one guard would."""
    rng = random.Random(seed)
    local = Guard(POLICY)
    sync = make_sync()
    now = T0
    local_locks = remote_locks = 0
    for _ in range(400):
        now += rng.choice(GAPS)
        unknown = rng.random() < 0.4
        verdict = Verdict.UNKNOWN if unknown else Verdict.FORGED
        locked = local.record(ATTACKER, verdict, now)
        before = sync.lockouts
        locks = sync.exchange({ATTACKER: (0, 1) if unknown else (1, 0)}, now)
        assert (sync.lockouts > before) == locked, f"decisions differ at {now - T0:.3f}"
        local_wait = local.retry_after(ATTACKER, now)
        remote_until = locks.get(ATTACKER)
        remote_wait = None if remote_until is None else remote_until - now
        assert remote_wait == pytest.approx(local_wait, abs=1e-6)
        local_locks += locked
        remote_locks = sync.lockouts
    assert local_locks == remote_locks
    assert local_locks >= 5, "the sequence must exercise lock-outs and back-off"


# -- what Redis holds -----------------------------------------------------------


def test_keys_hash_clients_and_the_lock_map_maps_back(
    make_sync: Callable[..., RedisGuardSync], raw: redis.Redis, redis_prefix: str
) -> None:
    clients = ["2001:db8:1:2::/64", "evil{slot}key", "client-é", "192.0.2.1"]
    sync = make_sync()
    locks = sync.exchange(dict.fromkeys(clients, (6, 0)), T0)
    assert set(locks) == set(clients)
    keys = _keys(raw, redis_prefix)
    assert len(keys) == 1 + 2 * len(clients)
    for key in keys:
        assert key.startswith(f"{redis_prefix}{{guard}}:")
        assert key.count("{") == 1 and key.count("}") == 1, "one hash tag, the guard's"
        for client in clients:
            assert client not in key
    # The lock set holds raw client keys, and only while they are locked out.
    assert set(raw.zrange(f"{redis_prefix}{{guard}}:locks", 0, -1)) == set(clients)
    assert sync.exchange({}, T0 + 11) == {}, "ended lock-outs are not reported"
    # They are trimmed max_lockout later (a host whose clock runs ahead must
    # not lift the running lock-outs of the others).
    assert sync.exchange({}, T0 + 10 + POLICY.max_lockout + 1) == {}
    assert raw.zcard(f"{redis_prefix}{{guard}}:locks") == 0


def test_a_client_that_decodes_replies_works_too(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        sync = RedisGuardSync(client, policy=POLICY, prefix=redis_prefix, interval=TINY)
        assert sync.exchange({"client-é": (6, 0)}, T0) == {"client-é": T0 + 10}
    finally:
        client.close()


def test_ttls_clean_everything_up(
    make_sync: Callable[..., RedisGuardSync], raw: redis.Redis, redis_prefix: str
) -> None:
    policy = GuardPolicy(window=0.2, threshold=2, lockout=0.1, max_lockout=0.2, forgive_after=0.3)
    sync = make_sync(policy=policy)
    now = time.time()
    assert ATTACKER in sync.exchange({ATTACKER: (2, 0), "198.51.100.7": (1, 0)}, now)
    keys = _keys(raw, redis_prefix)
    assert len(keys) == 4  # two window hashes, one back-off hash, the lock set
    limits = {"w": 400, "x": 400, "locks": 1200}  # 2 x window; lock + forgive; max lock-out
    for key in keys:
        kind = key.removeprefix(f"{redis_prefix}{{guard}}:").split(":")[0]
        assert 0 < raw.pttl(key) <= limits[kind], key
    deadline = time.monotonic() + 3
    while _keys(raw, redis_prefix) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _keys(raw, redis_prefix) == []


def test_the_lock_set_is_bounded(
    make_sync: Callable[..., RedisGuardSync], raw: redis.Redis, redis_prefix: str
) -> None:
    policy = GuardPolicy(threshold=1, max_clients=5, lockout=10, max_lockout=100)
    sync = make_sync(policy=policy)
    # Eight clients locked out one after the other: the five ending last stay.
    for i in range(8):
        locks = sync.exchange({f"10.0.0.{i}": (1, 0)}, T0 + i)
    assert raw.zcard(f"{redis_prefix}{{guard}}:locks") == 5
    assert set(locks) == {f"10.0.0.{i}" for i in range(3, 8)}


def test_large_exchanges_are_split_into_batches(
    make_sync: Callable[..., RedisGuardSync], raw: redis.Redis, redis_prefix: str
) -> None:
    sync = make_sync(policy=GuardPolicy(threshold=2, max_clients=5000))
    deltas = {f"10.1.{i >> 8}.{i & 255}": (2 if i % 2 else 1, 0) for i in range(1200)}
    locks = sync.exchange(deltas, T0)
    assert set(locks) == {k for k, (a, _) in deltas.items() if a == 2}
    assert sync.lockouts == 600


def test_unlock_lifts_a_lock_out_fleet_wide(make_sync: Callable[..., RedisGuardSync]) -> None:
    a, b = make_sync(), make_sync()
    a.exchange({ATTACKER: (6, 0)}, T0)
    assert ATTACKER in b.exchange({}, T0 + 1)
    assert b.unlock(ATTACKER) is True
    assert a.exchange({}, T0 + 2) == {}
    assert b.unlock(ATTACKER) is False
    # Counts and back-off are forgotten too: the next lock-out is a first one.
    assert a.exchange({ATTACKER: (6, 0)}, T0 + 3) == {ATTACKER: T0 + 13}


# -- at most one round trip per interval ------------------------------------------


def _evalsha_calls(raw: redis.Redis) -> int:
    """Scripts Redis ran (a NOSCRIPT reply, before the script is loaded, is not one)."""
    stats = raw.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)) - int(stats.get("failed_calls", 0))


def test_a_sync_engine_exchanges_once_per_interval(
    make_sync: Callable[..., RedisGuardSync], raw: redis.Redis
) -> None:
    clock = FrozenClock(T0)
    sync = make_sync(interval=1.0)
    engine = Engine(
        keyring=KeyRing.generate(),
        store=MemoryStore(clock=clock),
        clock=clock,
        guard=Guard(POLICY, sync=sync),
    )
    before = _evalsha_calls(raw)
    for i in range(300):
        engine.load(f"junk-{i}", client=f"10.2.0.{i % 50}")
        clock.advance(0.01)  # 3 s in all
    assert sync.exchanges == 3
    assert _evalsha_calls(raw) - before == 3


async def test_concurrent_async_requests_share_one_exchange(
    make_sync: Callable[..., RedisGuardSync], raw: redis.Redis
) -> None:
    clock = FrozenClock(T0)
    sync = make_sync(interval=1.0)
    engine = AsyncEngine(
        keyring=KeyRing.generate(),
        store=MemoryStore(clock=clock),
        clock=clock,
        guard=Guard(POLICY, sync=sync),
    )
    before = _evalsha_calls(raw)
    for _ in range(3):
        # 200 requests arrive together just as an exchange is due.
        await asyncio.gather(*(engine.load(None, client=f"10.3.0.{i}") for i in range(200)))
        clock.advance(1.0)
    assert sync.exchanges == 3
    assert _evalsha_calls(raw) - before == 3


# -- failures -----------------------------------------------------------------------


def test_an_outage_is_logged_once_the_local_guard_still_locks_and_sharing_resumes(
    redis_server: RedisServer,
    redis_url: str,
    make_sync: Callable[..., RedisGuardSync],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FrozenClock(T0)
    sync = make_sync(interval=0.5, max_backoff=2.0)
    guard = Guard(POLICY, sync=sync)
    engine = Engine(
        keyring=KeyRing.generate(), store=MemoryStore(clock=clock), clock=clock, guard=guard
    )
    guard.exchange(clock.time())
    assert sync.healthy
    redis_server.stop()
    caplog.set_level(logging.DEBUG, logger="donjon.guard")
    verdicts = []
    for _ in range(POLICY.threshold + 3):
        clock.advance(0.6)  # every load is due for an exchange
        verdicts.append(engine.load("forged.cookie", client=ATTACKER).verdict)
    # Requests never failed, and the local guard locked the attacker out alone.
    assert verdicts == [Verdict.MALFORMED] * POLICY.threshold + [Verdict.LOCKED_OUT] * 3
    assert not sync.healthy and sync.failures >= 2
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert [r.levelno for r in failed if r.levelno >= logging.WARNING] == [logging.WARNING]
    assert "local guard keeps working alone" in failed[0].getMessage()

    redis_server.start()
    clock.advance(2.0)  # past the longest back-off
    engine.load(None, client="198.51.100.9")
    assert sync.healthy
    assert any("resumed" in r.getMessage() for r in caplog.records)
    # The counts kept through the outage (within one window) reached Redis:
    # another process now sees the attacker locked out.
    other = make_sync()
    assert ATTACKER in other.exchange({}, clock.time())


def test_counts_older_than_a_window_are_not_replayed(
    redis_server: RedisServer, redis_url: str, make_sync: Callable[..., RedisGuardSync]
) -> None:
    sync = make_sync(max_backoff=0.001)
    redis_server.stop()
    assert sync.exchange({ATTACKER: (5, 0), "192.0.2.9": (5, 0)}, T0) == {}
    redis_server.start()
    # One window later the 5 are stale: 1 more is not enough.
    assert sync.exchange({ATTACKER: (1, 0)}, T0 + POLICY.window) == {}
    assert sync.healthy
    # Within a window they would have counted (the outage test shows it); and
    # nothing of them reached Redis.
    assert sync.exchange({"192.0.2.9": (5, 0)}, T0 + POLICY.window + 1) == {}


def test_a_raising_sync_never_breaks_a_request(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        interval = 0.5

        def exchange(self, deltas: object, now: float) -> dict[str, float]:
            raise RuntimeError("bug in a third-party sync")

    clock = FrozenClock(T0)
    engine = Engine(
        keyring=KeyRing.generate(),
        store=MemoryStore(clock=clock),
        clock=clock,
        guard=Guard(POLICY, sync=Broken()),
    )
    with caplog.at_level(logging.ERROR, logger="donjon.guard"):
        assert engine.load(None, client=ATTACKER).verdict is Verdict.ABSENT
    assert "fleet exchange failed" in caplog.text


def test_unlock_reports_a_failure_instead_of_dropping_it(
    make_sync: Callable[..., RedisGuardSync],
) -> None:
    dead = make_sync(url=f"redis://127.0.0.1:{free_port()}/0")
    assert dead.exchange({ATTACKER: (6, 0)}, T0) == {}, "an exchange fails open..."
    with pytest.raises(StoreUnavailable):
        dead.unlock(ATTACKER)  # ...an administrator's action does not


def test_a_client_key_redis_cannot_hold_is_only_guarded_locally(
    make_sync: Callable[..., RedisGuardSync],
) -> None:
    sync = make_sync()
    guard = Guard(POLICY, sync=sync)
    odd = "bad\udcffkey"  # a lone surrogate: no UTF-8 form
    for _ in range(POLICY.threshold):
        guard.record(odd, Verdict.FORGED, T0)
    guard.record(ATTACKER, Verdict.FORGED, T0)
    guard.exchange(T0)
    assert sync.healthy and sync.exchanges == 1
    assert guard.retry_after(odd, T0) is not None, "locked out locally all the same"


def test_bad_configuration_is_refused(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="must not contain"):
        RedisGuardSync.from_url(redis_url, prefix="a{b}:")
    with pytest.raises(ConfigurationError, match="interval"):
        RedisGuardSync.from_url(redis_url, interval=0)


# -- Redis Cluster --------------------------------------------------------------------


@pytest.mark.cluster
def test_sharing_works_on_a_redis_cluster(redis_cluster_url: str, redis_prefix: str) -> None:
    a = RedisGuardSync.from_url(
        redis_cluster_url, cluster=True, policy=POLICY, prefix=redis_prefix, interval=TINY
    )
    b = RedisGuardSync.from_url(
        redis_cluster_url, cluster=True, policy=POLICY, prefix=redis_prefix, interval=TINY
    )
    try:
        clients = {f"10.9.0.{i}": (3, 0) for i in range(40)}
        assert a.exchange(clients, T0) == {}
        assert b.exchange(clients, T0 + 1) == dict.fromkeys(clients, T0 + 11)
        assert a.exchange({}, T0 + 2) == dict.fromkeys(clients, T0 + 11)
    finally:
        a.close()
        b.close()


def test_impossible_lock_out_times_in_redis_are_ignored(
    make_sync: Callable[..., RedisGuardSync],
    raw: redis.Redis,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Corrupt shared data must neither crash a request nor lock a client out for ever."""
    from donjon.adapters.wsgi import SessionMiddleware

    now = time.time()
    raw.zadd(f"{redis_prefix}{{guard}}:locks", {"10.0.0.1": float("inf"), "10.0.0.2": 1e300})
    raw.zadd(f"{redis_prefix}{{guard}}:locks", {"10.0.0.3": now + 20})  # a real one
    guard = Guard(POLICY, sync=make_sync())
    engine = Engine(keyring=KeyRing.generate(), store=MemoryStore(), guard=guard)
    guard.exchange(now)
    assert "ignored" in caplog.text
    assert guard.retry_after("10.0.0.1", now) is None
    assert guard.retry_after("10.0.0.2", now) is None
    assert guard.retry_after("10.0.0.3", now) == pytest.approx(20, abs=1)

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    wrapped = SessionMiddleware(app, engine=engine)
    for addr, status in (("10.0.0.1", "200 OK"), ("10.0.0.3", "429 Too Many Requests")):
        seen: list[str] = []
        body = wrapped(
            {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": addr},
            lambda s, h, exc_info=None, seen=seen: seen.append(s),  # type: ignore[misc]
        )
        b"".join(body)
        assert seen == [status]


def test_a_host_whose_clock_runs_ahead_does_not_pile_up_counts(
    make_sync: Callable[..., RedisGuardSync],
) -> None:
    ahead = Guard(POLICY, sync=make_sync())
    ahead.record(ATTACKER, Verdict.FORGED, T0 + 3600)
    ahead.exchange(T0 + 3600)
    guard = Guard(POLICY, sync=make_sync())
    for i in range(POLICY.threshold + 2):  # one attack every two windows
        t = T0 + i * 2 * POLICY.window
        guard.record(ATTACKER, Verdict.FORGED, t)
        guard.exchange(t)
        assert guard.retry_after(ATTACKER, t) is None, f"attack {i + 1}: not a burst"
