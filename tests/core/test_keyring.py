"""The key ring: every rule of building, loading, saving and changing it."""

from __future__ import annotations

import json
import math
import os
import pickle
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from donjon import ConfigurationError, WeakSecret
from donjon.core import MIN_SECRET_BYTES, ClassKeys, KeyRing, Secret, TokenCodec, Verdict
from donjon.testing import FrozenClock

from ._support import (
    LEAKY,
    T0,
    assert_no_leak,
    b64,
    exception_texts,
    fixed_secret,
    leak_forms,
    make_ring,
)

K1 = fixed_secret("user/k1")
K2 = fixed_secret("user/k2")
A1 = fixed_secret("admin/a1")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def ring() -> KeyRing:
    return make_ring()


@pytest.fixture
def codec(ring: KeyRing, clock: FrozenClock) -> TokenCodec:
    return TokenCodec(ring, clock=clock)


# -- add_class -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "user", "admin", "user_2", "a" * 32, "x0_9"])
def test_add_class_accepts_valid_names(name: str) -> None:
    ring = KeyRing().add_class(name, keys={"k1": K1})
    assert ring.classes == (name,)
    assert ring.snapshot(name).name == name


@pytest.mark.parametrize(
    "name",
    ["", "User", "1user", "_user", "us-er", "us.er", "us er", "user ", "a" * 33, "ü", None, 5],
)
def test_add_class_rejects_bad_names(name: Any) -> None:
    ring = KeyRing()
    with pytest.raises(ConfigurationError, match="session class"):
        ring.add_class(name, keys={"k1": K1})
    assert ring.classes == ()


@pytest.mark.parametrize("key_id", ["k1", "K", "a-b_C9", "k" * 16, "-", "_"])
def test_add_class_accepts_valid_key_ids(key_id: str) -> None:
    ring = KeyRing().add_class("user", keys={key_id: K1})
    assert ring.current_key_id("user") == key_id


@pytest.mark.parametrize(
    "key_id", ["", "k.1", "k 1", "k" * 17, "ké", "k/1", "k+1", "k1\n", None, 1]
)
def test_add_class_rejects_bad_key_ids(key_id: Any) -> None:
    with pytest.raises(ConfigurationError, match="key id"):
        KeyRing().add_class("user", keys={key_id: K1})


def test_add_class_needs_a_key() -> None:
    with pytest.raises(ConfigurationError, match="at least one key"):
        KeyRing().add_class("user", keys={})


def test_add_class_current_defaults_to_the_first_key() -> None:
    ring = KeyRing().add_class("user", keys={"k2": K2, "k1": K1})
    assert ring.current_key_id("user") == "k2"
    assert set(ring.snapshot("user").secrets) == {"k1", "k2"}


def test_add_class_explicit_current() -> None:
    ring = KeyRing().add_class("user", keys={"k2": K2, "k1": K1}, current="k1")
    assert ring.current_key_id("user") == "k1"


def test_add_class_current_must_be_one_of_the_keys() -> None:
    with pytest.raises(ConfigurationError, match="current key id 'k9' has no secret"):
        KeyRing().add_class("user", keys={"k1": K1}, current="k9")


def test_add_class_current_must_be_a_valid_key_id() -> None:
    with pytest.raises(ConfigurationError, match="key id"):
        KeyRing().add_class("user", keys={"k1": K1}, current="k.1")


def test_add_class_key_cannot_be_both_active_and_retired() -> None:
    with pytest.raises(ConfigurationError, match="both active and retired"):
        KeyRing().add_class("user", keys={"k2": K2, "k1": K1}, retired=["k1"])


def test_add_class_retired_ids_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="key id"):
        KeyRing().add_class("user", keys={"k2": K2}, retired=["k.1"])


def test_add_class_keeps_retired_ids() -> None:
    ring = KeyRing().add_class("user", keys={"k2": K2}, retired=["k1", "k0"])
    assert ring.snapshot("user").retired == frozenset({"k0", "k1"})


@pytest.mark.parametrize("epoch", [-1.0, -0.001, math.nan, math.inf, -math.inf])
def test_add_class_rejects_bad_epoch(epoch: float) -> None:
    with pytest.raises(ConfigurationError, match="epoch"):
        KeyRing().add_class("user", keys={"k1": K1}, epoch=epoch)


@pytest.mark.parametrize("epoch", [0, 0.0, T0, T0 + 0.5])
def test_add_class_accepts_epoch(epoch: float) -> None:
    ring = KeyRing().add_class("user", keys={"k1": K1}, epoch=epoch)
    assert ring.epoch("user") == epoch


@pytest.mark.parametrize("value", [None, 12345, 3.5, ["x" * 32], object()])
def test_add_class_rejects_secrets_of_the_wrong_type(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="must be bytes, str or Secret"):
        KeyRing().add_class("user", keys={"k1": value})


@pytest.mark.parametrize(
    "value",
    [K1, bytearray(K1), memoryview(K1), Secret(K1), "é" * 16, "x" * 32],
    ids=["bytes", "bytearray", "memoryview", "Secret", "str-multibyte", "str"],
)
def test_add_class_accepts_secret_forms(value: Any) -> None:
    ring = KeyRing().add_class("user", keys={"k1": value})
    raw = ring.snapshot("user").secrets["k1"].reveal()
    assert raw == (
        value.encode()
        if isinstance(value, str)
        else bytes(value.reveal() if isinstance(value, Secret) else value)
    )


