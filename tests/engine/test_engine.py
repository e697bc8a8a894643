"""The engine over the local stores: verdicts, timeouts, regeneration, commits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from donjon import ConfigurationError, KeyRing, StoreUnavailable, Verdict
from donjon.config import Timeouts
from donjon.core._ids import record_key
from donjon.engine import AsyncEngine, Engine
from donjon.engine._logic import MOVED_FIELD, MOVED_GRACE, NOTHING, moved_key
from donjon.events import VerdictEvent
from donjon.guard import Guard, GuardPolicy
from donjon.stores import MemoryStore, SQLiteStore, Write
from donjon.testing import FrozenClock


class CountingStore:
    """Wraps a store and counts every call, to prove what costs a round trip."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self.blocking = getattr(inner, "blocking", True)

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return target(*args, **kwargs)

        return call


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FrozenClock) -> Iterator[Any]:
    inner: Any = (
        MemoryStore(clock=clock)
        if request.param == "memory"
        else SQLiteStore(tmp_path / "s.db", clock=clock)
    )
    wrapped = CountingStore(inner)
    yield wrapped
    inner.close()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_800_000_000.0)


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.generate(["user", "admin"])


@pytest.fixture
def events() -> list[VerdictEvent]:
    return []


@pytest.fixture
def engine(ring: KeyRing, store: Any, clock: FrozenClock, events: list[VerdictEvent]) -> Engine:
    return Engine(
        keyring=ring,
        store=store,
        clock=clock,
        timeouts=Timeouts(idle=600, absolute=3600),
        events=[events.append],
    )


def login(engine: Engine, user: str = "alice", **data: Any) -> str:
    s = engine.load(None)
    for k, v in data.items():
        s[k] = v
    s.login(user)
    out = engine.commit(s, presented=False)
    assert out.token is not None
    return out.token


def test_absent_cookie_gives_fresh_session_and_no_store_call(engine: Engine, store: Any) -> None:
    s = engine.load(None)
    assert s.verdict is Verdict.ABSENT
    assert s.is_new and len(s) == 0
    out = engine.commit(s, presented=False)
    assert out.token is None and not out.clear
    assert store.calls == []


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "v1.user.k1.x.1.2._." + "0" * 64, "v2.a.b.c.d.e.f.g", "é" * 10, "x" * 5000],
)
def test_bad_tokens_cost_zero_store_calls(engine: Engine, store: Any, token: str) -> None:
    s = engine.load(token)
    assert s.verdict in (Verdict.MALFORMED, Verdict.FORGED)
    out = engine.commit(s, presented=True)
    assert out.clear and out.token is None, "a bad cookie is cleared"
    assert store.calls == [], "forged or malformed cookies never reach the store"


def test_expired_and_revoked_tokens_cost_zero_store_calls(
    engine: Engine, store: Any, clock: FrozenClock, ring: KeyRing
) -> None:
    token = login(engine)
    store.calls.clear()
    engine.core.apply_epochs({}, clock.time())  # fresh epochs: no refresh needed
    clock.advance(3601)
    assert engine.load(token).verdict is Verdict.EXPIRED
    assert store.calls == []
    token2 = login(engine)
    store.calls.clear()
    ring.set_epoch("user", clock.time() + 1)
    assert engine.load(token2).verdict is Verdict.REVOKED
    assert "load" not in store.calls


def test_round_trip_and_unchanged_session_costs_one_read(
    engine: Engine, store: Any, clock: FrozenClock
) -> None:
    token = login(engine, n=1)
    engine.refresh_epochs()
    store.calls.clear()
    clock.advance(0.5)  # within the epoch refresh interval
    s = engine.load(token)
    assert s.verdict is Verdict.VALID
    assert s["n"] == 1 and s.user_id == "alice"
    out = engine.commit(s, presented=True)
    assert out.token is None and not out.clear
    assert store.calls == ["load"], "a valid unchanged session costs one read and no write"


def test_unknown_record_is_never_adopted(engine: Engine, store: Any) -> None:
    token = login(engine)
    s = engine.load(token)
    store.inner.delete(record_key(s.id or ""))
    s2 = engine.load(token)
    assert s2.verdict is Verdict.UNKNOWN
    assert s2.id is None, "the presented id is not adopted"
    s2["x"] = 1
    out = engine.commit(s2, presented=True)
    assert out.token is not None and s2.id is not None
    assert s2.id != s.id


def test_regenerate_kills_old_id_and_keeps_data(engine: Engine) -> None:
    token = login(engine, cart=[1, 2])
    s = engine.load(token)
    old_id = s.id
    s.regenerate()
    out = engine.commit(s, presented=True)
    assert out.token is not None and out.token != token
    assert s.id != old_id
    assert engine.load(token).verdict is Verdict.UNKNOWN, "the old id dies at once"
    s2 = engine.load(out.token)
    assert s2.verdict is Verdict.VALID and s2["cart"] == [1, 2]


