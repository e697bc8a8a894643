"""Property tests of the token codec.

* issue -> verify is lossless;
* no byte flip, truncation, extension, field swap or re-encoding of a valid
  token is ever VALID;
* verify never raises on client input, whatever it is.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import string
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from donjon.core import MAX_TTL, KeyRing, TokenCodec, Verdict, VerifyResult
from donjon.testing import FrozenClock

T0_MS = 1_800_000_000_000
CLASSES = ("user", "admin", "api_v2", "x")
ID_ALPHABET = string.ascii_letters + string.digits + "-_"

# Enough to find a broken check, few enough that the file runs in seconds.
PROFILE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _secret(label: str) -> bytes:
    return hashlib.sha256(f"donjon property secret {label}".encode()).digest()


def _ring() -> KeyRing:
    ring = KeyRing()
    for name in CLASSES:
        ring.add_class(name, keys={f"{name[0]}1": _secret(name)})
    return ring


RING = _ring()
CODEC = TokenCodec(RING, clock=FrozenClock(T0_MS / 1000))


# -- strategies --------------------------------------------------------------------

any_char = st.characters() | st.sampled_from(["\ud800", "\udcff", "\x00", "\uffff", "\U0001f600"])
session_ids = st.text(alphabet=ID_ALPHABET, min_size=1, max_size=128)
# Times and lifetimes in whole milliseconds: the token's own precision.
# Just below 2**40 and 2**41 ms (2004, 2039), x / 1000 * 1000 often lands a hair under x.
times_ms = (
    st.integers(min_value=0, max_value=4_102_444_800_000)  # 1970 .. 2100
    | st.integers(min_value=2**41 - 10**8, max_value=2**41 - 1)
    | st.integers(min_value=2**40 - 10**8, max_value=2**40 - 1)
)
ttls_ms = st.integers(min_value=1, max_value=int(MAX_TTL * 1000))
bindings = st.none() | st.text(max_size=40) | st.binary(max_size=40)


@st.composite
def issued(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A valid token and everything it was made from."""
    spec: dict[str, Any] = {
        "session_class": draw(st.sampled_from(CLASSES)),
        "session_id": draw(session_ids),
        "ttl_ms": draw(ttls_ms),
        "now_ms": draw(times_ms),
        "binding": draw(bindings),
    }
    token = CODEC.issue(
        session_class=spec["session_class"],
        ttl=spec["ttl_ms"] / 1000,
        session_id=spec["session_id"],
        binding=spec["binding"],
        now=spec["now_ms"] / 1000,
    )
    return token, spec


def verify_like_issue(token: object, spec: dict[str, Any]) -> VerifyResult:
    """Verify with the binding and time under which the original token is VALID."""
    return CODEC.verify(token, binding=spec["binding"], now=spec["now_ms"] / 1000)


def _is_valid_anyhow(token: object, spec: dict[str, Any]) -> bool:
    """Whether the mutated token is VALID under any plausible verify call."""
    calls = [
        {"binding": spec["binding"], "now": spec["now_ms"] / 1000},
        {"binding": None, "now": spec["now_ms"] / 1000},
        {"binding": spec["binding"], "now": None},
    ]
    return any(CODEC.verify(token, **call).verdict is Verdict.VALID for call in calls)


# -- round trip --------------------------------------------------------------------


@PROFILE
@given(issued())
def test_round_trip_is_lossless(case: tuple[str, dict[str, Any]]) -> None:
    token, spec = case
    result = verify_like_issue(token, spec)
    assert result == VerifyResult(
        Verdict.VALID,
        session_id=spec["session_id"],
        session_class=spec["session_class"],
        key_id=f"{spec['session_class'][0]}1",
        issued_at=spec["now_ms"] / 1000,
        expires_at=(spec["now_ms"] + spec["ttl_ms"]) / 1000,
        bound=spec["binding"] is not None,
        reason="",
    )
    # The last valid millisecond, and the first expired one.
    last = (spec["now_ms"] + spec["ttl_ms"] - 1) / 1000
    assert CODEC.verify(token, binding=spec["binding"], now=last).verdict is Verdict.VALID
    assert (
        CODEC.verify(token, binding=spec["binding"], now=result.expires_at).verdict
        is Verdict.EXPIRED
    )
    # Bytes in, same answer.
    assert verify_like_issue(token.encode("ascii"), spec) == result