def test_add_class_chains_and_replaces() -> None:
    ring = KeyRing()
    assert ring.add_class("user", keys={"k1": K1}) is ring
    ring.add_class("admin", keys={"a1": A1}).add_class("user", keys={"k7": K2})
    assert ring.classes == ("user", "admin")
    assert ring.current_key_id("user") == "k7"
    assert ring.get("nobody") is None
    assert ring.get("admin") is ring.snapshot("admin")


def test_failed_add_class_leaves_the_ring_unchanged(ring: KeyRing) -> None:
    before = ring.to_dict()
    with pytest.raises(ConfigurationError):
        ring.add_class("user", keys={"k1": K1, "k2": b"short"})
    assert ring.to_dict() == before


def test_unknown_class_lookups_raise(ring: KeyRing) -> None:
    for call in (ring.snapshot, ring.epoch, ring.current_key_id):
        with pytest.raises(ConfigurationError, match="unknown session class 'guest'"):
            call("guest")


# -- weak secrets ----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 16, MIN_SECRET_BYTES - 1])
def test_short_secret_is_refused_with_advice(size: int) -> None:
    with pytest.raises(WeakSecret) as info:
        KeyRing().add_class("user", keys={"k1": b"\x01" * size})
    exc = info.value
    assert isinstance(exc, ConfigurationError)
    assert isinstance(exc, ValueError)
    message = str(exc)
    assert f"is {size} bytes" in message
    assert ">= 32" in message
    assert "`donjon keygen`" in message
    assert "user/k1" in message


def test_short_str_secret_counts_utf8_bytes() -> None:
    with pytest.raises(WeakSecret, match="31 bytes"):
        Secret("x" * 31)
    with pytest.raises(WeakSecret, match="30 bytes"):
        Secret("é" * 15)
    assert len(Secret("é" * 16).reveal()) == 32


def test_weak_secret_is_catchable_as_value_error() -> None:
    with pytest.raises(ValueError, match="donjon keygen"):
        Secret(b"too short")


@pytest.mark.parametrize("value", [32, 64, None, 1.0, ["x"]])
def test_secret_rejects_non_bytes(value: Any) -> None:
    # bytes(64) would be 64 zero bytes: a "secret" anyone knows.
    with pytest.raises(ConfigurationError, match="bytes or str"):
        Secret(value)


def test_secret_generate() -> None:
    a, b = Secret.generate(), Secret.generate()
    assert len(a.reveal()) == MIN_SECRET_BYTES
    assert a != b
    assert len(Secret.generate(64).reveal()) == 64
    assert len(Secret.generate(8).reveal()) == MIN_SECRET_BYTES


def test_secret_equality_and_hash() -> None:
    assert Secret(K1) == Secret(K1)
    assert Secret(K1) != Secret(K2)
    assert hash(Secret(K1)) == hash(Secret(K2))
    assert Secret(K1) != K1
    assert Secret("x" * 32) == Secret(b"x" * 32)
    assert Secret(K1).reveal() == K1


# -- secrets never show ------------------------------------------------------------


def test_secret_repr_and_str_are_constant() -> None:
    secret = Secret(LEAKY)
    assert repr(secret) == "Secret('**********')"
    assert str(secret) == "Secret('**********')"
    assert f"{secret}" == "Secret('**********')"
    assert_no_leak([repr(secret), str(secret), f"{secret!r}"], LEAKY)


def test_keyring_and_classkeys_reprs_hide_secrets() -> None:
    ring = KeyRing().add_class("user", keys={"k2": LEAKY, "k1": K1}, retired=["k0"])
    ring.rotate("user", key_id="k3", secret=LEAKY + "-next", grace_until=T0)
    snapshot = ring.snapshot("user")
    texts = [repr(ring), str(ring), repr(snapshot), str(snapshot)]
    assert_no_leak(texts, LEAKY)
    assert_no_leak(texts, K1)
    for derived in [*snapshot.bind_keys.values()]:
        assert_no_leak(texts, derived)
    # ...yet they say what is configured.
    assert "user" in repr(ring)
    assert "current='k3'" in repr(ring)
    assert "k1" in repr(ring)
    assert "'k0'" in repr(ring)
    assert "current='k3'" in repr(snapshot)


def test_codec_repr_hides_secrets() -> None:
    ring = KeyRing().add_class("user", keys={"k1": LEAKY})
    codec = TokenCodec(ring, clock=FrozenClock(T0))
    assert_no_leak([repr(codec), str(codec)], LEAKY)
    assert "TokenCodec(" in repr(codec)