def test_the_old_cookie_of_a_regenerated_session_is_superseded_for_a_while(
    ring: KeyRing, store: Any, clock: FrozenClock, events: list[VerdictEvent]
) -> None:
    """A request racing a login carries the pre-login cookie: it gets nothing of
    the old session, but for MOVED_GRACE seconds its cookie is neither cleared
    (the browser may hold the new one by now) nor counted by the guard."""
    engine = Engine(
        keyring=ring,
        store=store,
        clock=clock,
        guard=Guard(GuardPolicy(unknown_threshold=3)),
        events=[events.append],
    )
    anon = engine.load(None)
    anon["cart"] = [1]
    token = engine.commit(anon, presented=False).token
    s = engine.load(token, client="10.0.0.1")
    s.login("alice")
    new = engine.commit(s, presented=True).token
    assert new is not None
    for _ in range(10):
        stale = engine.load(token, client="10.0.0.1")
        assert stale.verdict is Verdict.UNKNOWN and stale.reason == "superseded"
        assert stale.user_id is None and dict(stale) == {}, "nothing of the old session"
        assert engine.commit(stale, presented=True) is NOTHING, "the cookie is left alone"
    assert engine.load(new, client="10.0.0.1").verdict is Verdict.VALID, "not locked out"
    assert events[-2].verdict is Verdict.UNKNOWN and events[-2].reason == "superseded"
    # A racing request that writes starts a new session (its data is not lost).
    racing = engine.load(token)
    racing["n"] = 1
    assert engine.commit(racing, presented=True).token is not None
    # The old record kept no data and left the user's listing.
    assert [i.user_id for i in engine.sessions_of("alice")] == ["alice"]
    clock.advance(MOVED_GRACE + 1)
    late = engine.load(token)
    assert late.verdict is Verdict.UNKNOWN and late.reason != "superseded"
    assert engine.commit(late, presented=True).clear, "after the grace period it is cleared"


def test_a_request_that_loaded_before_a_regeneration_cannot_revive_the_old_id(
    engine: Engine,
) -> None:
    token = login(engine, "bob", n=1)
    early = engine.load(token)
    s = engine.load(token)
    s.regenerate()
    assert engine.commit(s, presented=True).token is not None
    early["n"] = 99
    # Its write finds no record: lost, as it was bound to be, and the
    # response leaves the cookie alone (the browser holds the new one).
    assert engine.commit(early, presented=True) is NOTHING
    stale = engine.load(token)
    assert stale.verdict is Verdict.UNKNOWN and stale.reason == "superseded"
    assert stale.get("n") is None and stale.user_id is None
    assert [i.user_id for i in engine.sessions_of("bob")] == ["bob"], "no ghost is listed"


def test_a_racing_touch_does_not_stretch_the_marker(
    engine: Engine, clock: FrozenClock, store: Any
) -> None:
    token = login(engine, "bob")
    clock.advance(120)  # the last-seen refresh is due
    early = engine.load(token)
    s = engine.load(token)
    s.regenerate()
    engine.commit(s, presented=True)
    assert engine.commit(early, presented=True) is NOTHING  # its touch finds no record
    clock.advance(MOVED_GRACE + 1)
    late = engine.load(token)
    assert late.verdict is Verdict.UNKNOWN and late.reason != "superseded"
    assert engine.commit(late, presented=True).clear


def test_a_logout_racing_a_request_still_clears_its_cookie(engine: Engine) -> None:
    token = login(engine, "bob")
    early = engine.load(token)
    s = engine.load(token)
    s.logout()
    engine.commit(s, presented=True)
    early["n"] = 1
    out = engine.commit(early, presented=True)
    assert out.interrupted and out.clear, "no marker: a logout is not a regeneration"


def test_destroy_deletes_record_and_clears_cookie(engine: Engine) -> None:
    token = login(engine)
    s = engine.load(token)
    s.destroy()
    out = engine.commit(s, presented=True)
    assert out.clear and out.token is None
    assert engine.load(token).verdict is Verdict.UNKNOWN


def test_idle_timeout(engine: Engine, clock: FrozenClock, store: Any) -> None:
    token = login(engine)
    clock.advance(601)
    s = engine.load(token)
    assert s.verdict is Verdict.IDLE_EXPIRED
    assert s.id is None
    assert store.inner.load(record_key(engine.core.codec.verify(token).session_id or "")) is None


def test_activity_resets_idle_but_not_absolute(engine: Engine, clock: FrozenClock) -> None:
    token = login(engine)
    for _ in range(8):  # 8 x 400 s = 3200 s of activity, each gap under the idle limit
        clock.advance(400)
        s = engine.load(token)
        assert s.verdict is Verdict.VALID
        engine.commit(s, presented=True)
    clock.advance(401)  # past the absolute timeout of 3600 s
    assert engine.load(token).verdict is Verdict.EXPIRED