@PROFILE
@given(issued(), st.text(max_size=20) | st.binary(max_size=20))
def test_a_bound_token_wants_its_own_binding(
    case: tuple[str, dict[str, Any]], other: str | bytes
) -> None:
    token, spec = case
    assume(spec["binding"] is not None)
    own = spec["binding"]
    as_bytes = own.encode("utf-8", "surrogatepass") if isinstance(own, str) else own
    other_bytes = other.encode("utf-8", "surrogatepass") if isinstance(other, str) else other
    assume(other_bytes != as_bytes)
    result = CODEC.verify(token, binding=other, now=spec["now_ms"] / 1000)
    assert result.verdict is Verdict.BINDING_MISMATCH


# -- mutations are never VALID -------------------------------------------------------


@PROFILE
@given(issued(), st.data())
def test_any_single_character_flip_is_never_valid(
    case: tuple[str, dict[str, Any]], data: st.DataObject
) -> None:
    token, spec = case
    index = data.draw(st.integers(0, len(token) - 1), label="index")
    char = data.draw(any_char | st.sampled_from(ID_ALPHABET + ".=%"), label="char")
    assume(char != token[index])
    mutated = token[:index] + char + token[index + 1 :]
    assert not _is_valid_anyhow(mutated, spec)


@PROFILE
@given(issued(), st.data())
def test_any_single_byte_flip_is_never_valid(
    case: tuple[str, dict[str, Any]], data: st.DataObject
) -> None:
    token, spec = case
    raw = bytearray(token.encode("ascii"))
    index = data.draw(st.integers(0, len(raw) - 1), label="index")
    value = data.draw(st.integers(0, 255).filter(lambda b: b != raw[index]), label="byte")
    raw[index] = value
    assert not _is_valid_anyhow(bytes(raw), spec)


@PROFILE
@given(issued(), st.data())
def test_any_truncation_is_never_valid(
    case: tuple[str, dict[str, Any]], data: st.DataObject
) -> None:
    token, spec = case
    length = data.draw(st.integers(0, len(token) - 1), label="length")
    assert not _is_valid_anyhow(token[:length], spec)
    assert not _is_valid_anyhow(token[len(token) - length :], spec)


@PROFILE
@given(issued(), st.text(min_size=1, max_size=30) | st.sampled_from(["=", "==", ".", " ", "\n"]))
def test_any_extension_is_never_valid(case: tuple[str, dict[str, Any]], suffix: str) -> None:
    token, spec = case
    assert not _is_valid_anyhow(token + suffix, spec)
    assert not _is_valid_anyhow(suffix + token, spec)


@PROFILE
@given(issued(), st.permutations(range(8)))
def test_any_field_swap_is_never_valid(case: tuple[str, dict[str, Any]], order: list[int]) -> None:
    token, spec = case
    fields = token.split(".")
    mutated = ".".join(fields[i] for i in order)
    assume(mutated != token)
    assert not _is_valid_anyhow(mutated, spec)


def _uppercase_hex(token: str) -> str:
    fields = token.split(".")
    fields[7] = fields[7].upper()
    if fields[6] != "_":
        fields[6] = fields[6].upper()
    return ".".join(fields)


def _leading_zeros(token: str, zeros: int, which: int) -> str:
    fields = token.split(".")
    fields[which] = "0" * zeros + fields[which]
    return ".".join(fields)


def _percent_encode(token: str, index: int) -> str:
    return token[:index] + f"%{ord(token[index]):02X}" + token[index + 1 :]


