"""Client-side sealed-cookie sessions (AES-256-GCM)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from donjon import KeyRing, Verdict
from donjon.config import Timeouts
from donjon.engine import AsyncEngine, Engine
from donjon.stores.cookie import CookieStore, SealedCodec, SealTooLarge
from donjon.testing import FrozenClock

RING = KeyRing.generate(["user", "admin"])
CODEC = SealedCodec(RING, clock=FrozenClock(1_800_000_000.0))


def test_round_trip_and_confidentiality() -> None:
    value = CODEC.seal({"card": "4111-1111", "n": 1}, ttl=60)
    assert "4111" not in value and "card" not in value, "the payload is encrypted"
    got = CODEC.unseal(value)
    assert got.verdict is Verdict.VALID
    assert got.payload == {"card": "4111-1111", "n": 1}
    assert got.session_class == "user" and got.key_id == "k1"


@pytest.mark.parametrize("index", [0, 3, 8, 12, 20, 30, -30, -5, -1])
def test_any_change_is_rejected(index: int) -> None:
    value = CODEC.seal({"n": 1}, ttl=60)
    ch = value[index]
    changed = value[:index] + ("B" if ch != "B" else "C") + value[index + 1 :] if index >= 0 else (
        value[:index] + ("B" if ch != "B" else "C") + (value[index + 1 :] if index != -1 else "")
    )
    assert CODEC.unseal(changed).verdict is not Verdict.VALID


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutations_never_valid(data: st.DataObject) -> None:
    value = CODEC.seal({"n": 1, "s": "x" * 20}, ttl=60)
    i = data.draw(st.integers(0, len(value) - 1))
    c = data.draw(st.characters())
    mutated = value[:i] + c + value[i + 1 :]
    if mutated != value:
        assert CODEC.unseal(mutated).verdict is not Verdict.VALID
    assert CODEC.unseal(value[:i]).verdict is not Verdict.VALID


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.binary()))
def test_unseal_never_raises(junk: object) -> None:
    assert CODEC.unseal(junk).verdict is not Verdict.VALID


def test_non_canonical_base64_is_rejected() -> None:
    value = CODEC.seal({"n": 1}, ttl=60)
    head, blob = value.rsplit(".", 1)
    raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
    if len(raw) % 3 == 0:
        pytest.skip("no spare bits for this length")  # pragma: no cover
    last = blob[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = alphabet[alphabet.index(last) ^ 1]
    assert CODEC.unseal(f"{head}.{blob[:-1]}{twin}").verdict is not Verdict.VALID


def test_expired_revoked_retired() -> None:
    clock = FrozenClock(1_900_000_000.0)
    ring = KeyRing.generate(["user"])
    codec = SealedCodec(ring, clock=clock)
    v = codec.seal({"n": 1}, ttl=60)
    clock.advance(61)
    assert codec.unseal(v).verdict is Verdict.EXPIRED
    v = codec.seal({"n": 1}, ttl=60)
    ring.set_epoch("user", clock.time() + 0.5)
    assert codec.unseal(v).verdict is Verdict.REVOKED
    clock.advance(1)
    v = codec.seal({"n": 1}, ttl=60)
    ring.rotate("user")
    assert codec.unseal(v).verdict is Verdict.VALID, "older keys verify during the grace"
    ring.retire("user", "k1")
    assert codec.unseal(v).verdict is Verdict.RETIRED
    other = SealedCodec(KeyRing.generate(["user"]), clock=clock)
    assert other.unseal(codec.seal({"n": 1}, ttl=60)).verdict is Verdict.FORGED


def test_oversize_session_is_a_clear_error_at_save_time() -> None:
    with pytest.raises(SealTooLarge, match="4096"):
        CODEC.seal({"blob": "x" * 4000}, ttl=60)


def test_engine_with_cookie_store() -> None:
    clock = FrozenClock(1_800_000_000.0)
    engine = Engine(
        keyring=RING, store=CookieStore(), clock=clock, timeouts=Timeouts(idle=600, absolute=3600)
    )
    s = engine.load(None)
    s["n"] = 1
    s.login("zoe")
    token = engine.commit(s, presented=False).token
    assert token is not None and token.startswith("s1.")
    s = engine.load(token)
    assert s.verdict is Verdict.VALID and s["n"] == 1 and s.user_id == "zoe"
    s["n"] += 1
    token2 = engine.commit(s, presented=True).token
    assert token2 is not None and engine.load(token2)["n"] == 2
    unchanged = engine.load(token2)
    assert engine.commit(unchanged, presented=True).token is None, "nothing to re-seal"
    clock.advance(601)
    assert engine.load(token2).verdict is Verdict.IDLE_EXPIRED
    s = engine.load(None)
    s["big"] = "x" * 5000
    with pytest.raises(SealTooLarge):
        engine.commit(s, presented=False)
    live = engine.load(engine.commit(_one(engine), presented=False).token)
    assert live.verdict is Verdict.VALID
    live.destroy()
    out = engine.commit(live, presented=True)
    assert out.clear and out.token is None, "destroy clears the cookie"


def _one(engine: Engine):  # type: ignore[no-untyped-def]
    s = engine.load(None)
    s["a"] = 1
    return s


async def test_async_engine_cookie_store_and_kill_switch() -> None:
    clock = FrozenClock(1_800_000_000.0)
    ring = KeyRing.generate(["user"])
    engine = AsyncEngine(keyring=ring, store=CookieStore(), clock=clock)
    s = await engine.load(None)
    s["k"] = "v"
    token = (await engine.commit(s, presented=False)).token
    assert (await engine.load(token)).verdict is Verdict.VALID
    clock.advance(1)
    await engine.kill("user")
    assert (await engine.load(token)).verdict is Verdict.REVOKED