def test_touch_is_throttled(engine: Engine, clock: FrozenClock, store: Any) -> None:
    token = login(engine)
    engine.refresh_epochs()
    store.calls.clear()
    clock.advance(10)
    engine.commit(engine.load(token), presented=True)
    assert "touch" not in store.calls
    clock.advance(61)
    engine.refresh_epochs()
    engine.commit(engine.load(token), presented=True)
    assert "touch" in store.calls


def test_field_level_saves_from_two_requests(engine: Engine) -> None:
    token = login(engine)
    a = engine.load(token)
    b = engine.load(token)
    a["a"] = 1
    b["b"] = 2
    engine.commit(a, presented=True)
    engine.commit(b, presented=True)
    s = engine.load(token)
    assert s["a"] == 1 and s["b"] == 2


def test_in_place_mutation_is_saved(engine: Engine) -> None:
    token = login(engine, cart=[1])
    s = engine.load(token)
    s["cart"].append(2)
    engine.commit(s, presented=True)
    assert engine.load(token)["cart"] == [1, 2]


def test_write_after_logout_elsewhere_does_not_resurrect(engine: Engine) -> None:
    token = login(engine)
    a = engine.load(token)
    b = engine.load(token)
    b.destroy()
    engine.commit(b, presented=True)
    a["late"] = 1
    out = engine.commit(a, presented=True)
    assert out.interrupted and out.clear
    assert engine.load(token).verdict is Verdict.UNKNOWN


def test_undecodable_record_is_treated_as_missing(engine: Engine, store: Any) -> None:
    token = login(engine)
    s = engine.load(token)
    key = record_key(s.id or "")
    store.inner.delete(key)
    store.inner.write(
        Write(
            key=key,
            fields={"x": "{not json"},
            session_class="user",
            user_id=None,
            created_at=s.created_at or 0,
            last_seen=s.last_seen or 0,
            expires_at=(s.last_seen or 0) + 600,
            create=True,
        )
    )
    assert engine.load(token).verdict is Verdict.UNKNOWN


def test_kill_switch_revokes_a_class_only(engine: Engine, clock: FrozenClock) -> None:
    user_token = login(engine)
    s = engine.load(None)
    s.login("root", session_class="admin")
    admin_token = engine.commit(s, presented=False).token
    assert admin_token is not None
    clock.advance(1)
    engine.kill("admin")
    assert engine.load(admin_token).verdict is Verdict.REVOKED
    assert engine.load(user_token).verdict is Verdict.VALID
    # a new admin login after the kill works
    s = engine.load(None)
    s.login("root", session_class="admin")
    clock.advance(0.01)
    new_admin = engine.commit(s, presented=False).token
    assert engine.load(new_admin).verdict is Verdict.VALID


def test_kill_reaches_a_second_engine_through_the_store(
    ring: KeyRing, store: Any, clock: FrozenClock
) -> None:
    other_ring = KeyRing.from_dict(ring.to_dict())
    a = Engine(keyring=ring, store=store, clock=clock)
    b = Engine(keyring=other_ring, store=store, clock=clock, epoch_refresh=1.0)
    token = login(a)
    assert b.load(token).verdict is Verdict.VALID
    clock.advance(0.5)
    a.kill("user")
    clock.advance(1.0)  # b re-reads epochs at most once a second
    assert b.load(token).verdict is Verdict.REVOKED


@pytest.mark.parametrize("how", ["rolling", "regenerate", "rotation"])
def test_a_token_signed_anew_after_a_kill_does_not_resurrect_the_session(
    ring: KeyRing, store: Any, clock: FrozenClock, how: str
) -> None:
    """A process that has not yet seen the epoch re-signs a session: still killed."""
    other_ring = KeyRing.from_dict(ring.to_dict())
    a = Engine(keyring=ring, store=store, clock=clock)
    b = Engine(keyring=other_ring, store=store, clock=clock, rolling=how == "rolling")
    token = login(a)
    clock.advance(5)
    s = b.load(token)  # b reads the epochs now; the kill lands within its refresh window
    assert s.verdict is Verdict.VALID
    clock.advance(0.3)
    a.kill("user")
    clock.advance(0.3)
    if how == "regenerate":
        s.regenerate()
    elif how == "rotation":
        other_ring.rotate("user")
        s = b.load(token)  # still inside b's epoch window: VALID, re-signed at commit
        assert s.verdict is Verdict.VALID and s.wants_reissue
    out = b.commit(s, presented=True)
    assert out.token is not None, "b signed a new token after the kill"
    clock.advance(5)
    for engine in (a, b) if how != "rotation" else (b,):  # (a never saw k2)
        assert engine.load(out.token).verdict is Verdict.REVOKED
        assert engine.load(token).verdict is Verdict.REVOKED


