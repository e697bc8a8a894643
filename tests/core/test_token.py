"""The token codec: every verdict it can give, with its reason, and every issue() rule."""

from __future__ import annotations

import base64
import enum
import itertools
import math
import re
from typing import Any

import pytest

from donjon import ConfigurationError, DonjonError, InvalidToken
from donjon.core import (
    ATTACK_VERDICTS,
    MAX_TOKEN_LENGTH,
    MAX_TTL,
    SESSION_ID_RE,
    TOKEN_VERSION,
    KeyRing,
    TokenCodec,
    Verdict,
    VerifyResult,
    new_session_id,
)
from donjon.testing import FrozenClock

from ._support import T0, fixed_secret, make_ring

TOKEN_RE = re.compile(
    r"v1\.(?P<cls>[a-z][a-z0-9_]*)\.(?P<kid>[A-Za-z0-9_-]+)\.(?P<sid>[A-Za-z0-9_-]+)"
    r"\.(?P<iat>[0-9]+)\.(?P<exp>[0-9]+)\.(?P<bind>_|[0-9a-f]{32})\.(?P<mac>[0-9a-f]{64})"
)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def ring() -> KeyRing:
    return make_ring()


@pytest.fixture
def codec(ring: KeyRing, clock: FrozenClock) -> TokenCodec:
    return TokenCodec(ring, clock=clock)


def fields(token: str) -> list[str]:
    return token.split(".")


def with_field(token: str, index: int, value: str) -> str:
    parts = fields(token)
    parts[index] = value
    return ".".join(parts)


def resign(ring: KeyRing, token: str, index: int, value: str) -> str:
    """Change one field and compute a correct MAC: a token only a key holder can make."""
    parts = fields(with_field(token, index, value))
    ck = ring.snapshot(parts[1])
    h = ck.mac_keys[parts[2]].copy()
    h.update(".".join(parts[:-1]).encode())
    parts[-1] = h.hexdigest()
    return ".".join(parts)


# -- VALID -----------------------------------------------------------------------


def test_valid_token_and_its_fields(codec: TokenCodec) -> None:
    token = codec.issue(ttl=3600, session_id="abc")
    assert isinstance(token, str)
    match = TOKEN_RE.fullmatch(token)
    assert match is not None
    assert match["cls"] == "user"
    assert match["kid"] == "k1"
    assert match["sid"] == "abc"
    assert match["iat"] == "1800000000000"
    assert match["exp"] == "1800003600000"
    assert match["bind"] == "_"
    result = codec.verify(token)
    assert result == VerifyResult(
        Verdict.VALID,
        session_id="abc",
        session_class="user",
        key_id="k1",
        issued_at=T0,
        expires_at=T0 + 3600,
        bound=False,
        reason="",
    )
    assert result.ok is True
    assert result.check() is result
    assert type(result.issued_at) is float
    assert type(result.expires_at) is float


def test_valid_for_each_class(codec: TokenCodec) -> None:
    result = codec.verify(codec.issue(session_class="admin", ttl=60))
    assert result.verdict is Verdict.VALID
    assert (result.session_class, result.key_id) == ("admin", "a1")


def test_token_starts_with_the_version(codec: TokenCodec) -> None:
    assert TOKEN_VERSION == "v1"
    assert codec.issue(ttl=60).startswith("v1.user.k1.")


def test_issue_is_deterministic_given_its_inputs(codec: TokenCodec) -> None:
    a = codec.issue(ttl=60, session_id="s", now=T0)
    assert codec.issue(ttl=60, session_id="s", now=T0) == a
    assert codec.issue(ttl=61, session_id="s", now=T0) != a
    assert codec.issue(ttl=60, session_id="t", now=T0) != a


@pytest.mark.parametrize(
    "now_ms",
    [
        1_800_000_000_123,
        1_800_000_000_001,
        1_234_567_890_999,
        1_700_000_000_007,
        4_102_444_800_001,
        # Just below 2**41 ms (2039) and 2**40 ms (2004), x / 1000 * 1000 is a hair under x:
        # truncating it to an int loses a millisecond.
        2_198_912_025_081,
        2_199_005_862_785,
        1_073_799_684_906,
    ],
)
def test_millisecond_times_round_trip(codec: TokenCodec, now_ms: int) -> None:
    now = now_ms / 1000
    token = codec.issue(ttl=0.123, now=now)
    assert fields(token)[4] == str(now_ms)
    assert fields(token)[5] == str(now_ms + 123)
    result = codec.verify(token, now=now)
    assert result.verdict is Verdict.VALID
    assert result.issued_at == now
    assert result.expires_at == (now_ms + 123) / 1000
    assert codec.verify(token, now=result.expires_at).verdict is Verdict.EXPIRED