@st.composite
def re_encodings(draw: st.DrawFn, token: str) -> str:
    fields = token.split(".")
    kind = draw(
        st.sampled_from(
            ["upper", "pad", "space", "zeros", "percent", "percent-all", "quote", "plus-sign"]
        )
    )
    if kind == "upper":
        return _uppercase_hex(token)
    if kind == "pad":
        which = draw(st.integers(0, 7))
        fields[which] += draw(st.sampled_from(["=", "==", "==="]))
        return ".".join(fields)
    if kind == "space":
        where = draw(st.integers(0, len(token)))
        blank = draw(st.sampled_from([" ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\xa0", "\u2003"]))
        return token[:where] + blank + token[where:]
    if kind == "zeros":
        return _leading_zeros(token, draw(st.integers(1, 3)), draw(st.sampled_from([4, 5])))
    if kind == "percent":
        return _percent_encode(token, draw(st.integers(0, len(token) - 1)))
    if kind == "percent-all":
        return re.sub(r"\.", "%2E", token)
    if kind == "quote":
        return f'"{token}"'
    which = draw(st.sampled_from([4, 5]))
    fields[which] = "+" + fields[which]
    return ".".join(fields)


@PROFILE
@given(issued(), st.data())
def test_any_re_encoding_is_never_valid(
    case: tuple[str, dict[str, Any]], data: st.DataObject
) -> None:
    token, spec = case
    mutated = data.draw(re_encodings(token), label="re-encoded")
    assume(mutated != token)
    assert not _is_valid_anyhow(mutated, spec)


def test_each_re_encoding_changes_the_text() -> None:
    token = CODEC.issue(ttl=60, session_id="abc", binding="b")
    variants = {
        _uppercase_hex(token),
        _leading_zeros(token, 1, 4),
        _leading_zeros(token, 1, 5),
        _percent_encode(token, 0),
        re.sub(r"\.", "%2E", token),
    }
    assert token not in variants
    assert len(variants) == 5
    for variant in variants:
        assert CODEC.verify(variant, binding="b").verdict is not Verdict.VALID
    assert CODEC.verify(token, binding="b").verdict is Verdict.VALID


# -- verify never raises -------------------------------------------------------------


def _assert_sane(result: object) -> None:
    assert isinstance(result, VerifyResult)
    assert isinstance(result.verdict, Verdict)
    assert result.verdict is not Verdict.VALID
    assert isinstance(result.reason, str)
    assert result.reason


@PROFILE
@given(st.text(max_size=500), bindings)
def test_verify_never_raises_on_text(token: str, binding: Any) -> None:
    _assert_sane(CODEC.verify(token, binding=binding))


@PROFILE
@given(st.binary(max_size=500), bindings)
def test_verify_never_raises_on_bytes(token: bytes, binding: Any) -> None:
    _assert_sane(CODEC.verify(token, binding=binding))


token_like = st.lists(
    st.sampled_from(["v1", *CLASSES, "k1", "u1", "a1", "_", "0" * 64, "f" * 32, "-1", "1e3", ""])
    | st.text(alphabet=ID_ALPHABET + ".", max_size=20)
    | st.integers(-(10**20), 10**20).map(str),
    min_size=1,
    max_size=10,
).map(".".join)


@PROFILE
@given(token_like, bindings)
def test_verify_never_raises_on_token_like_text(token: str, binding: Any) -> None:
    _assert_sane(CODEC.verify(token, binding=binding))


@PROFILE
@given(issued(), st.lists(st.tuples(st.integers(0, 400), any_char), max_size=5))
def test_verify_never_raises_on_mutated_tokens(
    case: tuple[str, dict[str, Any]], edits: list[tuple[int, str]]
) -> None:
    token, spec = case
    mutated = token
    for index, char in edits:
        i = index % (len(mutated) + 1)
        mutated = mutated[:i] + char + mutated[i + 1 :]
    result = verify_like_issue(mutated, spec)
    assert isinstance(result, VerifyResult)
    if mutated != token:
        assert result.verdict is not Verdict.VALID


def test_generators_reach_every_class() -> None:
    # The class strategy is not stuck on one value: all classes issue and verify.
    for name, n in itertools.product(CLASSES, range(2)):
        token = CODEC.issue(session_class=name, ttl=1 + n, now=T0_MS / 1000)
        assert CODEC.verify(token, now=T0_MS / 1000).session_class == name