def test_destroy_then_set_starts_a_new_session(engine: Engine, store: Any) -> None:
    token = login(engine)
    s = engine.load(token)
    old_id = s.id
    s.logout()
    assert s.user_id is None and dict(s) == {}
    s["flash"] = "bye"
    out = engine.commit(s, presented=True)
    assert out.token is not None, "the keys set after logout live in a new session"
    assert engine.load(token).verdict is Verdict.UNKNOWN
    fresh = engine.load(out.token)
    assert fresh.verdict is Verdict.VALID and fresh.id != old_id
    assert fresh.user_id is None and dict(fresh) == {"flash": "bye"}


def test_destroy_then_login_as_another_user(engine: Engine) -> None:
    """Django's login() pattern: flush the old session, then log the new user in."""
    token = login(engine)
    s = engine.load(token)
    s.destroy()
    s.login("bob")
    s["k"] = 1
    out = engine.commit(s, presented=True)
    assert out.token is not None
    assert engine.load(token).verdict is Verdict.UNKNOWN
    bob = engine.load(out.token)
    assert bob.user_id == "bob" and dict(bob) == {"k": 1}
    assert [i.user_id for i in engine.sessions_of("bob")] == ["bob"]


def test_clear_logs_out(engine: Engine) -> None:
    """session.clear(), the Flask/Starlette logout idiom, ends the login too."""
    token = login(engine)
    s = engine.load(token)
    s.clear()
    assert s.user_id is None
    out = engine.commit(s, presented=True)
    assert out.clear and out.token is None
    assert engine.load(token).verdict is Verdict.UNKNOWN


@pytest.mark.parametrize("ender", ["revoke_user", "logout"])
def test_a_regeneration_in_flight_does_not_undo_a_logout(engine: Engine, ender: str) -> None:
    """ "Log out everywhere" (or a logout in another tab) lands while a request
    that regenerates the id is running: the session must stay ended."""
    token = login(engine, "bob")
    a = engine.load(token)
    a.regenerate()
    if ender == "revoke_user":
        assert engine.revoke_user("bob") == 1
    else:
        b = engine.load(token)
        b.logout()
        engine.commit(b, presented=True)
    out = engine.commit(a, presented=True)
    assert out.interrupted and out.token is None and out.clear
    assert engine.sessions_of("bob") == []
    assert engine.load(token).verdict is Verdict.UNKNOWN


def test_a_repeated_genid_id_never_takes_over_a_live_session(
    ring: KeyRing, store: Any, clock: FrozenClock
) -> None:
    """Two processes with a weak, repeating genid: the second login must not
    overwrite the first user's record (ASVS 7.2.3: ids are unique)."""
    a = Engine(keyring=ring, store=store, clock=clock, genid=lambda: "1" * 32)
    b = Engine(keyring=ring, store=store, clock=clock, genid=lambda: "1" * 32)
    alice = login(a, "alice", secret="a")
    s = b.load(None)
    s["secret"] = "m"
    s.login("mallory")
    out = b.commit(s, presented=False)
    assert out.token is None, "the colliding login gets no session"
    back = a.load(alice)
    assert back.verdict is Verdict.VALID
    assert back.user_id == "alice" and back["secret"] == "a"


def test_revoke_others_keeps_only_the_current_session(engine: Engine) -> None:
    mine, phone, laptop = login(engine, "dana"), login(engine, "dana"), login(engine, "dana")
    other_user = login(engine, "erin")
    me = engine.load(mine)
    assert engine.revoke_others(me) == 2
    assert engine.load(mine).verdict is Verdict.VALID
    assert engine.load(phone).verdict is Verdict.UNKNOWN
    assert engine.load(laptop).verdict is Verdict.UNKNOWN
    assert engine.load(other_user).verdict is Verdict.VALID
    assert engine.revoke_others(engine.load(None)) == 0, "an anonymous session has no others"
    fresh = engine.load(None)  # a password reset in a browser with no cookie
    fresh.login("dana")
    assert engine.revoke_others(fresh) == 1, "an unsaved login keeps nothing"
    assert engine.load(mine).verdict is Verdict.UNKNOWN


async def test_revoke_others_async(ring: KeyRing, clock: FrozenClock) -> None:
    engine = AsyncEngine(keyring=ring, store=MemoryStore(clock=clock), clock=clock)
    tokens = []
    for _ in range(3):
        s = await engine.load(None)
        s.login("fay")
        out = await engine.commit(s, presented=False)
        assert out.token is not None
        tokens.append(out.token)
    me = await engine.load(tokens[0])
    assert await engine.revoke_others(me) == 2
    assert [(await engine.load(t)).verdict for t in tokens] == [
        Verdict.VALID,
        Verdict.UNKNOWN,
        Verdict.UNKNOWN,
    ]


def test_rotation_resigns_on_next_use_then_retired(
    engine: Engine, ring: KeyRing, clock: FrozenClock
) -> None:
    token = login(engine)
    ring.rotate("user")
    s = engine.load(token)
    assert s.verdict is Verdict.VALID
    out = engine.commit(s, presented=True)
    assert out.token is not None, "a token under an older key is re-signed"
    assert out.token.split(".")[2] == ring.current_key_id("user")
    ring.retire("user", "k1")
    assert engine.load(token).verdict is Verdict.RETIRED
    assert engine.load(out.token).verdict is Verdict.VALID