def _raise_and_collect(call: Any) -> list[str]:
    with pytest.raises(ConfigurationError) as info:
        call()
    return exception_texts(info.value)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: KeyRing().add_class("Bad", keys={"k1": LEAKY}), id="bad-class"),
        pytest.param(lambda: KeyRing().add_class("user", keys={"k.1": LEAKY}), id="bad-kid"),
        pytest.param(
            lambda: KeyRing().add_class("user", keys={"k1": LEAKY}, current="k2"), id="current"
        ),
        pytest.param(
            lambda: KeyRing().add_class("user", keys={"k1": LEAKY}, retired=["k1"]),
            id="active-and-retired",
        ),
        pytest.param(lambda: KeyRing().add_class("user", keys={"k1": LEAKY}, epoch=-1), id="epoch"),
        pytest.param(lambda: Secret(LEAKY[:31]), id="weak-str"),
        pytest.param(lambda: Secret(LEAKY[:20].encode()), id="weak-bytes"),
        pytest.param(
            lambda: KeyRing.from_env({"DONJON_KEY_USER": f"k1:{b64(LEAKY)},k1:{b64(LEAKY)}"}),
            id="env-duplicate",
        ),
        pytest.param(lambda: KeyRing.from_env({"DONJON_KEY_USER": b64(LEAKY)}), id="env-no-kid"),
        pytest.param(
            lambda: KeyRing.from_env({"DONJON_KEY_USER": f"k1:{LEAKY}!"}), id="env-not-b64"
        ),
        pytest.param(
            lambda: KeyRing.from_env({"DONJON_KEY_USER": f"k1:{b64(LEAKY[:31])}"}),
            id="env-weak",
        ),
        pytest.param(
            lambda: KeyRing.from_env({"DONJON_KEY_USER": f"k.1:{b64(LEAKY)}"}), id="env-kid"
        ),
        pytest.param(
            lambda: KeyRing.from_dict(
                {"donjon_keyring": 1, "classes": {"user": {"keys": {"k1": LEAKY + "=="}}}}
            ),
            id="file-not-canonical",
        ),
        pytest.param(
            lambda: KeyRing.from_dict(
                {
                    "donjon_keyring": 1,
                    "classes": {"user": {"keys": {"k1": b64(LEAKY)}, "epoch": LEAKY}},
                }
            ),
            id="file-bad-epoch",
        ),
        pytest.param(
            lambda: make_ring().rotate("user", key_id="k1", secret=LEAKY), id="rotate-used-id"
        ),
        pytest.param(lambda: make_ring().rotate("user", secret=LEAKY[:16]), id="rotate-weak"),
    ],
)
def test_secrets_never_appear_in_error_messages(make: Any) -> None:
    texts = _raise_and_collect(make)
    assert texts
    assert_no_leak(texts, LEAKY)
    assert_no_leak(texts, LEAKY[:31])
    assert_no_leak(texts, LEAKY[:20])
    assert_no_leak(texts, LEAKY[:16])


def test_leak_check_itself_detects_a_leak() -> None:
    with pytest.raises(AssertionError, match="leaked"):
        assert_no_leak([f"oops {b64(LEAKY)}"], LEAKY)
    assert b64(LEAKY) in leak_forms(LEAKY)


# -- pickling ---------------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_secret_cannot_be_pickled(protocol: int) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret(LEAKY), protocol=protocol)


def test_keyring_cannot_be_pickled(ring: KeyRing) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(ring)
    with pytest.raises(TypeError):
        pickle.dumps(ring.snapshot("user"))


# -- generate --------------------------------------------------------------------


def test_generate_gives_distinct_32_byte_keys_per_class() -> None:
    ring = KeyRing.generate(["user", "admin", "api"])
    assert ring.classes == ("user", "admin", "api")
    raws = [ring.snapshot(name).secrets["k1"].reveal() for name in ring.classes]
    assert all(len(raw) == 32 for raw in raws)
    assert len(set(raws)) == 3
    other = KeyRing.generate(["user"])
    assert other.snapshot("user").secrets["k1"].reveal() not in raws


def test_generate_defaults_and_key_id() -> None:
    assert KeyRing.generate().classes == ("user",)
    assert KeyRing.generate().current_key_id("user") == "k1"
    assert KeyRing.generate(key_id="main").current_key_id("user") == "main"


def test_generate_needs_classes() -> None:
    with pytest.raises(ConfigurationError, match="at least one class"):
        KeyRing.generate([])
    with pytest.raises(ConfigurationError, match="session class"):
        KeyRing.generate(["Admin"])


def test_generated_ring_issues_and_verifies(clock: FrozenClock) -> None:
    codec = TokenCodec(KeyRing.generate(["user", "admin"]), clock=clock)
    for name in ("user", "admin"):
        result = codec.verify(codec.issue(session_class=name, ttl=60))
        assert result.verdict is Verdict.VALID
        assert result.session_class == name


# -- from_env --------------------------------------------------------------------


def test_from_env_keys_first_is_current(clock: FrozenClock) -> None:
    env = {
        "DONJON_KEY_USER": f"k2:{b64(K2)}, k1:{b64(K1)}",
        "DONJON_KEY_ADMIN": f"a1:{b64(A1)}",
        "UNRELATED": "x",
        "DONJON_OTHER": "y",
    }
    ring = KeyRing.from_env(env)
    assert set(ring.classes) == {"user", "admin"}
    assert ring.current_key_id("user") == "k2"
    assert ring.snapshot("user").secrets["k1"].reveal() == K1
    assert ring.snapshot("user").secrets["k2"].reveal() == K2
    assert ring.epoch("user") == 0.0
    # A token made with the older key still verifies, and new tokens use k2.
    old = TokenCodec(KeyRing().add_class("user", keys={"k1": K1}), clock=clock)
    codec = TokenCodec(ring, clock=clock)
    assert codec.verify(old.issue(ttl=60)).verdict is Verdict.VALID
    assert codec.verify(codec.issue(ttl=60)).key_id == "k2"


