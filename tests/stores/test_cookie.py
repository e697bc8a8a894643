"""Client-side sealed-cookie sessions (AES-256-GCM)."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from donjon import ConfigurationError, KeyRing, Verdict
from donjon.config import Timeouts
from donjon.core import MAX_TTL
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
    changed = (
        value[:index] + ("B" if ch != "B" else "C") + value[index + 1 :]
        if index >= 0
        else (
            value[:index]
            + ("B" if ch != "B" else "C")
            + (value[index + 1 :] if index != -1 else "")
        )
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


# -- audit regressions ----------------------------------------------------------------


def test_a_replaced_secret_is_never_served_from_the_cipher_cache() -> None:
    # A compromised k1 replaced by a new secret under the same key id: the old
    # secret's seals must die and new seals must use the new secret.
    clock = FrozenClock(1_800_000_000.0)
    old, new = b"o" * 32, b"n" * 32
    ring = KeyRing().add_class("user", keys={"k1": old})
    codec = SealedCodec(ring, clock=clock)
    stolen = codec.seal({"n": 1}, ttl=60)
    assert codec.unseal(stolen).verdict is Verdict.VALID  # the old cipher is cached now
    ring.add_class("user", keys={"k1": new})
    assert codec.unseal(stolen).verdict is Verdict.FORGED
    fresh = codec.seal({"n": 2}, ttl=60)
    only_new = SealedCodec(KeyRing().add_class("user", keys={"k1": new}), clock=clock)
    assert only_new.unseal(fresh).verdict is Verdict.VALID
    only_old = SealedCodec(KeyRing().add_class("user", keys={"k1": old}), clock=clock)
    assert only_old.unseal(fresh).verdict is Verdict.FORGED


def test_the_cipher_cache_stays_bounded() -> None:
    ring = KeyRing.generate(["user"])
    codec = SealedCodec(ring, clock=FrozenClock(1_800_000_000.0))
    for _ in range(300):
        ring.rotate("user")
        assert codec.unseal(codec.seal({}, ttl=60)).verdict is Verdict.VALID
    assert len(codec._cache) <= 64


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "é \U0001f642 \ud83d"])
def test_lone_surrogates_seal_and_come_back(text: str) -> None:
    # json.loads('"\\ud800"') gives such a string, and Session accepts it.
    value = CODEC.seal({"name": text, "plain": "é"}, ttl=60)
    got = CODEC.unseal(value)
    assert got.verdict is Verdict.VALID
    assert got.payload == {"name": text, "plain": "é"}


def test_engine_commits_a_session_holding_a_lone_surrogate() -> None:
    engine = Engine(keyring=RING, store=CookieStore(), clock=FrozenClock(1_800_000_000.0))
    s = engine.load(None)
    s["name"] = json.loads('"\\ud800"')
    token = engine.commit(s, presented=False).token
    again = engine.load(token)
    assert again.verdict is Verdict.VALID and again["name"] == "\ud800"


@pytest.mark.parametrize("skew", [math.nan, math.inf, -math.inf, -1, 3601, "5", None])
def test_skew_is_checked_like_the_token_codec(skew: Any) -> None:
    with pytest.raises(ConfigurationError, match="skew"):
        SealedCodec(RING, skew=skew)


@pytest.mark.parametrize("skew", [0, 0.5, 5, 3600])
def test_valid_skews(skew: float) -> None:
    SealedCodec(RING, skew=skew)


@pytest.mark.parametrize("ttl", [math.nan, math.inf, 0, -1, MAX_TTL + 1, 10**20, "60", None])
def test_ttl_is_checked_like_the_token_codec(ttl: Any) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        CODEC.seal({}, ttl=ttl)


def test_ttl_up_to_400_days() -> None:
    value = CODEC.seal({}, ttl=MAX_TTL)
    assert CODEC.unseal(value).verdict is Verdict.VALID


@pytest.mark.parametrize(
    "epoch",
    [1e306, math.nan, math.inf, -1.0, 10**400],
    ids=["1e306", "nan", "inf", "-1", "10**400"],
)
def test_kill_with_an_impossible_epoch_is_a_configuration_error(epoch: Any) -> None:
    store = CookieStore()
    with pytest.raises(ConfigurationError, match="epoch"):
        store.raise_epoch("user", epoch)
    assert store.epochs() == {}
    ring = KeyRing.generate(["user"])
    engine = Engine(keyring=ring, store=CookieStore(), clock=FrozenClock(1_800_000_000.0))
    s = engine.load(None)
    s["a"] = 1
    token = engine.commit(s, presented=False).token
    with pytest.raises(ConfigurationError):
        engine.kill("user", at=epoch)
    assert engine.load(token).verdict is Verdict.VALID


def test_binding_is_refused_rather_than_silently_ignored() -> None:
    """A sealed cookie carries no binding: asking for one is a configuration error."""
    from donjon.adapters.asgi import SessionMiddleware as AsgiMiddleware
    from donjon.adapters.wsgi import SessionMiddleware as WsgiMiddleware

    engine = Engine(keyring=KeyRing.generate(), store=CookieStore(), guard=None)
    with pytest.raises(ConfigurationError, match="binding"):
        engine.load(None, binding="ctx")
    s = engine.load(None)
    s["a"] = 1
    s.bind_to = "ctx"
    with pytest.raises(ConfigurationError, match="binding"):
        engine.commit(s, presented=False)
    with pytest.raises(ConfigurationError, match="binding"):
        WsgiMiddleware(lambda e, sr: [], engine=engine, binding=lambda environ: "x")
    aengine = AsyncEngine(keyring=KeyRing.generate(), store=CookieStore(), guard=None)

    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="binding"):
        AsgiMiddleware(app, engine=aengine, binding=lambda scope: "x")


async def test_per_user_logout_is_a_clear_error() -> None:
    engine = Engine(keyring=KeyRing.generate(), store=CookieStore(), guard=None)
    with pytest.raises(ConfigurationError, match="server-side"):
        engine.revoke_user("carol")
    with pytest.raises(ConfigurationError, match="server-side"):
        engine.sessions_of("carol")
    aengine = AsyncEngine(keyring=KeyRing.generate(), store=CookieStore(), guard=None)
    with pytest.raises(ConfigurationError, match="server-side"):
        await aengine.revoke_user("carol")