def test_revoke_user_logs_out_everywhere(engine: Engine) -> None:
    t1, t2 = login(engine, "bob"), login(engine, "bob")
    t3 = login(engine, "carol")
    assert len(engine.sessions_of("bob")) == 2
    assert engine.revoke_user("bob") == 2
    assert engine.load(t1).verdict is Verdict.UNKNOWN
    assert engine.load(t2).verdict is Verdict.UNKNOWN
    assert engine.load(t3).verdict is Verdict.VALID


def test_events_one_per_load_and_nothing_secret(engine: Engine, events: list[VerdictEvent]) -> None:
    token = login(engine)
    events.clear()
    engine.load(token)
    engine.load("garbage")
    engine.load(token[:-1] + ("0" if token[-1] != "0" else "1"))
    assert [e.verdict for e in events] == [Verdict.VALID, Verdict.MALFORMED, Verdict.FORGED]
    dumped = json.dumps([e.as_dict() for e in events])
    sid = token.split(".")[3]
    assert sid not in dumped and token[-64:] not in dumped


def test_binding(engine: Engine) -> None:
    s = engine.load(None)
    s["x"] = 1
    token = engine.commit(s, presented=False, binding="device-42").token
    assert engine.load(token, binding="device-42").verdict is Verdict.VALID
    assert engine.load(token, binding="device-43").verdict is Verdict.BINDING_MISMATCH
    assert engine.load(token).verdict is Verdict.BINDING_MISMATCH


def test_genid_ids_are_signed(ring: KeyRing, store: Any, clock: FrozenClock) -> None:
    counter = iter(range(1, 1000))
    e = Engine(keyring=ring, store=store, clock=clock, genid=lambda: str(next(counter)))
    token = login(e)
    parts = token.split(".")
    assert parts[3] == "1", "the app's own id is used as is"
    parts[3] = "3"
    assert e.load(".".join(parts)).verdict is Verdict.FORGED


def test_store_unavailable_propagates_from_load(ring: KeyRing, clock: FrozenClock) -> None:
    class Down:
        blocking = False

        def __getattr__(self, name: str) -> Any:
            def fail(*a: Any, **k: Any) -> Any:
                raise StoreUnavailable("down")

            return fail

    good = Engine(keyring=ring, store=MemoryStore(clock=clock), clock=clock)
    token = login(good)
    e = Engine(keyring=ring, store=Down(), clock=clock)  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailable):
        e.load(token)
    assert e.load("garbage").verdict is Verdict.MALFORMED, "bad cookies never need the store"


async def test_async_engine_same_logic(ring: KeyRing, clock: FrozenClock, tmp_path: Path) -> None:
    for store in (MemoryStore(clock=clock), SQLiteStore(tmp_path / "a.db", clock=clock)):
        e = AsyncEngine(keyring=ring, store=store, clock=clock)
        s = await e.load(None)
        s["n"] = 1
        s.login("dave")
        token = (await e.commit(s, presented=False)).token
        s2 = await e.load(token)
        assert s2.verdict is Verdict.VALID and s2["n"] == 1 and s2.user_id == "dave"
        assert (await e.load("nope")).verdict is Verdict.MALFORMED
        assert await e.revoke_user("dave") == 1
        assert (await e.load(token)).verdict is Verdict.UNKNOWN
        await e.close()


@pytest.mark.parametrize("presented", [False, True])
@pytest.mark.parametrize("action", ["none", "read", "destroy", "write", "regenerate", "login"])
def test_the_untouched_shortcut_agrees_with_the_plan(
    ring: KeyRing, clock: FrozenClock, presented: bool, action: str
) -> None:
    engine = Engine(keyring=ring, store=MemoryStore(clock=clock), clock=clock)
    core = engine.core
    session = engine.load("v1.forged" if presented else None)
    _ = session.get("x")
    if action == "destroy":
        session.destroy()
    elif action == "write":
        session["x"] = 1
    elif action == "regenerate":
        session.regenerate()
    elif action == "login":
        session.login("ann")
    quick = core.untouched(session, presented=presented)
    _ops, planned = core.plan(session, presented=presented, binding=None, now=clock.time())
    if action in ("none", "read", "destroy"):
        assert quick == planned
        assert quick is not None and quick.token is None
    else:
        assert quick is None, "a touched session goes through the full plan"
        assert planned.token is not None