def test_many_millisecond_times_round_trip(codec: TokenCodec) -> None:
    for now_ms in range(2_198_000_000_000, 2_198_000_200_000, 97):
        token = codec.issue(ttl=1, now=now_ms / 1000, session_id="s")
        result = codec.verify(token, now=now_ms / 1000)
        assert result.issued_at == now_ms / 1000, now_ms
        assert codec.verify(token, now=result.expires_at).verdict is Verdict.EXPIRED, now_ms


def test_largest_token_fits_the_length_cap(clock: FrozenClock) -> None:
    name, kid = "c" * 32, "K" * 16
    ring = KeyRing().add_class(name, keys={kid: fixed_secret("big")})
    codec = TokenCodec(ring, clock=clock)
    far = 99_999_999_999.0  # year 5138: 14 digits of milliseconds
    token = codec.issue(session_class=name, ttl=MAX_TTL, session_id="s" * 128, binding="b", now=far)
    assert len(token) <= MAX_TOKEN_LENGTH
    assert codec.verify(token, binding="b", now=far).verdict is Verdict.VALID


def test_verify_uses_the_codec_clock(codec: TokenCodec, clock: FrozenClock) -> None:
    token = codec.issue(ttl=10)
    assert codec.verify(token).verdict is Verdict.VALID
    clock.advance(10)
    assert codec.verify(token).verdict is Verdict.EXPIRED
    assert codec.verify(token, now=T0).verdict is Verdict.VALID
    assert codec.clock is clock


def test_codec_sees_later_ring_changes(ring: KeyRing, codec: TokenCodec) -> None:
    assert codec.keyring is ring
    ring.add_class("api", keys={"p1": fixed_secret("api/p1")})
    assert codec.verify(codec.issue(session_class="api", ttl=60)).verdict is Verdict.VALID


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_bytes_tokens_are_accepted(codec: TokenCodec, kind: type) -> None:
    token = codec.issue(ttl=60, session_id="sid")
    result = codec.verify(kind(token.encode("ascii")))
    assert result.verdict is Verdict.VALID
    assert result.session_id == "sid"
    tampered = kind(with_field(token, 3, "sie").encode("ascii"))
    assert codec.verify(tampered).verdict is Verdict.FORGED


def test_default_skew_must_be_sane(ring: KeyRing) -> None:
    for skew in (-1, 3600.5, math.nan, math.inf):
        with pytest.raises(ConfigurationError, match="skew"):
            TokenCodec(ring, skew=skew)
    assert repr(TokenCodec(ring, skew=0)).endswith("skew=0)")
    assert repr(TokenCodec(ring, skew=3600)).endswith("skew=3600)")
    assert repr(TokenCodec(ring)).endswith("skew=5)")


# -- MALFORMED -------------------------------------------------------------------

VALID_SHAPE = "v1.user.k1.sid.1800000000000.1800003600000._." + "0" * 64

