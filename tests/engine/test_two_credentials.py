"""The two-credential mode: access credentials without store calls, refresh rotation."""

from __future__ import annotations

from typing import Any

import pytest

from donjon import ConfigurationError, KeyRing, Verdict
from donjon.config import CookiePolicy, Timeouts, TwoCredentials
from donjon.engine import AsyncEngine, Engine
from donjon.stores import MemoryStore
from donjon.stores.cookie import CookieStore
from donjon.testing import FrozenClock

from .test_engine import CountingStore


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_800_000_000.0)


@pytest.fixture
def store(clock: FrozenClock) -> Any:
    return CountingStore(MemoryStore(clock=clock))


@pytest.fixture
def engine(store: Any, clock: FrozenClock) -> Engine:
    return Engine(
        keyring=KeyRing.generate(["user", "admin"]),
        store=store,
        clock=clock,
        timeouts=Timeouts(idle=3600, absolute=8 * 3600),
        two_credentials=TwoCredentials(access_ttl=300),
        guard=None,
    )


def login(engine: Engine) -> tuple[str, str]:
    s = engine.load(None)
    s["cart"] = [1]
    s.login("ann")
    out = engine.commit(s, presented=False)
    assert out.token is not None and out.refresh_token is not None
    return out.token, out.refresh_token


def test_login_sets_two_cookies_with_their_own_paths(engine: Engine) -> None:
    s = engine.load(None)
    s.login("ann")
    headers = engine.cookie_headers(engine.commit(s, presented=False))
    assert len(headers) == 2
    access, refresh = headers
    assert access.startswith("__Host-donjon=s1.") and "Path=/;" in access
    assert refresh.startswith("__Secure-donjon-refresh=v1.")
    assert "Path=/_donjon/refresh" in refresh and "SameSite=Lax" in refresh
    assert "HttpOnly" in refresh and "Secure" in refresh


def test_access_is_checked_without_any_store_call(engine: Engine, store: Any) -> None:
    access, _ = login(engine)
    store.calls.clear()
    for _ in range(5):
        s = engine.load(access)
        assert s.verdict is Verdict.VALID
        assert s.user_id == "ann" and s["cart"] == [1]
        assert engine.commit(s, presented=True).token is None
    # No record is read: only the shared epochs, once per epoch_refresh (the
    # frozen clock never moves, so once), for the kill switch.
    assert store.calls == ["epochs"], "access credentials cost no record round trip"


def test_writes_go_through_to_the_store_and_reseal(
    engine: Engine, store: Any, clock: FrozenClock
) -> None:
    access, refresh = login(engine)
    s = engine.load(access)
    s["cart"].append(2)
    out = engine.commit(s, presented=True)
    assert out.token is not None and out.refresh_token is None
    assert engine.load(out.token)["cart"] == [1, 2]
    clock.advance(301)
    assert engine.load(out.token).verdict is Verdict.EXPIRED, "a re-seal keeps the access expiry"
    refreshed = engine.refresh(refresh)
    assert refreshed.token is not None
    assert engine.load(refreshed.token)["cart"] == [1, 2], "the store holds the truth"


def test_expired_access_is_refreshed_and_refresh_rotates(
    engine: Engine, clock: FrozenClock, store: Any
) -> None:
    access, refresh = login(engine)
    clock.advance(301)
    s = engine.load(access)
    assert s.verdict is Verdict.EXPIRED and s.reason == "access_expired"
    store.calls.clear()
    out = engine.refresh(refresh)
    assert store.calls.count("load") == 1 and store.calls.count("write") == 1
    assert out.token is not None and out.refresh_token is not None
    assert out.refresh_token != refresh
    s = engine.load(out.token)
    assert s.verdict is Verdict.VALID and s.user_id == "ann"
    clock.advance(301)
    again = engine.refresh(out.refresh_token)
    assert again.token is not None, "the rotated refresh credential works"


def test_refresh_reuse_kills_the_whole_session(engine: Engine, clock: FrozenClock) -> None:
    _, refresh = login(engine)
    first = engine.refresh(refresh)
    assert first.refresh_token is not None
    stolen = engine.refresh(refresh)  # the old one, a second time
    assert stolen.token is None and stolen.clear and stolen.clear_refresh
    legit = engine.refresh(first.refresh_token)
    assert legit.token is None, "after a reuse even the newest refresh credential is dead"


def test_logout_ends_both(engine: Engine) -> None:
    access, refresh = login(engine)
    s = engine.load(access)
    s.destroy()
    out = engine.commit(s, presented=True)
    assert out.clear and out.clear_refresh
    headers = engine.cookie_headers(out)
    assert all("Max-Age=0" in h for h in headers) and len(headers) == 2
    assert engine.refresh(refresh).token is None


def test_kill_switch_ends_both(engine: Engine, clock: FrozenClock) -> None:
    access, refresh = login(engine)
    clock.advance(1)
    engine.kill("user")
    assert engine.load(access).verdict is Verdict.REVOKED
    assert engine.refresh(refresh).token is None


def test_kill_in_another_process_reaches_access_credentials(
    engine: Engine, store: Any, clock: FrozenClock
) -> None:
    other = Engine(
        keyring=KeyRing.from_dict(engine.keyring.to_dict()),
        store=store,
        clock=clock,
        two_credentials=TwoCredentials(access_ttl=300),
        guard=None,
    )
    access, _ = login(engine)
    assert other.load(access).verdict is Verdict.VALID
    clock.advance(1)
    engine.kill("user")
    clock.advance(1.0)  # other re-reads the shared epochs at most once a second
    assert other.load(access).verdict is Verdict.REVOKED


