"""The guard: per-client counting, lock-out, back-off, bounds."""

from __future__ import annotations

import pytest

from donjon import ConfigurationError, KeyRing, Verdict
from donjon.engine import Engine
from donjon.guard import Guard, GuardPolicy, client_key
from donjon.stores import MemoryStore
from donjon.testing import FrozenClock

POLICY = GuardPolicy(window=60, threshold=5, unknown_threshold=8, lockout=10, backoff=2,
                     max_lockout=35, max_clients=1000)


def test_attack_verdicts_lock_out_after_threshold() -> None:
    g = Guard(POLICY)
    for i in range(4):
        assert not g.record("1.2.3.4", Verdict.FORGED, 100.0 + i)
    assert g.retry_after("1.2.3.4", 104.0) is None
    assert g.record("1.2.3.4", Verdict.MALFORMED, 104.0)
    wait = g.retry_after("1.2.3.4", 104.0)
    assert wait == pytest.approx(10.0)
    assert g.retry_after("5.6.7.8", 104.0) is None, "other clients are unaffected"
    assert g.retry_after("1.2.3.4", 114.1) is None, "the lock-out ends"


@pytest.mark.parametrize(
    "verdict",
    [Verdict.EXPIRED, Verdict.IDLE_EXPIRED, Verdict.REVOKED, Verdict.RETIRED, Verdict.VALID,
     Verdict.ABSENT],
)
def test_ordinary_verdicts_never_count(verdict: Verdict) -> None:
    g = Guard(POLICY)
    for i in range(100):
        assert not g.record("9.9.9.9", verdict, 100.0 + i * 0.01)
    assert g.retry_after("9.9.9.9", 102.0) is None


def test_unknown_counts_only_in_bursts() -> None:
    g = Guard(POLICY)
    for i in range(7):
        g.record("2.2.2.2", Verdict.UNKNOWN, 100.0 + i)
    assert g.retry_after("2.2.2.2", 107.0) is None, "a few unknown ids are users"
    assert g.record("2.2.2.2", Verdict.UNKNOWN, 107.0)
    assert g.retry_after("2.2.2.2", 107.0) is not None


def test_sliding_window_forgets_old_attempts() -> None:
    g = Guard(POLICY)
    for i in range(4):
        g.record("3.3.3.3", Verdict.FORGED, 100.0 + i)
    # two windows later the old attempts weigh nothing
    for i in range(4):
        assert not g.record("3.3.3.3", Verdict.FORGED, 300.0 + i)
    assert g.retry_after("3.3.3.3", 304.0) is None


def test_escalating_backoff_capped() -> None:
    g = Guard(POLICY)
    now = 1000.0
    waits = []
    for _ in range(4):
        while not g.record("4.4.4.4", Verdict.FORGED, now):
            now += 0.01
        wait = g.retry_after("4.4.4.4", now)
        assert wait is not None
        waits.append(round(wait))
        now += wait + 0.01
    assert waits == [10, 20, 35, 35]


def test_memory_is_bounded_under_spraying() -> None:
    g = Guard(GuardPolicy(max_clients=500))
    for i in range(20_000):
        g.record(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", Verdict.FORGED, 100.0)
    assert len(g) == 500


def test_a_locked_hammering_client_stays_tracked() -> None:
    g = Guard(GuardPolicy(max_clients=50, threshold=3))
    for _ in range(3):
        g.record("6.6.6.6", Verdict.FORGED, 100.0)
    assert g.retry_after("6.6.6.6", 100.0) is not None
    for i in range(1000):
        g.record(f"7.7.{i >> 8}.{i & 255}", Verdict.FORGED, 100.0)
        g.record("6.6.6.6", Verdict.FORGED, 100.0)  # keeps hammering
    assert g.retry_after("6.6.6.6", 100.0) is not None


def test_a_lock_out_is_not_pushed_out_by_other_keys() -> None:
    """Through the engine a locked client only asks retry_after (its requests end
    LOCKED_OUT, not counted): that must keep it tracked, and a spray of new keys
    must not evict it while it is locked."""
    g = Guard(GuardPolicy(max_clients=1000))
    for _ in range(20):
        g.record("6.6.6.6", Verdict.FORGED, 1000.0)
    assert g.retry_after("6.6.6.6", 1000.0) is not None
    for i in range(3000):
        g.record(f"2001:db8:{i:x}::/64", Verdict.FORGED, 1001.0)
        if i % 100 == 0:
            assert g.retry_after("6.6.6.6", 1001.0) is not None
    assert g.retry_after("6.6.6.6", 1002.0) is not None
    assert len(g) == 1000
    # without knocking, the lock-out survives a spray too (passed over at eviction)
    g2 = Guard(GuardPolicy(max_clients=1000))
    for _ in range(20):
        g2.record("6.6.6.6", Verdict.FORGED, 1000.0)
    for i in range(1000):
        g2.record(f"2001:db8:{i:x}::/64", Verdict.FORGED, 1001.0)
    assert g2.retry_after("6.6.6.6", 1002.0) is not None
    assert len(g2) == 1000


def test_client_key_normalises_ipv6_to_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:1.2.3.4") == "1.2.3.4"
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key(None) is None


def test_policy_checks() -> None:
    with pytest.raises(ConfigurationError):
        GuardPolicy(threshold=0)
    with pytest.raises(ConfigurationError):
        GuardPolicy(window=0)
    with pytest.raises(ConfigurationError):
        GuardPolicy(backoff=0.5)


def test_engine_locks_out_before_parsing() -> None:
    clock = FrozenClock(2_000_000_000.0)
    store = MemoryStore(clock=clock)
    guard = Guard(GuardPolicy(threshold=3))
    engine = Engine(keyring=KeyRing.generate(), store=store, clock=clock, guard=guard)
    for _ in range(3):
        assert engine.load("forged.cookie", client="8.8.4.4").verdict is Verdict.MALFORMED
    s = engine.load("anything", client="8.8.4.4")
    assert s.verdict is Verdict.LOCKED_OUT
    assert s.retry_after is not None and s.retry_after > 0
    assert engine.load("anything", client="8.8.8.8").verdict is Verdict.MALFORMED
    assert engine.load(None, client="8.8.8.8").verdict is Verdict.ABSENT


def test_engine_guard_on_by_default() -> None:
    engine = Engine(keyring=KeyRing.generate(), store=MemoryStore())
    assert isinstance(engine.core.guard, Guard)
    assert Engine(keyring=KeyRing.generate(), store=MemoryStore(), guard=None).core.guard is None