def test_from_env_retired_and_epoch(clock: FrozenClock) -> None:
    env = {
        "DONJON_KEY_USER": f"k2:{b64(K2)}",
        "DONJON_RETIRED_USER": "k1, k0",
        "DONJON_EPOCH_USER": "1800000000.5",
    }
    ring = KeyRing.from_env(env)
    assert ring.snapshot("user").retired == frozenset({"k0", "k1"})
    assert ring.epoch("user") == 1_800_000_000.5
    old = TokenCodec(KeyRing().add_class("user", keys={"k1": K1}), clock=clock)
    codec = TokenCodec(ring, clock=clock)
    assert codec.verify(old.issue(ttl=60)).verdict is Verdict.RETIRED
    assert codec.verify(codec.issue(ttl=60, now=T0)).verdict is Verdict.REVOKED
    assert codec.verify(codec.issue(ttl=60, now=T0 + 1)).verdict is Verdict.VALID


def test_from_env_custom_prefix() -> None:
    env = {"APP_KEY_USER": f"k1:{b64(K1)}", "DONJON_KEY_ADMIN": f"a1:{b64(A1)}"}
    assert KeyRing.from_env(env, prefix="APP_").classes == ("user",)


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DONJONTEST_KEY_USER", f"k9:{b64(K1)}")
    ring = KeyRing.from_env(prefix="DONJONTEST_")
    assert ring.current_key_id("user") == "k9"


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"DONJON_KEY_USER": b64(K1)}, "'kid:secret'"),
        ({"DONJON_KEY_USER": f"k1:{b64(K1)},k1:{b64(K2)}"}, "appears twice"),
        ({"DONJON_KEY_USER": "k1:not base64!"}, "base64url"),
        ({"DONJON_KEY_USER": f"k1:{b64(K1).replace('-', '+').replace('_', '/')}x"}, "base64url"),
        ({"DONJON_KEY_USER": f"k1:{b64(K1)[:-1]}"}, "base64url"),
        ({"DONJON_KEY_USER": "k1:" + "é" * 43}, "base64url"),
        ({"DONJON_KEY_USER": f"k1:{b64(K1[:31])}"}, "31 bytes"),
        ({"DONJON_KEY_USER": f"k.1:{b64(K1)}"}, "key id"),
        ({"DONJON_KEY_USER": ""}, "at least one key"),
        ({"DONJON_KEY_USER": " , "}, "at least one key"),
        ({"DONJON_KEY_": f"k1:{b64(K1)}"}, "session class"),
        ({"DONJON_KEY_US-ER": f"k1:{b64(K1)}"}, "session class"),
        ({"DONJON_KEY_USER": f"k1:{b64(K1)}", "DONJON_EPOCH_USER": "yesterday"}, "Unix time"),
        ({"DONJON_KEY_USER": f"k1:{b64(K1)}", "DONJON_EPOCH_USER": "nan"}, "epoch"),
        ({"DONJON_KEY_USER": f"k1:{b64(K1)}", "DONJON_EPOCH_USER": "-5"}, "epoch"),
        ({"DONJON_KEY_USER": f"k1:{b64(K1)}", "DONJON_RETIRED_USER": "k1"}, "both"),
        ({"DONJON_KEY_USER": f"k1:{b64(K1)}", "DONJON_RETIRED_USER": "k 0"}, "key id"),
    ],
)
def test_from_env_bad_entries(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        KeyRing.from_env(env)
    assert_no_leak(exception_texts(info.value), K1)


def test_from_env_short_secret_is_weak() -> None:
    with pytest.raises(WeakSecret, match="donjon keygen"):
        KeyRing.from_env({"DONJON_KEY_USER": f"k1:{b64(b'x' * 16)}"})


@pytest.mark.parametrize(
    "env", [{}, {"DONJON_RETIRED_USER": "k1"}, {"DONJON_EPOCH_USER": "5"}, {"KEY_USER": "x"}]
)
def test_from_env_without_keys_says_what_to_do(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match=r"DONJON_KEY_<CLASS>.*`donjon keygen`"):
        KeyRing.from_env(env)


# -- to_dict / from_dict / save / from_file -------------------------------------------


def _rich_ring() -> KeyRing:
    ring = KeyRing().add_class("user", keys={"k2": K2, "k1": K1}, retired=["k0"], epoch=T0 - 100)
    ring.add_class("admin", keys={"a1": A1})
    ring.rotate("user", key_id="k3", secret=fixed_secret("user/k3"), grace_until=T0 + 60)
    return ring


def test_to_dict_shape() -> None:
    data = _rich_ring().to_dict()
    assert data["donjon_keyring"] == 1
    user = data["classes"]["user"]
    assert user["current"] == "k3"
    assert user["keys"]["k1"] == b64(K1)
    assert user["retired"] == ["k0"]
    assert user["epoch"] == T0 - 100
    assert user["not_after"] == {"k2": T0 + 60}
    assert json.loads(json.dumps(data)) == data


def test_from_dict_round_trip(clock: FrozenClock) -> None:
    ring = _rich_ring()
    copy = KeyRing.from_dict(ring.to_dict())
    assert copy.to_dict() == ring.to_dict()
    a, b = TokenCodec(ring, clock=clock), TokenCodec(copy, clock=clock)
    token = a.issue(ttl=60, binding="ctx")
    assert b.verify(token, binding="ctx").verdict is Verdict.VALID
    assert b.issue(ttl=60, session_id="same", now=T0) == a.issue(ttl=60, session_id="same", now=T0)


def test_save_and_from_file_round_trip(tmp_path: Path, clock: FrozenClock) -> None:
    ring = _rich_ring()
    path = tmp_path / "keys.json"
    ring.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = KeyRing.from_file(path)
    assert loaded.to_dict() == ring.to_dict()
    assert json.loads(path.read_text(encoding="utf-8")) == ring.to_dict()
    token = TokenCodec(ring, clock=clock).issue(session_class="admin", ttl=60)
    assert TokenCodec(loaded, clock=clock).verify(token).verdict is Verdict.VALID
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]