MALFORMED_CASES: list[Any] = [
    pytest.param("", "empty", id="empty"),
    pytest.param(b"", "empty", id="empty-bytes"),
    pytest.param("a" * (MAX_TOKEN_LENGTH + 1), "too_long", id="too-long"),
    pytest.param(b"a" * (MAX_TOKEN_LENGTH + 1), "too_long", id="too-long-bytes"),
    pytest.param("é" * (MAX_TOKEN_LENGTH + 1), "too_long", id="too-long-non-ascii"),
    pytest.param(VALID_SHAPE + "." * 400, "too_long", id="too-long-dots"),
    pytest.param("a" * MAX_TOKEN_LENGTH, "field_count", id="at-cap"),
    pytest.param(VALID_SHAPE.replace("sid", "sïd"), "not_ascii", id="non-ascii"),
    pytest.param(VALID_SHAPE.replace("sid", "s\ud800d"), "not_ascii", id="surrogate"),
    pytest.param(VALID_SHAPE.replace("sid", "sïd").encode(), "not_ascii", id="non-ascii-bytes"),
    pytest.param(b"\xff" * 10, "not_ascii", id="binary"),
    pytest.param("v1.user.k1.sid.1.2." + "0" * 64, "field_count", id="seven-fields"),
    pytest.param(VALID_SHAPE + ".x", "field_count", id="nine-fields"),
    pytest.param(VALID_SHAPE.replace("sid", "s.d"), "field_count", id="dot-in-id"),
    pytest.param("." * 7, "version", id="only-dots"),
    pytest.param("no dots at all", "field_count", id="no-dots"),
    pytest.param("v2" + VALID_SHAPE[2:], "version", id="v2"),
    pytest.param("V1" + VALID_SHAPE[2:], "version", id="V1"),
    pytest.param(" v1" + VALID_SHAPE[2:], "version", id="leading-space"),
    pytest.param(VALID_SHAPE[:-1], "mac_shape", id="mac-63"),
    pytest.param(VALID_SHAPE + "0", "mac_shape", id="mac-65"),
    pytest.param(VALID_SHAPE[:-64], "mac_shape", id="mac-empty"),
    pytest.param(VALID_SHAPE + " ", "mac_shape", id="trailing-space"),
    pytest.param(None, "not_text", id="None"),
    pytest.param(0, "not_text", id="int"),
    pytest.param(1.5, "not_text", id="float"),
    pytest.param([VALID_SHAPE], "not_text", id="list"),
    pytest.param({"token": VALID_SHAPE}, "not_text", id="dict"),
    pytest.param(memoryview(VALID_SHAPE.encode()), "not_text", id="memoryview"),
    pytest.param(object(), "not_text", id="object"),
]


@pytest.mark.parametrize(("token", "reason"), MALFORMED_CASES)
def test_malformed(codec: TokenCodec, token: Any, reason: str) -> None:
    result = codec.verify(token)
    assert result == VerifyResult(Verdict.MALFORMED, reason=reason)
    assert result.session_id is None
    assert result.session_class is None


def test_valid_shape_reaches_the_mac_check(codec: TokenCodec) -> None:
    # The shape used above is only malformed where it was broken on purpose.
    result = codec.verify(VALID_SHAPE)
    assert result.verdict is Verdict.FORGED
    assert result.reason == "bad_mac"


ALPHABET_CASES: list[Any] = [
    pytest.param(3, "s d", id="space-in-id"),
    pytest.param(3, "s+d", id="plus-in-id"),
    pytest.param(3, "x" * 129, id="id-129"),
    pytest.param(4, "18e11", id="letter-in-issued"),
    pytest.param(4, "-1", id="negative-issued"),
    pytest.param(5, " 1800003600000", id="space-in-expires"),
    pytest.param(5, "9" * 16, id="expires-16-digits"),
    pytest.param(6, "g" * 32, id="non-hex-binding"),
    pytest.param(6, "0" * 31, id="binding-31"),
    pytest.param(6, "", id="empty-binding"),
    pytest.param(7, "z" * 64, id="non-hex-mac"),
    pytest.param(7, "0" * 63 + " ", id="space-in-mac"),
    pytest.param(1, "us er", id="space-in-class"),
    pytest.param(1, "User", id="upper-case-class"),
    pytest.param(2, "k 1", id="space-in-key-id"),
    pytest.param(2, "k" * 17, id="key-id-17"),
]


@pytest.mark.parametrize(("index", "value"), ALPHABET_CASES)
def test_alphabet_errors_are_malformed_not_forged(
    codec: TokenCodec, index: int, value: str
) -> None:
    # Verdict.MALFORMED: "not shaped like a token: wrong size, alphabet, ...". Found
    # only once the key or MAC check has failed: the valid path does no extra work.
    token = codec.issue(ttl=60, session_id="sid")
    result = codec.verify(with_field(token, index, value))
    assert result == VerifyResult(Verdict.MALFORMED, reason="bad_alphabet")


def test_alphabet_errors_next_to_a_retired_key_are_malformed(clock: FrozenClock) -> None:
    ring = KeyRing().add_class("user", keys={"k2": fixed_secret("user/k2")}, retired=["k1"])
    codec = TokenCodec(ring, clock=clock)
    retired = "v1.user.k1.sid.1800000000000.1800003600000._." + "0" * 64
    assert codec.verify(retired).verdict is Verdict.RETIRED
    result = codec.verify(with_field(retired, 3, "s d"))
    assert result == VerifyResult(Verdict.MALFORMED, reason="bad_alphabet")