def test_untouched_means_new_and_unchanged(ring: KeyRing, clock: FrozenClock) -> None:
    engine = Engine(keyring=ring, store=MemoryStore(clock=clock), clock=clock)
    fresh = engine.load(None)
    assert fresh.untouched
    fresh["x"] = 1
    assert not fresh.untouched
    listed = engine.load(None)
    listed_value = listed.get("missing")
    assert listed_value is None and listed.untouched
    token = engine.commit(fresh, presented=False).token
    assert token is not None
    stored = engine.load(token)
    assert stored.verdict is Verdict.VALID and not stored.untouched, "a stored session is not new"


def _twin_engines(
    clock: FrozenClock,
) -> tuple[Engine, AsyncEngine, CountingStore, CountingStore, list[Any], list[Any]]:
    """A sync and an async engine with equal key rings, each over its own store."""
    data = KeyRing.generate(["user", "admin"]).to_dict()
    sync_store = CountingStore(MemoryStore(clock=clock))
    async_store = CountingStore(MemoryStore(clock=clock))
    sync_events: list[Any] = []
    async_events: list[Any] = []
    timeouts = Timeouts(idle=600, absolute=3600)
    sync = Engine(
        keyring=KeyRing.from_dict(data),
        store=sync_store,
        clock=clock,
        timeouts=timeouts,
        events=[sync_events.append],
    )
    aio = AsyncEngine(
        keyring=KeyRing.from_dict(data),
        store=async_store,
        clock=clock,
        timeouts=timeouts,
        events=[async_events.append],
    )
    return sync, aio, sync_store, async_store, sync_events, async_events


@pytest.mark.parametrize(
    "kind", ["absent", "garbage", "forged", "valid", "expired", "idle", "killed", "unknown"]
)
async def test_the_async_direct_path_agrees_with_the_flow(clock: FrozenClock, kind: str) -> None:
    """AsyncEngine awaits the common steps directly: same verdicts, store calls and events."""
    sync, aio, sync_store, async_store, sync_events, async_events = _twin_engines(clock)
    s = sync.load(None)
    s["n"] = 1
    token = sync.commit(s, presented=False).token
    assert token is not None
    key = record_key(sync.core.codec.verify(token).session_id or "")
    record = sync_store.inner.load(key)
    async_store.inner.write(
        Write(
            key=key,
            fields=record.fields,
            session_class=record.session_class,
            user_id=record.user_id,
            created_at=record.created_at,
            last_seen=record.last_seen,
            expires_at=record.expires_at,
            create=True,
        )
    )
    if kind == "forged":
        token = token[:-1] + ("0" if token[-1] != "0" else "1")
    elif kind == "expired":
        clock.advance(3601)
    elif kind == "idle":
        clock.advance(601)
    elif kind == "killed":
        clock.advance(2)  # the epoch cache of both engines is now due for a refresh
        for inner in (sync_store.inner, async_store.inner):
            inner.raise_epoch("user", clock.time())
    elif kind == "unknown":
        sync_store.inner.delete(key)
        async_store.inner.delete(key)
    presented: str | None = {"absent": None, "garbage": "garbage"}.get(kind, token)
    sync_store.calls.clear()
    async_store.calls.clear()
    sync_events.clear()
    expected = sync.load(presented, client="10.0.0.1", path="/p")
    got = await aio.load(presented, client="10.0.0.1", path="/p")
    assert (
        expected.verdict.value
        == {
            "absent": "absent",
            "garbage": "malformed",
            "forged": "forged",
            "valid": "valid",
            "expired": "expired",
            "idle": "idle_expired",
            "killed": "revoked",
            "unknown": "unknown",
        }[kind]
    )
    assert (got.verdict, got.reason, dict(got), got.id) == (
        expected.verdict,
        expected.reason,
        dict(expected),
        expected.id,
    )
    assert async_store.calls == sync_store.calls
    assert [(e.verdict, e.reason, e.client, e.path) for e in async_events] == [
        (e.verdict, e.reason, e.client, e.path) for e in sync_events
    ]
    got["n"] = expected["n"] = 2
    sync_store.calls.clear()
    async_store.calls.clear()
    expected_out = sync.commit(expected, presented=presented is not None)
    got_out = await aio.commit(got, presented=presented is not None)
    assert (got_out.token is None, got_out.clear) == (
        expected_out.token is None,
        expected_out.clear,
    )
    assert async_store.calls == sync_store.calls
    await aio.close()
    sync.close()


async def test_the_async_direct_path_reports_store_errors(
    ring: KeyRing, clock: FrozenClock
) -> None:
    failures: list[str] = []

    class Hook:
        def __call__(self, event: VerdictEvent) -> None:
            pass

        def store_error(self, operation: str) -> None:
            failures.append(operation)

    store = MemoryStore(clock=clock)
    engine = AsyncEngine(keyring=ring, store=store, clock=clock, events=[Hook()])
    s = await engine.load(None)
    s["n"] = 1
    token = (await engine.commit(s, presented=False)).token
    loaded = await engine.load(token)
    loaded["n"] = 2

    def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("down")

    store.load = down  # type: ignore[method-assign]
    store.write = down  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await engine.load(token)
    with pytest.raises(StoreUnavailable):
        await engine.commit(loaded, presented=True)
    assert failures == ["load", "commit"]
    assert (await engine.load("v1.garbage")).verdict is Verdict.MALFORMED
    assert failures == ["load", "commit"], "a bad cookie never reaches the store"