def test_save_accepts_str_path_and_tightens_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("old", encoding="utf-8")
    os.chmod(path, 0o644)
    make_ring().save(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(KeyRing.from_file(str(path)).classes) == {"user", "admin"}


def test_save_is_readable_only_by_owner_even_with_open_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        make_ring().save(tmp_path / "keys.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600


def _doc(**user: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"keys": {"k1": b64(K1)}}
    spec.update(user)
    return {"donjon_keyring": 1, "classes": {"user": spec}}


BAD_DOCUMENTS: list[Any] = [
    pytest.param([], id="list"),
    pytest.param("text", id="str"),
    pytest.param(None, id="null"),
    pytest.param({}, id="empty"),
    pytest.param({"donjon_keyring": 2, "classes": {}}, id="format-2"),
    pytest.param({"donjon_keyring": "1", "classes": {}}, id="format-str"),
    pytest.param({"donjon_keyring": 1}, id="no-classes"),
    pytest.param({"donjon_keyring": 1, "classes": {}}, id="empty-classes"),
    pytest.param({"donjon_keyring": 1, "classes": []}, id="classes-list"),
    pytest.param({"donjon_keyring": 1, "classes": {"user": []}}, id="class-list"),
    pytest.param({"donjon_keyring": 1, "classes": {"user": {}}}, id="no-keys"),
    pytest.param({"donjon_keyring": 1, "classes": {"user": {"keys": []}}}, id="keys-list"),
    pytest.param({"donjon_keyring": 1, "classes": {"user": {"keys": {}}}}, id="keys-empty"),
    pytest.param(_doc(keys={"k1": 5}), id="secret-int"),
    pytest.param(_doc(keys={"k1": None}), id="secret-null"),
    pytest.param(_doc(keys={"k1": "!!!"}), id="secret-not-b64"),
    pytest.param(_doc(keys={"k1": b64(K1[:31])}), id="secret-weak"),
    pytest.param(_doc(keys={"k.1": b64(K1)}), id="bad-kid"),
    pytest.param({"donjon_keyring": 1, "classes": {"User": {"keys": {"k1": b64(K1)}}}}, id="name"),
    pytest.param(_doc(current="k9"), id="current-unknown"),
    pytest.param(_doc(current=7), id="current-int"),
    pytest.param(_doc(epoch="soon"), id="epoch-str"),
    pytest.param(_doc(epoch=None), id="epoch-null"),
    pytest.param(_doc(epoch=[1]), id="epoch-list"),
    pytest.param(_doc(epoch=-1), id="epoch-negative"),
    pytest.param(_doc(epoch=True), id="epoch-bool"),
    pytest.param(_doc(retired=5), id="retired-int"),
    pytest.param(_doc(retired="k0"), id="retired-str"),
    pytest.param(_doc(retired=[5]), id="retired-item-int"),
    pytest.param(_doc(retired=["k1"]), id="retired-active"),
    pytest.param(_doc(not_after=[1, 2]), id="not-after-list"),
    pytest.param(_doc(not_after={"k1": "soon"}), id="not-after-str"),
    pytest.param(_doc(not_after={"k1": None}), id="not-after-null"),
    pytest.param(_doc(not_after=5), id="not-after-int"),
]


@pytest.mark.parametrize("document", BAD_DOCUMENTS)
def test_from_dict_rejects_bad_documents(document: Any) -> None:
    with pytest.raises(ConfigurationError):
        KeyRing.from_dict(document)


@pytest.mark.parametrize("document", BAD_DOCUMENTS)
def test_from_file_rejects_bad_documents(tmp_path: Path, document: Any) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ConfigurationError):
        KeyRing.from_file(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "unreadable"),
        (b"{not json", "unreadable"),
        (b'{"donjon_keyring": 1, ', "unreadable"),
        (b"\xff\xfe\x00garbage", "unreadable"),
        (b"NaN", "not a donjon key-ring"),
    ],
)
def test_from_file_rejects_unreadable_files(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError, match=match):
        KeyRing.from_file(path)


def test_from_file_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        KeyRing.from_file(tmp_path / "nope.json")
    with pytest.raises(ConfigurationError, match="unreadable"):
        KeyRing.from_file(tmp_path)


def test_from_file_errors_do_not_leak_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(
        '{"donjon_keyring": 1, "classes": {"user": {"keys": {"k1": "'
        + b64(LEAKY)
        + '"}, "epoch": "x"',
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError) as info:
        KeyRing.from_file(path)
    assert_no_leak(exception_texts(info.value), LEAKY)


# -- rotate ----------------------------------------------------------------------


def test_rotate_makes_a_new_current_key(
    ring: KeyRing, codec: TokenCodec, clock: FrozenClock
) -> None:
    old = codec.issue(ttl=3600)
    assert ring.rotate("user") == "k2"
    assert ring.current_key_id("user") == "k2"
    new = codec.issue(ttl=3600)
    assert codec.verify(new).key_id == "k2"
    old_result = codec.verify(old)
    assert old_result.verdict is Verdict.VALID
    assert old_result.key_id == "k1"
    # The new secret is fresh and 32 bytes.
    secrets = ring.snapshot("user").secrets
    assert len(secrets["k2"].reveal()) == 32
    assert secrets["k2"] != secrets["k1"]
    # Other classes are untouched.
    assert ring.current_key_id("admin") == "a1"
    clock.advance(1800)
    assert codec.verify(old).verdict is Verdict.VALID