def test_in_alphabet_tampering_stays_forged(codec: TokenCodec) -> None:
    # Upper-case hex and leading zeros are in the alphabet: re-encodings the MAC refuses.
    token = codec.issue(ttl=60, session_id="sid", binding="ctx")
    for index, value in [(7, fields(token)[7].upper()), (6, fields(token)[6].upper())]:
        assert codec.verify(with_field(token, index, value), binding="ctx").reason == "bad_mac"
    assert codec.verify(with_field(token, 4, "0" + fields(token)[4])).reason == "bad_mac"


# -- FORGED ----------------------------------------------------------------------


def test_forged_unknown_class(codec: TokenCodec, clock: FrozenClock) -> None:
    other = TokenCodec(
        KeyRing().add_class("guest", keys={"k1": fixed_secret("user/k1")}), clock=clock
    )
    result = codec.verify(other.issue(session_class="guest", ttl=60))
    assert result == VerifyResult(Verdict.FORGED, reason="unknown_class")


def test_forged_unknown_key_id(codec: TokenCodec, clock: FrozenClock) -> None:
    other = TokenCodec(
        KeyRing().add_class("user", keys={"k9": fixed_secret("user/k1")}), clock=clock
    )
    result = codec.verify(other.issue(ttl=60))
    assert result == VerifyResult(Verdict.FORGED, session_class="user", reason="unknown_key")


@pytest.mark.parametrize(
    ("index", "value"),
    [(1, "admin"), (3, "other-session"), (4, "1800000000001"), (5, "1900000000000"), (6, "0" * 32)],
    ids=["class", "session-id", "issued", "expires", "binding"],
)
def test_forged_when_a_signed_field_changes(codec: TokenCodec, index: int, value: str) -> None:
    token = codec.issue(ttl=60, session_id="sid")
    result = codec.verify(with_field(token, index, value))
    assert result.verdict is Verdict.FORGED
    assert result.reason in {"bad_mac", "unknown_key"}
    assert result.session_id is None


def test_forged_bad_mac(codec: TokenCodec) -> None:
    token = codec.issue(ttl=60)
    last = "0" if token[-1] != "0" else "1"
    result = codec.verify(token[:-1] + last)
    assert result == VerifyResult(
        Verdict.FORGED, session_class="user", key_id="k1", reason="bad_mac"
    )


def test_forged_uppercase_mac(codec: TokenCodec) -> None:
    token = codec.issue(ttl=60, session_id="s")
    body, _, mac = token.rpartition(".")
    assert mac != mac.upper()
    assert codec.verify(f"{body}.{mac.upper()}").reason == "bad_mac"


def test_forged_token_from_another_ring(codec: TokenCodec, clock: FrozenClock) -> None:
    other = TokenCodec(KeyRing().add_class("user", keys={"k1": fixed_secret("evil")}), clock=clock)
    result = codec.verify(other.issue(ttl=60))
    assert result.verdict is Verdict.FORGED
    assert result.reason == "bad_mac"


def test_forged_when_mac_key_of_another_class_is_used(ring: KeyRing, clock: FrozenClock) -> None:
    # Same secret in two classes: the class name is inside the MAC, so no swap.
    shared = fixed_secret("shared")
    ring = KeyRing().add_class("user", keys={"k1": shared}).add_class("admin", keys={"k1": shared})
    codec = TokenCodec(ring, clock=clock)
    token = codec.issue(ttl=60, session_class="user")
    assert codec.verify(with_field(token, 1, "admin")).verdict is Verdict.FORGED


def test_forged_when_issued_in_the_future(codec: TokenCodec) -> None:
    token = codec.issue(ttl=60, now=T0 + 60, session_id="s")
    result = codec.verify(token)
    assert result.verdict is Verdict.FORGED
    assert result.reason == "issued_in_future"
    assert (result.session_id, result.session_class, result.key_id) == ("s", "user", "k1")
    assert (result.issued_at, result.expires_at) == (T0 + 60, T0 + 120)