def test_a_resealed_access_credential_does_not_outlive_a_kill(
    engine: Engine, clock: FrozenClock
) -> None:
    access, _ = login(engine)
    s = engine.load(access)
    clock.advance(0.5)
    engine.keyring.set_epoch("user", clock.time())  # a kill this request did not see
    s["cart"] = [2]
    resealed = engine.commit(s, presented=True).token
    assert resealed is not None
    assert engine.load(resealed).verdict is Verdict.REVOKED


def test_a_refresh_credential_is_no_session_cookie_anywhere(
    engine: Engine, store: Any, clock: FrozenClock
) -> None:
    """ASVS 9.2.2: a refresh credential is tied to its purpose, even for an
    engine of another app sharing the key ring and the store."""
    _, refresh = login(engine)
    native = Engine(keyring=engine.keyring, store=store, clock=clock, guard=None)
    s = native.load(refresh)
    assert s.verdict is Verdict.BINDING_MISMATCH and s.user_id is None


def test_two_concurrent_uses_of_one_refresh_credential_kill_the_session(
    engine: Engine, store: Any, clock: FrozenClock
) -> None:
    """Both requests read the record before either writes: only a compare-and-set
    tells them apart. The loser is a reuse: the session dies for both."""
    from donjon.engine import _flows as flows

    _, refresh = login(engine)
    clock.advance(400)  # the access credential expired: refresh time
    slow = flows.refresh(engine.core, refresh, client=None, path=None)
    request = slow.send(None)
    while not isinstance(request, flows.ReadRecord):
        request = slow.send(engine._answer(request))
    request = slow.send(store.load(request.key))  # the slow one has read the record
    fast = engine.refresh(refresh)  # the other use completes in between
    assert fast.token is not None and fast.refresh_token is not None
    try:
        while True:
            request = slow.send(engine._answer(request))
    except StopIteration as done:
        outcome = done.value
    assert outcome.token is None and outcome.clear and outcome.clear_refresh
    assert engine.load(fast.token).verdict is Verdict.VALID  # sealed: until access_ttl
    clock.advance(400)
    assert engine.refresh(fast.refresh_token).token is None, "the session is dead"


@pytest.mark.parametrize("fraction", [0.0004, 0.0006, 0.4, 0.9996])
def test_refresh_works_whatever_the_sub_millisecond_clock(fraction: float) -> None:
    """The stored rotation time and the token's issue time round alike."""
    clock = FrozenClock(1_700_000_004 + fraction)
    engine = Engine(
        keyring=KeyRing.generate(),
        store=MemoryStore(clock=clock),
        clock=clock,
        two_credentials=TwoCredentials(access_ttl=300),
        guard=None,
    )
    _, refresh = login(engine)
    for _ in range(3):
        clock.advance(300.0007)
        out = engine.refresh(refresh)
        assert out.token is not None and out.refresh_token is not None
        refresh = out.refresh_token


def test_a_killed_session_cannot_refresh(engine: Engine, clock: FrozenClock) -> None:
    """Even with a refresh credential rotated after the kill (by a process that
    had not yet seen it): the record predates the epoch."""
    _, refresh = login(engine)
    clock.advance(10)
    out = engine.refresh(refresh)  # rotated; say this process missed the kill below
    assert out.refresh_token is not None
    engine.keyring.set_epoch("user", clock.time() - 5)  # the kill, 5 s ago
    clock.advance(1)
    gone = engine.refresh(out.refresh_token)
    assert gone.token is None and gone.clear and gone.clear_refresh


def test_forged_refresh_costs_no_store_call(engine: Engine, store: Any) -> None:
    store.calls.clear()
    assert engine.refresh("v1.user.k1.x.1.2._." + "0" * 64).clear_refresh
    assert engine.refresh("junk").clear_refresh
    assert store.calls == []


def test_access_cannot_be_used_as_refresh_and_vice_versa(engine: Engine) -> None:
    access, refresh = login(engine)
    assert engine.load(refresh).verdict is Verdict.MALFORMED
    assert engine.refresh(access).token is None


def test_cookie_store_and_two_credentials_refuse_to_mix(clock: FrozenClock) -> None:
    with pytest.raises(ConfigurationError):
        Engine(keyring=KeyRing.generate(), store=CookieStore(), two_credentials=TwoCredentials())


def test_policy_checks() -> None:
    with pytest.raises(ConfigurationError):
        TwoCredentials(access_ttl=7200)
    with pytest.raises(ConfigurationError):
        TwoCredentials(refresh_path="/")
    plain = TwoCredentials().refresh_cookie(CookiePolicy(secure=False))
    assert plain.cookie_name == "donjon-refresh"


async def test_async_face(clock: FrozenClock) -> None:
    engine = AsyncEngine(
        keyring=KeyRing.generate(),
        store=MemoryStore(clock=clock),
        clock=clock,
        two_credentials=TwoCredentials(access_ttl=60),
        guard=None,
    )
    s = await engine.load(None)
    s.login("bo")
    out = await engine.commit(s, presented=False)
    clock.advance(61)
    assert (await engine.load(out.token)).verdict is Verdict.EXPIRED
    new = await engine.refresh(out.refresh_token)
    assert (await engine.load(new.token)).user_id == "bo"
    assert (await engine.refresh(out.refresh_token)).token is None  # reuse


def test_the_device_is_kept_and_never_served_as_data(engine: Engine, clock: FrozenClock) -> None:
    s = engine.load(None, device="Firefox")
    s["cart"] = [1]
    s.login("ann")
    out = engine.commit(s, presented=False)
    assert out.refresh_token is not None
    [info] = engine.sessions_of("ann")
    assert info.device == "Firefox"
    clock.advance(301)
    refreshed = engine.refresh(out.refresh_token)
    assert refreshed.token is not None
    s = engine.load(refreshed.token)
    assert dict(s) == {"cart": [1]}