def test_rotate_with_given_id_and_secret(ring: KeyRing, clock: FrozenClock) -> None:
    assert ring.rotate("user", key_id="2025-06", secret=K2) == "2025-06"
    assert ring.snapshot("user").secrets["2025-06"].reveal() == K2
    other = KeyRing().add_class("user", keys={"2025-06": K2})
    token = TokenCodec(other, clock=clock).issue(ttl=60)
    assert TokenCodec(ring, clock=clock).verify(token).verdict is Verdict.VALID


def test_rotate_ids_count_up(ring: KeyRing) -> None:
    assert [ring.rotate("user") for _ in range(3)] == ["k2", "k3", "k4"]
    ring.retire("user", "k1")
    ring.retire("user", "k2")
    assert ring.rotate("user") == "k5"
    assert set(ring.snapshot("user").secrets) == {"k3", "k4", "k5"}


def test_rotate_skips_used_ids() -> None:
    ring = KeyRing().add_class("user", keys={"main": K1, "k2": K2}, retired=["k3", "k4"])
    assert ring.rotate("user") == "k5"
    assert KeyRing().add_class("user", keys={"main": K1}).rotate("user") == "k2"


@pytest.mark.parametrize("key_id", ["k1", "k0"])
def test_rotate_refuses_used_ids(key_id: str) -> None:
    ring = KeyRing().add_class("user", keys={"k1": K1}, retired=["k0"])
    with pytest.raises(ConfigurationError, match="already used"):
        ring.rotate("user", key_id=key_id)
    assert ring.current_key_id("user") == "k1"


def test_rotate_errors(ring: KeyRing) -> None:
    with pytest.raises(ConfigurationError, match="unknown session class"):
        ring.rotate("guest")
    with pytest.raises(ConfigurationError, match="key id"):
        ring.rotate("user", key_id="bad id")
    with pytest.raises(WeakSecret):
        ring.rotate("user", secret=b"short")
    assert ring.current_key_id("user") == "k1"


def test_rotate_grace_until_retires_the_old_key_at_the_deadline(
    ring: KeyRing, codec: TokenCodec, clock: FrozenClock
) -> None:
    old = codec.issue(ttl=7200)
    ring.rotate("user", grace_until=T0 + 600)
    new = codec.issue(ttl=7200)
    assert codec.verify(old).verdict is Verdict.VALID
    clock.set(T0 + 600)
    assert codec.verify(old).verdict is Verdict.VALID
    clock.set(T0 + 600.001)
    result = codec.verify(old)
    assert result.verdict is Verdict.RETIRED
    assert result.reason == "grace_over"
    assert result.key_id == "k1"
    assert codec.verify(new).verdict is Verdict.VALID


def test_rerotation_keeps_earlier_deadlines(
    ring: KeyRing, codec: TokenCodec, clock: FrozenClock
) -> None:
    t1 = codec.issue(ttl=7200)
    ring.rotate("user", grace_until=T0 + 100)
    t2 = codec.issue(ttl=7200)
    ring.rotate("user", grace_until=T0 + 200)
    t3 = codec.issue(ttl=7200)
    assert ring.snapshot("user").not_after == {"k1": T0 + 100, "k2": T0 + 200}
    clock.set(T0 + 150)
    assert [codec.verify(t).verdict for t in (t1, t2, t3)] == [
        Verdict.RETIRED,
        Verdict.VALID,
        Verdict.VALID,
    ]
    clock.set(T0 + 250)
    assert [codec.verify(t).verdict for t in (t1, t2, t3)] == [
        Verdict.RETIRED,
        Verdict.RETIRED,
        Verdict.VALID,
    ]


def test_rotations_from_many_threads_are_all_kept(ring: KeyRing) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(20):
            kid = ring.rotate("user")
            with lock:
                ids.append(kid)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 160
    assert set(ring.snapshot("user").secrets) == {*ids, "k1"}


# -- retire ----------------------------------------------------------------------


def test_retire_turns_tokens_retired(ring: KeyRing, codec: TokenCodec) -> None:
    old = codec.issue(ttl=3600)
    ring.rotate("user")
    ring.retire("user", "k1")
    result = codec.verify(old)
    assert result.verdict is Verdict.RETIRED
    assert result.reason == "retired_key"
    assert result.key_id == "k1"
    assert result.session_class == "user"
    snapshot = ring.snapshot("user")
    assert "k1" not in snapshot.secrets
    assert snapshot.retired == frozenset({"k1"})
    assert "k1" not in ring.to_dict()["classes"]["user"]["keys"]
    assert codec.verify(codec.issue(ttl=60)).verdict is Verdict.VALID


def test_retire_drops_the_deadline(ring: KeyRing) -> None:
    ring.rotate("user", grace_until=T0 + 60)
    ring.retire("user", "k1")
    assert ring.snapshot("user").not_after == {}


def test_cannot_retire_the_current_key(ring: KeyRing) -> None:
    with pytest.raises(ConfigurationError, match="cannot retire the current key"):
        ring.retire("user", "k1")
    assert ring.current_key_id("user") == "k1"
    assert ring.snapshot("user").retired == frozenset()