class _SlowWrites:
    """An async face over a MemoryStore whose writes take 50 ms (a delete may fail)."""

    def __init__(self, inner: MemoryStore, *, delete_fails: bool = False) -> None:
        from donjon.stores import as_async

        self.inner = inner
        self.face = as_async(inner)
        self.delete_fails = delete_fails

    def __getattr__(self, name: str) -> Any:
        return getattr(self.face, name)

    async def write(self, write: Write) -> bool:
        import asyncio

        await asyncio.sleep(0.05)
        return self.inner.write(write)

    async def delete(self, key: str) -> bool:
        if self.delete_fails:
            raise StoreUnavailable("down")
        return self.inner.delete(key)


async def _cancel_a_login_commit(engine: AsyncEngine, user: str) -> str:
    """Log an anonymous session in, and cancel the commit while the new record is
    being written; return the anonymous token."""
    import asyncio

    s = await engine.load(None)
    s["a"] = 1
    first = await engine.commit(s, presented=False)
    assert first.token is not None
    s = await engine.load(first.token)
    s.login(user)
    task = asyncio.ensure_future(engine.commit(s, presented=True))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)  # the shielded steps finish
    return first.token


async def test_a_cancelled_login_commit_still_moves_the_session(
    ring: KeyRing, clock: FrozenClock
) -> None:
    """Cancelled between writing the new record and retiring the old one: the
    steps finish anyway, so no orphan record of the user is left behind."""
    inner = MemoryStore(clock=clock)
    store = _SlowWrites(inner)
    engine = AsyncEngine(keyring=ring, store=store, clock=clock, guard=None)  # type: ignore[arg-type]
    token = await _cancel_a_login_commit(engine, "alice")
    old_id = token.split(".")[3]
    assert inner.load(record_key(old_id)) is None, "the old record went"
    marker = inner.load(moved_key(old_id))
    assert marker is not None and dict(marker.fields) == {MOVED_FIELD: "1"}
    assert len(inner.sessions_of("alice")) == 1