@pytest.mark.parametrize(
    ("skew", "ahead", "verdict"),
    [
        (5, 0.001, Verdict.VALID),
        (5, 5, Verdict.VALID),
        (5, 5.001, Verdict.FORGED),
        (0, 0, Verdict.VALID),
        (0, 0.001, Verdict.FORGED),
        (120, 60, Verdict.VALID),
        (120, 120, Verdict.VALID),
        (120, 120.001, Verdict.FORGED),
    ],
)
def test_skew_is_configurable(
    ring: KeyRing, clock: FrozenClock, skew: float, ahead: float, verdict: Verdict
) -> None:
    codec = TokenCodec(ring, clock=clock, skew=skew)
    assert codec.verify(codec.issue(ttl=600, now=T0 + ahead)).verdict is verdict


def test_default_skew_is_five_seconds(codec: TokenCodec) -> None:
    assert codec.verify(codec.issue(ttl=60, now=T0 + 5)).verdict is Verdict.VALID
    assert codec.verify(codec.issue(ttl=60, now=T0 + 5.001)).verdict is Verdict.FORGED


# -- EXPIRED ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("later", "verdict"),
    [
        (0, Verdict.VALID),
        (3599.999, Verdict.VALID),
        (3600, Verdict.EXPIRED),
        (3600.001, Verdict.EXPIRED),
        (86400 * 365, Verdict.EXPIRED),
    ],
)
def test_expiry(codec: TokenCodec, clock: FrozenClock, later: float, verdict: Verdict) -> None:
    token = codec.issue(ttl=3600, session_id="s")
    clock.advance(later)
    result = codec.verify(token)
    assert result.verdict is verdict
    assert result.session_id == "s"
    assert result.expires_at == T0 + 3600
    assert result.reason == ("expired" if verdict is Verdict.EXPIRED else "")


def test_expired_at_exactly_expires_at(codec: TokenCodec) -> None:
    token = codec.issue(ttl=90.5, now=T0 + 0.25)
    result = codec.verify(token, now=T0 + 0.25)
    assert result.expires_at == T0 + 90.75
    assert codec.verify(token, now=result.expires_at).verdict is Verdict.EXPIRED


# -- REVOKED ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("issued", "verdict"),
    [
        (T0 - 3600, Verdict.REVOKED),
        (T0 + 9.999, Verdict.REVOKED),
        (T0 + 10, Verdict.VALID),
        (T0 + 10.001, Verdict.VALID),
        (T0 + 11, Verdict.VALID),
    ],
)
def test_revoked_when_issued_before_the_class_epoch(
    ring: KeyRing, codec: TokenCodec, clock: FrozenClock, issued: float, verdict: Verdict
) -> None:
    token = codec.issue(ttl=86400, now=issued, session_id="s")
    assert ring.set_epoch("user", T0 + 10)
    clock.set(T0 + 12)
    result = codec.verify(token)
    assert result.verdict is verdict
    assert result.session_id == "s"
    assert result.reason == ("class_epoch" if verdict is Verdict.REVOKED else "")


@pytest.mark.parametrize("epoch_ms", [1_800_000_000_123, 2_198_912_025_081, 1_073_799_684_906])
def test_token_issued_exactly_at_the_epoch_is_valid(
    ring: KeyRing, codec: TokenCodec, epoch_ms: int
) -> None:
    epoch = epoch_ms / 1000
    at, before = (codec.issue(ttl=60, now=t) for t in (epoch, (epoch_ms - 1) / 1000))
    ring.set_epoch("user", epoch)
    assert codec.verify(at, now=epoch).verdict is Verdict.VALID
    assert codec.verify(before, now=epoch).verdict is Verdict.REVOKED


@pytest.mark.parametrize("ttl", [1.005, 0.29, 4.35, 3600.001, 0.001])
def test_ttl_in_milliseconds_is_kept(codec: TokenCodec, ttl: float) -> None:
    result = codec.verify(codec.issue(ttl=ttl))
    assert result.expires_at == T0 + round(ttl * 1000) / 1000


def test_epoch_from_add_class(clock: FrozenClock) -> None:
    ring = KeyRing().add_class("user", keys={"k1": fixed_secret("user/k1")}, epoch=T0)
    codec = TokenCodec(ring, clock=clock)
    assert codec.verify(codec.issue(ttl=60, now=T0 - 0.001)).verdict is Verdict.REVOKED
    assert codec.verify(codec.issue(ttl=60, now=T0)).verdict is Verdict.VALID


def test_kill_switch_is_per_class(ring: KeyRing, codec: TokenCodec) -> None:
    user = codec.issue(ttl=60)
    admin = codec.issue(session_class="admin", ttl=60)
    ring.set_epoch("admin", T0 + 1)
    assert codec.verify(user).verdict is Verdict.VALID
    assert codec.verify(admin).verdict is Verdict.REVOKED