def test_retire_errors(ring: KeyRing) -> None:
    ring.rotate("user")
    ring.retire("user", "k1")
    with pytest.raises(ConfigurationError, match="no active key 'k1'"):
        ring.retire("user", "k1")
    with pytest.raises(ConfigurationError, match="no active key 'k9'"):
        ring.retire("user", "k9")
    with pytest.raises(ConfigurationError, match="unknown session class"):
        ring.retire("guest", "k1")


# -- set_epoch -------------------------------------------------------------------


def test_set_epoch_revokes_earlier_tokens(ring: KeyRing, codec: TokenCodec) -> None:
    before = codec.issue(ttl=3600, now=T0 - 1)
    admin = codec.issue(session_class="admin", ttl=3600, now=T0 - 1)
    assert ring.set_epoch("user", T0) is True
    assert ring.epoch("user") == T0
    result = codec.verify(before)
    assert result.verdict is Verdict.REVOKED
    assert result.reason == "class_epoch"
    assert codec.verify(admin).verdict is Verdict.VALID
    assert codec.verify(codec.issue(ttl=3600)).verdict is Verdict.VALID


@pytest.mark.parametrize(
    ("epoch", "moved"),
    [
        (T0 + 1, True),
        (T0, False),
        (T0 - 1, False),
        (0.0, False),
        (-1.0, False),
        (math.nan, False),
        (math.inf, False),
    ],
)
def test_set_epoch_only_moves_forward(ring: KeyRing, epoch: float, moved: bool) -> None:
    assert ring.set_epoch("user", T0) is True
    assert ring.set_epoch("user", epoch) is moved
    assert ring.epoch("user") == (epoch if moved else T0)


def test_set_epoch_keeps_keys(ring: KeyRing) -> None:
    ring.rotate("user", grace_until=T0 + 60)
    before = ring.snapshot("user")
    ring.set_epoch("user", T0)
    after = ring.snapshot("user")
    assert after is not before
    assert (after.current, dict(after.secrets), dict(after.not_after), after.retired) == (
        before.current,
        dict(before.secrets),
        dict(before.not_after),
        before.retired,
    )
    assert before.epoch == 0.0


def test_set_epoch_unknown_class(ring: KeyRing) -> None:
    with pytest.raises(ConfigurationError, match="unknown session class"):
        ring.set_epoch("guest", T0)


def test_snapshots_are_immutable(ring: KeyRing) -> None:
    snapshot = ring.snapshot("user")
    assert isinstance(snapshot, ClassKeys)
    with pytest.raises(AttributeError):
        snapshot.current = "k2"  # type: ignore[misc]


def test_staged_rotation_then_promote() -> None:
    from donjon import TokenCodec, Verdict

    ring = KeyRing.generate(["user"])
    other = KeyRing.from_dict(ring.to_dict())
    kid = ring.rotate("user", activate=False)
    assert ring.current_key_id("user") == "k1", "a staged key does not sign yet"
    other_after_deploy = KeyRing.from_dict(ring.to_dict())
    ring.promote("user", kid)
    token = TokenCodec(ring).issue(ttl=60)
    assert TokenCodec(other_after_deploy).verify(token).verdict is Verdict.VALID
    assert TokenCodec(other).verify(token).verdict is Verdict.FORGED, "why staging matters"
    old = TokenCodec(other).issue(ttl=60)
    assert TokenCodec(ring).verify(old).verdict is Verdict.VALID


# -- audit regressions: epochs, deadlines, duplicates, key files -----------------------

YEAR_10000 = 253_402_300_800.0


@pytest.mark.parametrize(
    "epoch", [1e306, YEAR_10000, 10**400, 1e20], ids=["1e306", "year-10000", "10**400", "1e20"]
)
def test_add_class_rejects_epochs_past_year_9999(epoch: float) -> None:
    # 1e306 * 1000 overflowed math.ceil() in ClassKeys.build: OverflowError, not a config error.
    with pytest.raises(ConfigurationError, match="epoch"):
        KeyRing().add_class("user", keys={"k1": K1}, epoch=epoch)
    with pytest.raises(ConfigurationError, match="epoch"):
        KeyRing.from_dict(_doc(epoch=epoch))
    with pytest.raises(ConfigurationError, match="epoch"):
        KeyRing.check_epoch(epoch)


def test_epoch_just_before_year_10000_is_accepted() -> None:
    ring = KeyRing().add_class("user", keys={"k1": K1}, epoch=YEAR_10000 - 1)
    assert ring.epoch("user") == YEAR_10000 - 1
    assert KeyRing.check_epoch(T0) == T0


@pytest.mark.parametrize(
    "epoch",
    [1e306, 10**400, math.nan, math.inf, -5.0, "9", None, True],
    ids=["1e306", "10**400", "nan", "inf", "negative", "str", "None", "bool"],
)
def test_set_epoch_ignores_an_unusable_store_value_with_a_warning(
    ring: KeyRing, codec: TokenCodec, caplog: pytest.LogCaptureFixture, epoch: Any
) -> None:
    # The engine adopts epochs read from the shared store through set_epoch: one bad
    # value there must not make every request of every process raise OverflowError.
    token = codec.issue(ttl=3600)
    with caplog.at_level("WARNING", logger="donjon"):
        assert ring.set_epoch("user", epoch) is False
    assert ring.epoch("user") == 0.0
    assert codec.verify(token).verdict is Verdict.VALID
    assert any("epoch" in r.getMessage() and r.name == "donjon" for r in caplog.records)