async def test_a_failure_after_a_cancelled_commit_is_reported(
    ring: KeyRing, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[str] = []

    class Hook:
        def __call__(self, event: VerdictEvent) -> None: ...

        def store_error(self, operation: str) -> None:
            errors.append(operation)

    engine = AsyncEngine(
        keyring=ring,
        store=_SlowWrites(MemoryStore(clock=clock), delete_fails=True),  # type: ignore[arg-type]
        clock=clock,
        guard=None,
        events=[Hook()],
    )
    await _cancel_a_login_commit(engine, "bob")
    assert "finishing a cancelled commit" in caplog.text
    assert errors == ["commit"]


# -- concurrent sessions per user (ASVS 7.1.2) ------------------------------
def _limited(ring: KeyRing, store: Any, clock: FrozenClock, limit: int) -> Engine:
    return Engine(keyring=ring, store=store, clock=clock, guard=None, max_sessions_per_user=limit)


def test_a_login_ends_the_least_recently_used_sessions_over_the_limit(
    ring: KeyRing, store: Any, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    engine = _limited(ring, store, clock, 2)
    first = login(engine, "alice")
    clock.advance(120)
    second = login(engine, "alice")
    clock.advance(120)
    s = engine.load(first)  # the first device is used again: now the most recent
    s["seen"] = True
    engine.commit(s, presented=True)
    other = login(engine, "bob")
    clock.advance(120)
    with caplog.at_level("INFO", logger="donjon.audit"):
        third = login(engine, "alice")
    assert engine.load(second).verdict is Verdict.UNKNOWN, "the least recently used ended"
    assert engine.load(first).verdict is Verdict.VALID
    assert engine.load(third).verdict is Verdict.VALID, "the new login always stays"
    assert engine.load(other).verdict is Verdict.VALID, "other users are untouched"
    assert len(engine.sessions_of("alice")) == 2
    assert "over the limit ended: user=alice limit=2 sessions=1" in caplog.text


def test_a_limit_of_one_keeps_only_the_latest_login(
    ring: KeyRing, store: Any, clock: FrozenClock
) -> None:
    engine = _limited(ring, store, clock, 1)
    tokens = []
    for _ in range(3):
        tokens.append(login(engine, "alice"))
        clock.advance(60)
    assert [engine.load(t).verdict for t in tokens] == [
        Verdict.UNKNOWN,
        Verdict.UNKNOWN,
        Verdict.VALID,
    ]
    # Changes that are not logins (data, a regeneration) never trim.
    s = engine.load(tokens[2])
    s.regenerate()
    assert engine.commit(s, presented=True).token is not None
    assert len(engine.sessions_of("alice")) == 1


def test_no_limit_by_default(engine: Engine) -> None:
    tokens = [login(engine, "alice") for _ in range(5)]
    assert all(engine.load(t).verdict is Verdict.VALID for t in tokens)


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "2"])
def test_the_limit_is_checked_at_start_up(ring: KeyRing, limit: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_sessions_per_user"):
        Engine(keyring=ring, store=MemoryStore(), max_sessions_per_user=limit)


def test_the_limit_needs_a_server_side_store(ring: KeyRing) -> None:
    from donjon.stores.cookie import CookieStore

    with pytest.raises(ConfigurationError, match="server-side store"):
        AsyncEngine(keyring=ring, store=CookieStore(), max_sessions_per_user=2)


async def test_the_async_engine_enforces_the_limit_and_survives_a_failing_listing(
    ring: KeyRing, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    inner = MemoryStore(clock=clock)
    engine = AsyncEngine(
        keyring=ring, store=inner, clock=clock, guard=None, max_sessions_per_user=1
    )

    async def alogin() -> str:
        s = await engine.load(None)
        s.login("alice")
        out = await engine.commit(s, presented=False)
        assert out.token is not None
        return out.token

    first = await alogin()
    clock.advance(60)
    second = await alogin()
    assert (await engine.load(first)).verdict is Verdict.UNKNOWN
    assert (await engine.load(second)).verdict is Verdict.VALID

    def down(user_id: str) -> list[Any]:
        raise StoreUnavailable("down")

    inner.sessions_of = down  # type: ignore[method-assign]
    third = await alogin()  # the login stands; the limit waits for the next one
    assert (await engine.load(third)).verdict is Verdict.VALID
    assert "session limit not enforced for user alice" in caplog.text


# -- devices (ASVS 3.3.4: users recognise their sessions) -----------------------
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0"


def test_a_new_record_keeps_its_device_and_the_data_never_shows_it(engine: Engine) -> None:
    s = engine.load(None, device=FIREFOX)
    s["n"] = 1
    token = engine.commit(s, presented=False).token
    s = engine.load(token, device="curl/8.0")
    assert dict(s) == {"n": 1}, "the device is bookkeeping, not session data"
    s.login("alice")  # a new record: the device of the login request
    token = engine.commit(s, presented=True).token
    [info] = engine.sessions_of("alice")
    assert info.device == "curl/8.0"
    s = engine.load(token, device=FIREFOX)
    s["n"] = 2  # a field-level update keeps the record's device
    engine.commit(s, presented=True)
    [info] = engine.sessions_of("alice")
    assert info.device == "curl/8.0"
    again = engine.load(token)
    assert dict(again) == {"n": 2} and again.verdict is Verdict.VALID


def test_device_labels_are_printable_and_bounded(engine: Engine) -> None:
    s = engine.load(None, device="evil\r\nSet-Cookie: x=1\x00 é" + "A" * 500)
    s.login("bob")
    engine.commit(s, presented=False)
    [info] = engine.sessions_of("bob")
    assert info.device is not None
    assert info.device.startswith("evil??Set-Cookie: x=1? ?AAA")
    assert len(info.device) == 200 and info.device.isprintable() and info.device.isascii()


def test_no_device_is_kept_when_told_so(ring: KeyRing, store: Any, clock: FrozenClock) -> None:
    engine = Engine(keyring=ring, store=store, clock=clock, record_devices=False)
    s = engine.load(None, device=FIREFOX)
    s.login("carol")
    engine.commit(s, presented=False)
    [info] = engine.sessions_of("carol")
    assert info.device is None


async def test_the_async_engine_keeps_the_device(ring: KeyRing, clock: FrozenClock) -> None:
    engine = AsyncEngine(keyring=ring, store=MemoryStore(clock=clock), clock=clock)
    s = await engine.load(None, device=FIREFOX)
    s.login("dave")
    await engine.commit(s, presented=False)
    [info] = await engine.sessions_of("dave")
    assert info.device == FIREFOX


async def test_two_logins_racing_each_other_both_stand(ring: KeyRing, clock: FrozenClock) -> None:
    """Each login lists the other's brand-new session: neither may end it."""
    import asyncio

    engine = AsyncEngine(
        keyring=ring, store=MemoryStore(clock=clock), clock=clock, max_sessions_per_user=1
    )
    old = await engine.load(None)
    old.login("alice")
    first = (await engine.commit(old, presented=False)).token
    clock.advance(60)

    async def alogin() -> str | None:
        s = await engine.load(None)
        s.login("alice")
        return (await engine.commit(s, presented=False)).token

    a, b = await asyncio.gather(alogin(), alogin())
    assert (await engine.load(a)).verdict is Verdict.VALID
    assert (await engine.load(b)).verdict is Verdict.VALID
    assert (await engine.load(first)).verdict is Verdict.UNKNOWN, "the old one still goes"