# -- RETIRED ---------------------------------------------------------------------


def test_retired_key(ring: KeyRing, codec: TokenCodec) -> None:
    token = codec.issue(ttl=60)
    ring.rotate("user")
    ring.retire("user", "k1")
    result = codec.verify(token)
    assert result == VerifyResult(
        Verdict.RETIRED, session_class="user", key_id="k1", reason="retired_key"
    )


def test_retired_after_grace(ring: KeyRing, codec: TokenCodec, clock: FrozenClock) -> None:
    token = codec.issue(ttl=600, session_id="s")
    ring.rotate("user", grace_until=T0 + 60)
    clock.advance(61)
    result = codec.verify(token)
    assert result.verdict is Verdict.RETIRED
    assert result.reason == "grace_over"
    assert (result.session_id, result.key_id) == ("s", "k1")


# -- BINDING_MISMATCH --------------------------------------------------------------


def test_bound_token(codec: TokenCodec) -> None:
    token = codec.issue(ttl=60, binding="csrf-cookie-value", session_id="s")
    bind = fields(token)[6]
    assert re.fullmatch(r"[0-9a-f]{32}", bind)
    assert "csrf" not in token
    result = codec.verify(token, binding="csrf-cookie-value")
    assert result.verdict is Verdict.VALID
    assert result.bound is True
    assert result.session_id == "s"


@pytest.mark.parametrize(
    ("binding", "reason"),
    [
        (None, "binding_missing"),
        ("csrf-cookie-valuf", "binding_differs"),
        ("", "binding_differs"),
        (b"other", "binding_differs"),
        ("\udcff", "binding_differs"),
        ("CSRF-COOKIE-VALUE", "binding_differs"),
    ],
)
def test_binding_mismatch(codec: TokenCodec, binding: Any, reason: str) -> None:
    token = codec.issue(ttl=60, binding="csrf-cookie-value", session_id="s")
    result = codec.verify(token, binding=binding)
    assert result.verdict is Verdict.BINDING_MISMATCH
    assert result.reason == reason
    assert result.bound is True
    assert result.session_id == "s"


@pytest.mark.parametrize(
    ("issued_with", "verified_with"),
    [
        (b"\x00\xff binary", b"\x00\xff binary"),
        (b"\x00\xff binary", bytearray(b"\x00\xff binary")),
        ("text", b"text"),
        (b"caf\xc3\xa9", "café"),
        ("", ""),
        ("", b""),
    ],
)
def test_binding_str_and_bytes(codec: TokenCodec, issued_with: Any, verified_with: Any) -> None:
    token = codec.issue(ttl=60, binding=issued_with)
    assert codec.verify(token, binding=verified_with).verdict is Verdict.VALID
    assert codec.verify(token).verdict is Verdict.BINDING_MISMATCH


def test_binding_tag_depends_on_the_key(ring: KeyRing, codec: TokenCodec) -> None:
    a = codec.issue(ttl=60, binding="ctx", session_id="s")
    ring.rotate("user", secret=fixed_secret("user/k2"))
    b = codec.issue(ttl=60, binding="ctx", session_id="s")
    assert fields(a)[6] != fields(b)[6]
    assert codec.verify(a, binding="ctx").verdict is Verdict.VALID
    assert codec.verify(b, binding="ctx").verdict is Verdict.VALID


def test_unbound_token_ignores_a_binding(codec: TokenCodec) -> None:
    result = codec.verify(codec.issue(ttl=60), binding="anything")
    assert result.verdict is Verdict.VALID
    assert result.bound is False


# -- pipeline order ----------------------------------------------------------------


def test_pipeline_order(ring: KeyRing, codec: TokenCodec, clock: FrozenClock) -> None:
    bound_old = codec.issue(ttl=60, binding="ctx")
    ring.set_epoch("user", T0 + 1)
    # A bad MAC wins over everything that needs trusted fields.
    assert codec.verify(bound_old[:-1] + ("0" if bound_old[-1] != "0" else "1")).verdict is (
        Verdict.FORGED
    )
    # Time is checked before the epoch, the epoch before the binding.
    assert codec.verify(bound_old, binding="x").verdict is Verdict.REVOKED
    clock.advance(60)
    assert codec.verify(bound_old, binding="x").verdict is Verdict.EXPIRED