def test_a_huge_killed_epoch_in_a_shared_store_does_not_break_requests() -> None:
    from donjon.engine import Engine
    from donjon.stores import MemoryStore

    ring = KeyRing.generate()
    store = MemoryStore()
    engine = Engine(keyring=ring, store=store, guard=None)
    session = engine.load(None)
    session["a"] = 1
    token = engine.commit(session, presented=False).token
    store.raise_epoch("user", 1e306)  # what kill(at=1e306) leaves behind
    other = Engine(keyring=KeyRing.from_dict(ring.to_dict()), store=store, guard=None)
    for _ in range(2):
        assert other.load(token).verdict is Verdict.VALID


@pytest.mark.parametrize(
    "deadline", [math.nan, math.inf, -math.inf, 10**400], ids=["nan", "inf", "-inf", "10**400"]
)
def test_not_after_must_be_finite(deadline: float) -> None:
    # With NaN, "now > deadline" is never true: a grace period that never ends.
    with pytest.raises(ConfigurationError, match="not_after"):
        KeyRing().add_class(
            "user", keys={"k1": K1, "k2": K2}, current="k2", not_after={"k1": deadline}
        )
    with pytest.raises(ConfigurationError, match="not_after"):
        KeyRing.from_dict(
            _doc(keys={"k1": b64(K1), "k2": b64(K2)}, current="k2", not_after={"k1": deadline})
        )
    ring = KeyRing().add_class("user", keys={"k1": K1, "k2": K2}, current="k2")
    with pytest.raises(ConfigurationError, match="grace_until"):
        ring.promote("user", "k1", grace_until=deadline)  # already refused: now consistent


def _private_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(text, encoding="utf-8")
    os.chmod(path, 0o600)
    return path


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_key_file_not_after_must_be_finite(tmp_path: Path, constant: str) -> None:
    text = (
        '{"donjon_keyring": 1, "classes": {"user": {"current": "k2", "keys": '
        f'{{"k1": "{b64(K1)}", "k2": "{b64(K2)}"}}, "not_after": {{"k1": {constant}}}}}}}}}'
    )
    with pytest.raises(ConfigurationError, match="not_after"):
        KeyRing.from_file(_private_file(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ('{"donjon_keyring": 1, "classes": {"user": {"keys": {"k1": "%s", "k1": "%s"}}}}', "k1"),
        (
            '{"donjon_keyring": 1, "classes": {"user": {"keys": {"k1": "%s"}},'
            ' "user": {"keys": {"k2": "%s"}}}}',
            "user",
        ),
    ],
    ids=["key-id", "class"],
)
def test_key_file_duplicate_names_are_refused(tmp_path: Path, text: str, name: str) -> None:
    # json.loads keeps the last duplicate: a key id or a whole class silently vanished.
    path = _private_file(tmp_path, text % (b64(K1), b64(K2)))
    with pytest.raises(ConfigurationError, match=f"'{name}' appears twice") as info:
        KeyRing.from_file(path)
    assert_no_leak(exception_texts(info.value), K1)
    assert_no_leak(exception_texts(info.value), K2)


def test_from_env_refuses_one_class_in_two_spellings() -> None:
    env = {"DONJON_KEY_USER": f"k1:{b64(K1)}", "DONJON_KEY_user": f"k2:{b64(K2)}"}
    with pytest.raises(ConfigurationError, match="'user'") as info:
        KeyRing.from_env(env)
    assert_no_leak(exception_texts(info.value), K1)


def _epoch_file(digits: int) -> str:
    return json.dumps(_doc()).replace('"keys"', f'"epoch": 1{"0" * digits}, "keys"')


@pytest.mark.parametrize(
    "content",
    [
        _epoch_file(400),
        _epoch_file(5000),
        '{"donjon_keyring": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ],
    ids=["epoch-400-digits", "epoch-5000-digits", "deep-nesting"],
)
def test_from_file_turns_every_failure_into_a_configuration_error(
    tmp_path: Path, content: str
) -> None:
    # OverflowError (float of a 400-digit int) and RecursionError escaped before.
    with pytest.raises(ConfigurationError):
        KeyRing.from_file(_private_file(tmp_path, content))


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize(
    ("mode", "warns"), [(0o600, False), (0o400, False), (0o640, True), (0o604, True), (0o660, True)]
)
def test_from_file_warns_when_others_can_read_the_key_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, warns: bool
) -> None:
    path = tmp_path / "keys.json"
    make_ring().save(path)
    os.chmod(path, mode)
    with caplog.at_level("WARNING", logger="donjon"):
        ring = KeyRing.from_file(path)
    assert set(ring.classes) == {"user", "admin"}, "a warning, never a refusal"
    warnings = [r for r in caplog.records if r.name == "donjon" and "chmod 600" in r.getMessage()]
    assert bool(warnings) is warns
    for record in warnings:
        assert_no_leak([record.getMessage()], fixed_secret("user/k1"))


def test_a_failed_save_leaves_no_secrets_behind(tmp_path: Path) -> None:
    ring = KeyRing.generate()
    target = tmp_path / "keys.json"
    target.mkdir()  # os.replace cannot put a file over a folder
    with pytest.raises(IsADirectoryError):
        ring.save(target)
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"], "no temporary file is left"