def test_every_codec_verdict_is_covered() -> None:
    produced = {Verdict.MALFORMED} | {
        Verdict.VALID,
        Verdict.FORGED,
        Verdict.EXPIRED,
        Verdict.REVOKED,
        Verdict.RETIRED,
        Verdict.BINDING_MISMATCH,
    }
    # The rest are the engine's: store lookups, the guard, no cookie at all.
    assert set(Verdict) - produced == {
        Verdict.UNKNOWN,
        Verdict.IDLE_EXPIRED,
        Verdict.LOCKED_OUT,
        Verdict.ABSENT,
    }


# -- issue() errors --------------------------------------------------------------


@pytest.mark.parametrize(
    "ttl", [0, 0.0, -1, -0.001, MAX_TTL + 1, MAX_TTL * 2, math.nan, math.inf, -math.inf, "60", None]
)
def test_issue_rejects_bad_ttl(codec: TokenCodec, ttl: Any) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        codec.issue(ttl=ttl)


def test_issue_ttl_limits(codec: TokenCodec) -> None:
    result = codec.verify(codec.issue(ttl=MAX_TTL))
    assert result.expires_at == T0 + 400 * 86400
    assert MAX_TTL == 400 * 86400
    tiny = codec.verify(codec.issue(ttl=1e-9), now=T0)
    assert tiny.expires_at == T0 + 0.001
    assert tiny.verdict is Verdict.VALID


@pytest.mark.parametrize("name", ["guest", "User", "", None])
def test_issue_rejects_unknown_class(codec: TokenCodec, name: Any) -> None:
    with pytest.raises(ConfigurationError, match="unknown session class"):
        codec.issue(session_class=name, ttl=60)


@pytest.mark.parametrize(
    "session_id", ["", "a.b", "a" * 129, "é", " a", "a ", "a\n", "a=", "a+b", "a/b", 5, b"abc"]
)
def test_issue_rejects_bad_session_ids(codec: TokenCodec, session_id: Any) -> None:
    with pytest.raises(ConfigurationError, match="session id"):
        codec.issue(ttl=60, session_id=session_id)


@pytest.mark.parametrize("session_id", ["a", "A-b_9", "x" * 128, "0"])
def test_issue_accepts_session_ids(codec: TokenCodec, session_id: str) -> None:
    assert codec.verify(codec.issue(ttl=60, session_id=session_id)).session_id == session_id


# -- genid -----------------------------------------------------------------------


def test_genid_ids_are_used(ring: KeyRing, clock: FrozenClock) -> None:
    codec = TokenCodec(ring, clock=clock, genid=lambda: "app-id_1")
    assert codec.new_session_id() == "app-id_1"
    assert codec.verify(codec.issue(ttl=60)).session_id == "app-id_1"
    assert codec.verify(codec.issue(ttl=60, session_id="given")).session_id == "given"


def test_counter_ids_are_signed(ring: KeyRing, clock: FrozenClock) -> None:
    counter = itertools.count(1)
    codec = TokenCodec(ring, clock=clock, genid=lambda: str(next(counter)))
    tokens = [codec.issue(ttl=60) for _ in range(3)]
    assert [codec.verify(t).session_id for t in tokens] == ["1", "2", "3"]
    # Guessing the neighbour's id is useless without its MAC.
    for token in tokens:
        guessed = with_field(token, 3, str(int(fields(token)[3]) + 1))
        result = codec.verify(guessed)
        assert result.verdict is Verdict.FORGED
        assert result.reason == "bad_mac"
    # ...and a counter id in another token's text is no better.
    swapped = with_field(tokens[0], 3, "2")
    assert codec.verify(swapped).verdict is Verdict.FORGED


@pytest.mark.parametrize("bad", [None, "", "a.b", "x" * 129, 5, b"abc", "ü"])
def test_bad_genid_return(ring: KeyRing, clock: FrozenClock, bad: Any) -> None:
    codec = TokenCodec(ring, clock=clock, genid=lambda: bad)
    with pytest.raises(ConfigurationError, match="genid"):
        codec.issue(ttl=60)
    with pytest.raises(ConfigurationError, match="genid"):
        codec.new_session_id()


# -- default ids -----------------------------------------------------------------


@pytest.mark.parametrize("make", [new_session_id, lambda: TokenCodec(make_ring()).new_session_id()])
def test_default_ids_are_256_bit_base64url(make: Any) -> None:
    ids = [make() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for sid in ids:
        assert len(sid) == 43
        assert SESSION_ID_RE.fullmatch(sid)
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sid)
        raw = base64.urlsafe_b64decode(sid + "=")
        assert len(raw) == 32
        assert base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == sid
    # Every character of the alphabet shows up: the bits are not stuck.
    assert len(set("".join(ids))) == 64


def test_issue_uses_default_ids(codec: TokenCodec) -> None:
    ids = {codec.verify(codec.issue(ttl=60)).session_id for _ in range(50)}
    assert len(ids) == 50
    assert all(sid is not None and len(sid) == 43 for sid in ids)


# -- check() and InvalidToken ------------------------------------------------------


def _non_valid_results(ring: KeyRing, codec: TokenCodec) -> dict[Verdict, tuple[str, Any]]:
    token = codec.issue(ttl=60, session_id="secret-session-id", binding="ctx")
    killed = codec.issue(session_class="admin", ttl=60, session_id="secret-session-id", now=T0 - 1)
    ring.set_epoch("admin", T0)
    bad_mac = token[:-1] + ("0" if token[-1] != "0" else "1")
    return {
        Verdict.MALFORMED: (token + "x", codec.verify(token + "x")),
        Verdict.FORGED: (bad_mac, codec.verify(bad_mac, binding="ctx")),
        Verdict.EXPIRED: (token, codec.verify(token, binding="ctx", now=T0 + 60)),
        Verdict.BINDING_MISMATCH: (token, codec.verify(token, binding="xx")),
        Verdict.REVOKED: (killed, codec.verify(killed)),
    }


def test_check_raises_invalid_token_that_reveals_nothing(ring: KeyRing, codec: TokenCodec) -> None:
    cases = _non_valid_results(ring, codec)
    ring.rotate("user")
    ring.retire("user", "k1")
    retired = cases[Verdict.EXPIRED][0]
    cases[Verdict.RETIRED] = (retired, codec.verify(retired))
    assert {r.verdict for _, r in cases.values()} == set(cases)
    for verdict, (token, result) in cases.items():
        with pytest.raises(InvalidToken) as info:
            result.check()
        exc = info.value
        assert isinstance(exc, DonjonError)
        assert exc.verdict is verdict
        assert exc.reason == result.reason
        assert exc.reason
        assert str(exc) == "invalid token"
        for text in (str(exc), repr(exc), *map(str, exc.args)):
            assert "secret-session-id" not in text
            assert token not in text
            assert fields(token)[-1] not in text
            assert exc.reason not in text


def test_check_returns_valid_results(codec: TokenCodec) -> None:
    result = codec.verify(codec.issue(ttl=60))
    assert result.check() is result
    assert not VerifyResult(Verdict.EXPIRED).ok


# -- Verdict ---------------------------------------------------------------------


def test_verdict_is_a_str_enum() -> None:
    assert issubclass(Verdict, enum.StrEnum)
    expected = {
        "VALID": "valid",
        "MALFORMED": "malformed",
        "FORGED": "forged",
        "EXPIRED": "expired",
        "REVOKED": "revoked",
        "RETIRED": "retired",
        "UNKNOWN": "unknown",
        "IDLE_EXPIRED": "idle_expired",
        "BINDING_MISMATCH": "binding_mismatch",
        "LOCKED_OUT": "locked_out",
    }
    for name, value in expected.items():
        member = Verdict[name]
        assert member.value == value
        assert member == value
        assert str(member) == value
        assert f"{member}" == value
        assert Verdict(value) is member
    assert len({v.value for v in Verdict}) == len(Verdict)


def test_attack_verdicts() -> None:
    assert frozenset({Verdict.MALFORMED, Verdict.FORGED, Verdict.BINDING_MISMATCH}) == (
        ATTACK_VERDICTS
    )
    for verdict in Verdict:
        assert verdict.is_attack is (verdict in ATTACK_VERDICTS)
    assert not Verdict.EXPIRED.is_attack
    assert not Verdict.RETIRED.is_attack
    assert not Verdict.VALID.is_attack


def test_verify_result_defaults() -> None:
    result = VerifyResult(Verdict.MALFORMED, reason="x")
    assert result.session_id is None
    assert result.session_class is None
    assert result.key_id is None
    assert result.issued_at is None
    assert result.expires_at is None
    assert result.bound is False
