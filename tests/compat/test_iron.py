"""donjon.compat.iron against the real @hapi/iron (tests/node/node_modules).

One Node process (tests/compat/node_iron.js) serves the whole module; each
test sends its cases as one batch of JSON lines. Node is required: without it
(or without ``make node-deps``) these tests fail, they do not skip.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from donjon import InvalidToken, Verdict
from donjon.compat import iron
from donjon.compat.iron import (
    MAX_SEAL_LENGTH,
    InvalidSeal,
    YarCookie,
    read_yar_cookie,
    seal,
    unseal,
    write_yar_cookie,
)
from donjon.errors import ConfigurationError, WeakSecret
from tests.vectors import json_parametrize

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "node_iron.js"
NODE_MODULES = HERE.parent / "node" / "node_modules"

PW = "m4Lw2Q9sVx7KpR3tYb8NcZ1eHj5UgD6fA0iOq-test"
K1 = "k1-Jd83hQp0sLm2Vx9RtYb7NcZ4eWq1Ua6fGo-test"
K2 = "k2-Zr5tYb8NcQ1eHj3UgD6fA0iOm4Lw2Q9sVx7K-test"
OTHER = "another-password-that-is-long-enough-0123"
KEY = bytes(range(32))
T0 = 1_800_000_000.0  # seconds
T0_MS = 1_800_000_000_000
SESSION = {"user": {"id": 42, "name": "Zoë", "roles": ["admin", "user"]}, "csrf": "c0ffee"}


# -- the Node side ----------------------------------------------------------------


class NodeIron:
    """One ``node node_iron.js`` process; :meth:`run` sends a batch, returns the replies."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["node", str(SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    def run(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        payload = "".join(json.dumps(r) + "\n" for r in requests)
        stdin = self.proc.stdin

        def write() -> None:
            stdin.write(payload)
            stdin.flush()

        # A writer thread: Node answers while we still send, and a full pipe must not block.
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        replies = []
        for _ in requests:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(timeout=10)
                assert self.proc.stderr is not None
                pytest.fail(f"node_iron.js died: {self.proc.stderr.read()}")
            replies.append(json.loads(line))
        writer.join()
        return replies

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()


@pytest.fixture(scope="module")
def node() -> Iterator[NodeIron]:
    if shutil.which("node") is None:
        pytest.fail(
            "`node` is not on PATH: the iron interoperability tests need Node.js (>= 18); "
            "install it, then run `make node-deps`",
            pytrace=False,
        )
    if not (NODE_MODULES / "@hapi" / "iron" / "package.json").is_file():
        pytest.fail(
            f"@hapi/iron is not installed in {NODE_MODULES}: run `make node-deps`",
            pytrace=False,
        )
    server = NodeIron()
    try:
        yield server
    finally:
        server.close()


def node_password(password: Any) -> Any:
    """The JSON form node_iron.js revives: bytes become {"$buffer": hex}."""
    if isinstance(password, bytes):
        return {"$buffer": password.hex()}
    if isinstance(password, tuple):
        return {"id": password[0], "secret": node_password(password[1])}
    if isinstance(password, dict):
        return {k: node_password(v) for k, v in password.items()}
    return password


def node_unseal(sealed: str, password: Any, *, now: float = T0, **extra: Any) -> dict[str, Any]:
    return {
        "op": "unseal",
        "sealed": sealed,
        "password": node_password(password),
        "now": round(now * 1000),
        **extra,
    }


def node_seal(obj: Any, password: Any, *, now: float = T0, ttl: float = 0, **extra: Any) -> dict:
    return {
        "op": "seal",
        "object": obj,
        "password": node_password(password),
        "now": round(now * 1000),
        "ttl": round(ttl * 1000),
        **extra,
    }


def js_equal(a: Any, b: Any) -> bool:
    """Equality of JavaScript values: numbers are doubles, whatever their JSON text."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(js_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(js_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def as_json(obj: Any) -> Any:
    """What a JSON round trip makes of ``obj`` (tuples become lists, int keys str)."""
    return json.loads(json.dumps(obj))


def verdict_of(sealed: str | bytes, password: Any, **kwargs: Any) -> tuple[str, str]:
    try:
        unseal(sealed, password, **kwargs)
    except InvalidSeal as exc:
        return exc.verdict.value, exc.reason
    return "valid", ""


# -- objects ------------------------------------------------------------------------

EDGE_FLOATS = [
    0.1,
    -0.0,
    0.5,
    100.0,
    1e16,
    1e20,
    1e21,
    1.5e21,
    123456789012345680000.0,
    1e-6,
    1.5e-6,
    1e-7,
    -2.5e-8,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    2.0**53,
    2.0**53 + 2,
    9007199254740993.0,
    4.35,
    0.000001234,
    1234.5678,
    -1e300,
    1 / 3,
]


def random_float(rng: random.Random) -> float:
    while True:
        (x,) = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))
        if math.isfinite(x):
            return float(x)


CHARS = 'abcXYZ09_-. "\\/\t\n\x00\x1f\x7f\u2028\u00e9\u4e2d\U0001f642\ud800'


def random_text(rng: random.Random, size: int = 8) -> str:
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(0, size)))


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randint(0, 8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randint(-(2**53) + 1, 2**53 - 1)
    if kind == 3:
        return random_float(rng) if rng.random() < 0.5 else rng.uniform(-1000, 1000)
    if kind in (4, 5):
        return random_text(rng)
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = [
        random_text(rng, 5) if rng.random() < 0.6 else str(rng.randint(0, 30)) for _ in range(5)
    ]
    return {k: random_value(rng, depth + 1) for k in keys}


def nested(depth: int) -> Any:
    value: Any = {"leaf": True}
    for i in range(depth):
        value = {"level": i, "child": value} if i % 2 else [value]
    return value


OBJECTS: list[Any] = [
    SESSION,
    {},
    [],
    None,
    True,
    False,
    0,
    -1,
    2**53 - 1,
    "",
    "plain",
    "ünïcødé 🙂 中文 \u2028\u2029",
    '\x00\x1f\x7f"\\/\b\f\n\r\t',
    "\ud800 lone \udfff",
    EDGE_FLOATS,
    {"10": 1, "2": 2, "b": 3, "a": 4, "01": 5, "4294967295": 6, "4294967294": 7, "-1": 8},
    {"list": list(range(100)), "t": (1, 2, 3)},
    nested(40),
    {"blob": "x" * 2000},
    *[random_value(random.Random(seed)) for seed in range(40)],
]


# -- the Node process itself --------------------------------------------------------------


def test_node_runs_the_real_iron_7(node: NodeIron) -> None:
    [reply] = node.run([{"op": "version"}])
    assert reply["ok"], reply
    assert reply["result"]["iron"] == "7.0.1"


def test_stringify_matches_json_stringify(node: NodeIron) -> None:
    rng = random.Random(7)
    floats = EDGE_FLOATS + [random_float(rng) for _ in range(1000)]
    floats += [rng.random() * 10.0 ** rng.randint(-9, 23) for _ in range(2000)]
    floats += [float(rng.randint(0, 2**72)) for _ in range(500)]
    floats += [round(rng.uniform(-1e4, 1e4), rng.randint(0, 6)) for _ in range(500)]
    cases = [*OBJECTS, floats, [-x for x in floats]]
    replies = node.run([{"op": "stringify", "object": obj} for obj in cases])
    for obj, reply in zip(cases, replies, strict=True):
        assert reply["ok"], reply
        # Node parsed our JSON, so it holds the same doubles, strings and key order.
        assert iron._stringify(obj).decode("utf-8") == reply["result"], obj


# -- both directions ------------------------------------------------------------------------


def test_python_seals_node_unseals(node: NodeIron) -> None:
    sealed = [seal(obj, PW, now=T0) for obj in OBJECTS]
    replies = node.run([node_unseal(s, PW) for s in sealed])
    for obj, reply in zip(OBJECTS, replies, strict=True):
        assert reply["ok"], reply
        assert js_equal(reply["result"], as_json(obj))


def test_node_seals_python_unseals(node: NodeIron) -> None:
    replies = node.run([node_seal(obj, PW) for obj in OBJECTS])
    for obj, reply in zip(OBJECTS, replies, strict=True):
        assert reply["ok"], reply
        assert js_equal(unseal(reply["result"], PW, now=T0), as_json(obj))


PASSWORD_FORMS: list[Any] = [
    PW,
    ("k1", K1),
    {"id": "k2", "secret": K2},
    {"id": "k1", "encryption": K1, "integrity": OTHER},
    "pässwörd-🔐-ünïcödé-long-enough-for-iron",
    KEY,
    ("raw", KEY),
]


def test_seals_are_byte_identical_to_node_for_fixed_salts(node: NodeIron) -> None:
    rng = random.Random(11)
    cases = []
    for i, obj in enumerate(OBJECTS):
        password = PASSWORD_FORMS[i % len(PASSWORD_FORMS)]
        raw_key = isinstance(password, bytes) or (
            isinstance(password, tuple) and password[1] == KEY
        )
        salts = {"iv": rng.randbytes(16).hex()}
        if not raw_key:
            salts["encryption"] = rng.randbytes(32).hex()
            salts["integrity"] = rng.randbytes(32).hex()
        ttl = [0, 0.001, 60, 86400 * 400][i % 4]
        now = T0 + rng.randint(0, 10**6) / 1000
        offset = [0, 0, 1.5, -30][i % 4]
        cases.append((obj, password, salts, ttl, now, offset))
    requests = []
    for obj, password, salts, ttl, now, offset in cases:
        requests.append(node_seal(obj, password, now=now + offset, ttl=ttl, salts=salts))
    replies = node.run(requests)
    for (obj, password, salts, ttl, now, offset), reply in zip(cases, replies, strict=True):
        assert reply["ok"], reply
        mine = seal(
            obj,
            password,
            ttl=ttl,
            now=now,
            localtime_offset=offset,
            encryption_salt=salts.get("encryption"),
            integrity_salt=salts.get("integrity"),
            iv=bytes.fromhex(salts["iv"]),
        )
        assert mine == reply["result"]


def test_reordered_index_keys_seal_the_same(node: NodeIron) -> None:
    salts = {"encryption": "e" * 64, "integrity": "f" * 64, "iv": "00" * 16}
    kwargs = {"encryption_salt": "e" * 64, "integrity_salt": "f" * 64, "iv": bytes(16), "now": T0}
    js_order = {"2": "two", "10": "ten", "b": 1, "a": 2}
    [reply] = node.run([node_seal(js_order, PW, salts=salts)])
    assert seal(js_order, PW, **kwargs) == reply["result"]
    assert seal({"b": 1, "10": "ten", "a": 2, "2": "two"}, PW, **kwargs) == reply["result"]
    assert seal({"b": 1, 10: "ten", "a": 2, 2: "two"}, PW, **kwargs) == reply["result"]


# -- passwords and rotation ----------------------------------------------------------------


def test_rotation_python_seals_node_unseals(node: NodeIron) -> None:
    with_id = seal(SESSION, ("k2", K2), now=T0)
    without_id = seal(SESSION, K1, now=T0)
    assert with_id.startswith("Fe26.2*k2*")
    assert without_id.startswith("Fe26.2**")
    replies = node.run(
        [
            node_unseal(with_id, {"k1": K1, "k2": K2}),
            node_unseal(with_id, {"k1": K1}),
            node_unseal(with_id, K2),  # a single password ignores the id
            node_unseal(without_id, {"default": K1, "k2": K2}),
            node_unseal(without_id, {"k1": K1}),
        ]
    )
    assert [r["ok"] for r in replies] == [True, False, True, True, False]
    assert replies[0]["result"] == SESSION
    assert replies[1]["error"] == "Cannot find password: k2"
    assert replies[4]["error"] == "Cannot find password: "


def test_rotation_node_seals_python_unseals(node: NodeIron) -> None:
    with_id, without_id = (
        r["result"] for r in node.run([node_seal(SESSION, ("k1", K1)), node_seal(SESSION, K2)])
    )
    assert unseal(with_id, {"k1": K1, "k2": K2}, now=T0) == SESSION
    assert unseal(with_id, ("k1", K1), now=T0) == SESSION
    assert unseal(with_id, K1, now=T0) == SESSION
    assert verdict_of(with_id, {"k2": K2}, now=T0) == ("forged", "unknown_password_id")
    assert unseal(without_id, {"default": K2}, now=T0) == SESSION
    assert verdict_of(without_id, {"k2": K2}, now=T0) == ("forged", "unknown_password_id")


def test_wrong_password_is_rejected_on_both_sides(node: NodeIron) -> None:
    mine = seal(SESSION, PW, now=T0)
    [theirs] = (r["result"] for r in node.run([node_seal(SESSION, PW)]))
    replies = node.run([node_unseal(mine, OTHER), node_unseal(mine, {"default": OTHER})])
    assert [r.get("error") for r in replies] == ["Bad hmac value", "Bad hmac value"]
    assert verdict_of(theirs, OTHER, now=T0) == ("forged", "bad_hmac")
    assert verdict_of(theirs, KEY, now=T0) == ("forged", "bad_hmac")


def test_raw_key_passwords_interoperate(node: NodeIron) -> None:
    mine = seal(SESSION, KEY, now=T0)
    assert mine.split("*")[2] == "" and mine.split("*")[6] == ""
    [theirs] = (r["result"] for r in node.run([node_seal(SESSION, KEY)]))
    [reply] = node.run([node_unseal(mine, KEY)])
    assert reply == {"ok": True, "result": SESSION}
    assert unseal(theirs, KEY, now=T0) == SESSION
    # iron ignores the HMAC salt of a raw-key seal; we accept only the empty one it writes.
    parts = theirs.split("*")
    parts[6] = "00"
    assert verdict_of("*".join(parts), KEY, now=T0) == ("forged", "bad_hmac")
    assert verdict_of(theirs, PW, now=T0) == ("forged", "bad_hmac")


# -- time ----------------------------------------------------------------------------------


def test_expiry_and_skew_agree_with_node(node: NodeIron) -> None:
    ttl = 60.0
    mine = seal(SESSION, PW, ttl=ttl, now=T0)
    [theirs] = (r["result"] for r in node.run([node_seal(SESSION, PW, ttl=ttl)]))
    exp = T0 + ttl
    assert mine.split("*")[5] == theirs.split("*")[5] == str(round(exp * 1000))
    # (unseal time, timestamp skew in seconds, localtime offset in seconds)
    moments = [
        (T0, 60, 0),
        (exp, 60, 0),
        (exp + 59.999, 60, 0),
        (exp + 60, 60, 0),
        (exp + 3600, 60, 0),
        (exp - 0.001, 0, 0),
        (exp, 0, 0),
        (exp - 10, 0, 5),
        (exp - 10, 0, 10),
        (exp + 10, 0, -10.001),
    ]
    requests = []
    for sealed in (mine, theirs):
        for at, skew, offset in moments:
            requests.append(node_unseal(sealed, PW, now=at, skew=skew, offset=round(offset * 1000)))
    replies = iter(node.run(requests))
    for sealed in (mine, theirs):
        for at, skew, offset in moments:
            reply = next(replies)
            expected = ("valid", "") if reply["ok"] else ("expired", "expired")
            if not reply["ok"]:
                assert reply["error"] == "Expired seal"
            got = verdict_of(sealed, PW, now=at, timestamp_skew=skew, localtime_offset=offset)
            assert got == expected, (at - T0, skew, offset)


def test_no_ttl_never_expires(node: NodeIron) -> None:
    sealed = seal(SESSION, PW, now=T0)
    assert sealed.split("*")[5] == ""
    later = T0 + 10 * 365 * 86400
    [reply] = node.run([node_unseal(sealed, PW, now=later)])
    assert reply["ok"]
    assert unseal(sealed, PW, now=later) == SESSION


def test_tiny_ttl_still_expires() -> None:
    sealed = seal(SESSION, PW, ttl=0.0001, now=T0)
    assert sealed.split("*")[5] == str(T0_MS + 1)
    assert verdict_of(sealed, PW, now=T0 + 61) == ("expired", "expired")


# -- tampering ---------------------------------------------------------------------------


def flip(text: str, i: int) -> str:
    """Change character ``i`` to another one of the seal alphabet."""
    c = text[i]
    new = "B" if c == "A" else "A"
    if c.isdigit():
        new = "1" if c == "0" else "0"
    return text[:i] + new + text[i + 1 :]


def one_change_per_field(sealed: str) -> list[str]:
    parts = sealed.split("*")
    out = []
    for f in range(len(parts)):
        changed = list(parts)
        changed[f] = flip(parts[f], len(parts[f]) - 1)
        out.append("*".join(changed))
    return out


def test_tampered_seals_are_rejected_on_both_sides(node: NodeIron) -> None:
    password = {"k1": K1}
    mine = seal(SESSION, ("k1", K1), ttl=3600, now=T0)
    [theirs] = (r["result"] for r in node.run([node_seal(SESSION, ("k1", K1), ttl=3600)]))
    assert all(theirs.split("*")) and all(mine.split("*"))  # every field non-empty
    tampered = one_change_per_field(mine) + one_change_per_field(theirs)
    replies = node.run([node_unseal(t, password) for t in tampered])
    for t, reply in zip(tampered, replies, strict=True):
        assert not reply["ok"], t
        assert reply["error"] in {"Wrong mac prefix", "Cannot find password: k0", "Bad hmac value"}
        verdict, reason = verdict_of(t, password, now=T0)
        assert verdict in {"malformed", "forged"}
        assert reason in {"prefix", "unknown_password_id", "bad_hmac"}


def test_every_single_character_change_is_rejected_on_both_sides(node: NodeIron) -> None:
    sealed = seal(SESSION, ("k1", K1), ttl=3600, now=T0)
    alphabet = "AZaz09_-*."
    variants = sorted(
        {sealed[:i] + c + sealed[i + 1 :] for i in range(len(sealed)) for c in alphabet} - {sealed}
    )
    for v in variants:
        with pytest.raises(InvalidSeal):
            unseal(v, {"k1": K1, "k2": K1}, now=T0)
    replies = node.run([node_unseal(v, {"k1": K1, "k2": K1}) for v in variants])
    assert [r for r in replies if r["ok"]] == []


# -- known-answer vectors made by Node --------------------------------------------------


def revive(password: Any) -> Any:
    if isinstance(password, dict):
        if "$buffer" in password:
            return bytes.fromhex(password["$buffer"])
        return {k: revive(v) for k, v in password.items()}
    return password


@json_parametrize("iron.json")
def test_vector_unseals_as_expected(vector: dict[str, Any]) -> None:
    expect = vector["expect"]
    now = vector["now"] / 1000
    if expect["verdict"] == "valid":
        assert vector["node"]["ok"]
        assert (
            unseal(vector["sealed"], revive(vector["password"]), now=now)
            == (vector["seal"]["object"])
        )
    else:
        assert not vector["node"]["ok"]
        with pytest.raises(InvalidSeal) as info:
            unseal(vector["sealed"], revive(vector["password"]), now=now)
        assert (info.value.verdict.value, info.value.reason) == (
            expect["verdict"],
            expect["reason"],
        )


def test_vector_file_is_what_node_writes(node: NodeIron) -> None:
    # Fixed salts, IVs and clock: the same iron writes the same file.
    out = subprocess.run(
        ["node", str(SCRIPT), "vectors"], capture_output=True, text=True, check=True, timeout=60
    )
    committed = (HERE.parent / "vectors" / "iron.json").read_text(encoding="utf-8")
    assert out.stdout == committed, "regenerate: node tests/compat/node_iron.js vectors > ..."


@json_parametrize("iron.json", where=lambda vector: vector["seal"] is not None)
def test_vector_seal_is_reproduced_exactly(vector: dict[str, Any]) -> None:
    spec = vector["seal"]
    salts = spec["salts"]
    assert iron._stringify(spec["object"]).decode("utf-8") == spec["json"]
    sealed = seal(
        spec["object"],
        revive(spec["password"]),
        ttl=spec["ttl"] / 1000,
        now=spec["now"] / 1000,
        encryption_salt=salts.get("encryption"),
        integrity_salt=salts.get("integrity"),
        iv=bytes.fromhex(salts["iv"]),
    )
    assert sealed == vector["sealed"]


# -- yar -----------------------------------------------------------------------------------


def test_yar_cookie_round_trips_with_node(node: NodeIron) -> None:
    sid = "2f7b6c1e-4d7e-4f0a-9d7c-3c2b1a0f9e8d"
    full = write_yar_cookie(YarCookie(id=sid, store={"visits": 3}), PW, now=T0)
    server_side = write_yar_cookie(YarCookie(id=sid), PW, now=T0)
    assert len(full) <= iron.YAR_MAX_COOKIE_SIZE
    replies = node.run(
        [
            node_unseal(full, PW),
            node_unseal(server_side, PW),
            node_seal({"id": sid, "_store": {"_flash": {"info": ["saved"]}}}, PW),
            node_seal({"id": sid}, PW),
            node_seal({"_store": {}}, PW),
            node_seal([sid], PW),
        ]
    )
    assert replies[0]["result"] == {"id": sid, "_store": {"visits": 3}}
    assert replies[1]["result"] == {"id": sid}
    assert read_yar_cookie(replies[2]["result"], PW, now=T0) == YarCookie(
        id=sid, store={"_flash": {"info": ["saved"]}}
    )
    assert read_yar_cookie(replies[3]["result"], PW, now=T0) == YarCookie(id=sid, store=None)
    for reply in replies[4:]:
        with pytest.raises(InvalidSeal) as info:
            read_yar_cookie(reply["result"], PW, now=T0)
        assert info.value.reason == "yar_content"
    with pytest.raises(ConfigurationError):
        write_yar_cookie(YarCookie(id=""), PW)


# -- what iron's parser (@hapi/bourne) refuses ----------------------------------------------


def test_proto_keys_are_refused_like_bourne(node: NodeIron) -> None:
    obj = {"a": [{"__proto__": {"admin": True}}]}
    [sealed_by_node] = (r["result"] for r in node.run([node_seal(obj, PW)]))
    [reply] = node.run([node_unseal(sealed_by_node, PW)])
    assert not reply["ok"]
    assert "forbidden prototype property" in reply["error"]
    assert verdict_of(sealed_by_node, PW, now=T0) == ("malformed", "proto_key")
    with pytest.raises(ValueError, match="__proto__"):
        seal(obj, PW)
    # Only a key is refused, not the word.
    assert unseal(seal({"x": '"__proto__":'}, PW, now=T0), PW, now=T0) == {"x": '"__proto__":'}


# -- input bounds and shapes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sealed", "reason"),
    [
        ("", "field_count"),
        ("Fe26.2*" + "a" * MAX_SEAL_LENGTH, "too_long"),
        (b"Fe26.2*" + b"a" * MAX_SEAL_LENGTH, "too_long"),
        (None, "not_text"),
        (12345, "not_text"),
        ("*".join(["Fe26.2", "é", "", "", "", "", "", ""]), "not_ascii"),
        (b"Fe26.2*\xff******", "not_ascii"),
        ("Fe26.2" + "*" * 6, "field_count"),
        ("Fe26.2" + "*" * 8, "field_count"),
        ("Fe26.1" + "*" * 7, "prefix"),
        ("fe26.2" + "*" * 7, "prefix"),
        ("*".join(["Fe26.2", "", "", "", "", "-1", "", ""]), "expiration"),
        ("*".join(["Fe26.2", "", "", "", "", "1.5", "", ""]), "expiration"),
        ("*".join(["Fe26.2", "", "", "", "", " 1", "", ""]), "expiration"),
        ("*".join(["Fe26.2", "", "", "", "", "\uff11\uff12", "", ""]), "not_ascii"),
    ],
)
def test_bad_shapes_are_malformed(sealed: Any, reason: str) -> None:
    with pytest.raises(InvalidSeal) as info:
        unseal(sealed, PW, now=T0)
    assert info.value.verdict is Verdict.MALFORMED
    assert info.value.reason == reason


def test_an_authentic_seal_with_bad_content_is_malformed() -> None:
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    enc_salt, mac_salt = "e" * 64, "f" * 64
    key = iron._derive((False, PW.encode()), enc_salt)

    def encrypt(plaintext: bytes, *, pad: bool = True) -> bytes:
        padder = padding.PKCS7(128).padder()
        data = padder.update(plaintext) + padder.finalize() if pad else plaintext
        encryptor = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
        return encryptor.update(data) + encryptor.finalize()

    def forge(ciphertext: bytes, iv: bytes = bytes(16)) -> str:
        # MAC'd with the password: only the content is wrong.
        base = f"Fe26.2**{enc_salt}*{iron._b64(iv)}*{iron._b64(ciphertext)}*"
        mac = iron._mac(iron._derive((False, PW.encode()), mac_salt), base)
        return f"{base}*{mac_salt}*{mac}"

    assert unseal(forge(encrypt(b'{"ok":1}')), PW, now=T0) == {"ok": 1}
    assert verdict_of(forge(encrypt(b"x" * 16)[:15]), PW, now=T0) == ("malformed", "decrypt")
    assert verdict_of(forge(encrypt(b"x" * 15 + b"\x00", pad=False)), PW, now=T0) == (
        "malformed",
        "decrypt",
    )
    assert verdict_of(forge(b""), PW, now=T0) == ("malformed", "decrypt")
    assert verdict_of(forge(encrypt(b"{}"), bytes(15)), PW, now=T0) == ("malformed", "encoding")
    assert verdict_of(forge(encrypt(b"{not json")), PW, now=T0) == ("malformed", "json")
    assert verdict_of(forge(encrypt(b'"\xff"')), PW, now=T0) == ("malformed", "json")
    assert verdict_of(forge(encrypt(b"NaN")), PW, now=T0) == ("malformed", "json")
    assert verdict_of(forge(encrypt(b"[" * 20_000)), PW, now=T0) == ("malformed", "json")
    assert verdict_of(forge(encrypt(b'{"\\u005f_proto__":1}')), PW, now=T0) == (
        "malformed",
        "proto_key",
    )


def test_bytes_input_is_accepted() -> None:
    sealed = seal(SESSION, PW, now=T0)
    assert unseal(sealed.encode("ascii"), PW, now=T0) == SESSION
    assert unseal(bytearray(sealed, "ascii"), PW, now=T0) == SESSION


def test_the_error_is_an_invalid_token_that_shows_no_content() -> None:
    sealed = seal({"secret": "hunter2"}, PW, now=T0, ttl=1)
    with pytest.raises(InvalidToken) as info:
        unseal(sealed, PW, now=T0 + 3600)
    assert isinstance(info.value, InvalidSeal)
    assert info.value.verdict is Verdict.EXPIRED
    assert str(info.value) == "invalid seal: expired"
    assert sealed not in repr(info.value)


# -- programmer errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "x" * 31,
        "é" * 16,  # 32 UTF-8 bytes, 16 JavaScript characters
        "🔐" * 15 + "x",  # 31 UTF-16 code units
        b"k" * 31,
        ("k1", "short"),
        {"id": "k1", "secret": "short"},
        "",
    ],
)
def test_weak_passwords_are_refused(password: Any) -> None:
    with pytest.raises(WeakSecret):
        seal(SESSION, password)


def test_astral_characters_count_twice_as_in_javascript() -> None:
    assert unseal(seal(1, "🔐" * 16, now=T0), "🔐" * 16, now=T0) == 1


@pytest.mark.parametrize(
    "password",
    [
        b"k" * 33,  # a raw key is the AES-256 key itself
        ("k-1", PW),  # iron's ids are /^\w+$/
        ("ké", PW),
        ("k1\n", PW),
        ("k1", PW, "extra"),
        {"k1": PW},  # the unseal form
        {"id": "k1"},
        {"id": "k1", "encryption": PW},
        12345,
        "\ud800" * 40,
    ],
)
def test_badly_shaped_passwords_are_refused(password: Any) -> None:
    with pytest.raises(ConfigurationError):
        seal(SESSION, password)


def test_unseal_password_errors_are_configuration_errors() -> None:
    sealed = seal(SESSION, ("k1", K1), now=T0)
    with pytest.raises(WeakSecret):
        unseal(sealed, {"k1": "short"}, now=T0)
    with pytest.raises(ConfigurationError):
        unseal(sealed, 42, now=T0)
    with pytest.raises(ConfigurationError):
        unseal(sealed, {"k1": {"id": "k1"}}, now=T0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttl": -1},
        {"ttl": math.inf},
        {"ttl": math.nan},
        {"now": math.nan},
        {"encryption_salt": "a*b"},
        {"encryption_salt": ""},
        {"integrity_salt": "x y"},
        {"iv": bytes(15)},
    ],
)
def test_bad_seal_options_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        seal(SESSION, PW, **kwargs)


def test_raw_keys_take_no_salt() -> None:
    with pytest.raises(ConfigurationError):
        seal(SESSION, KEY, encryption_salt="a" * 64)
    with pytest.raises(ConfigurationError):
        seal(SESSION, KEY, integrity_salt="a" * 64)


def circular() -> Any:
    loop: list[Any] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    ("obj", "error"),
    [
        (math.nan, ValueError),
        ({"x": [math.inf]}, ValueError),
        (circular(), ValueError),
        ({1: "a", "1": "b"}, ValueError),
        ({"x": "y" * MAX_SEAL_LENGTH}, ValueError),
        ({"x": {1, 2}}, TypeError),
        ({"x": b"bytes"}, TypeError),
        ({(1, 2): "tuple key"}, TypeError),
        ({True: "bool key"}, TypeError),
    ],
)
def test_what_json_cannot_carry_is_refused(obj: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        seal(obj, PW)


def test_shared_values_are_not_circular() -> None:
    shared = {"a": 1}
    assert unseal(seal([shared, shared], PW, now=T0), PW, now=T0) == [shared, shared]


# -- properties ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(max_size=8).filter(lambda k: k != "__proto__"), children, max_size=5
        )
    ),
    max_leaves=20,
)
passwords = st.sampled_from([PW, ("k1", K1), {"id": "k2", "secret": K2}, KEY])
UNSEAL_ALL = {"default": PW, "k1": K1, "k2": K2}


def unseal_with(password: Any) -> Any:
    return KEY if password is KEY else UNSEAL_ALL


@settings(max_examples=200, deadline=None)
@given(obj=json_values, password=passwords, ttl=st.sampled_from([0, 1, 3600]))
def test_round_trip_is_lossless(obj: Any, password: Any, ttl: int) -> None:
    sealed = seal(obj, password, ttl=ttl, now=T0)
    assert len(sealed) <= MAX_SEAL_LENGTH
    assert sealed.isascii()
    assert js_equal(unseal(sealed, unseal_with(password), now=T0), obj)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), password=passwords, ttl=st.sampled_from([0, 3600]))
def test_any_single_character_change_never_unseals(
    data: st.DataObject, password: Any, ttl: int
) -> None:
    sealed = seal(data.draw(json_values), password, ttl=ttl, now=T0)
    i = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1))
    c = data.draw(st.characters(codec="ascii").filter(lambda c: c != sealed[i]))
    changed = sealed[:i] + c + sealed[i + 1 :]
    with pytest.raises(InvalidSeal):
        unseal(changed, unseal_with(password), now=T0)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from("Fe26.2*k1AZaz09_-é"), max_size=200)
    | st.binary(max_size=200)
)
def test_unseal_raises_nothing_but_invalid_seal(text: str | bytes) -> None:
    with pytest.raises(InvalidSeal):
        unseal(text, UNSEAL_ALL, now=T0)


def test_public_surface() -> None:
    assert iron.__all__ == sorted(iron.__all__)
    assert all(getattr(iron, name, None) is not None for name in iron.__all__)
    assert getattr(InvalidSeal, "__final__", False) is True
    assert getattr(YarCookie, "__final__", False) is True
    assert issubclass(InvalidSeal, InvalidToken)


# -- audit regressions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ({"default": PW, "legacy": "weak"}, WeakSecret),
        ({"default": PW, "legacy": None}, ConfigurationError),
        ({"default": PW, "legacy": {"id": "x"}}, ConfigurationError),
    ],
    ids=["weak", "none", "bad-mapping"],
)
def test_a_bad_table_entry_fails_every_call_whatever_the_seal_names(
    table: dict[str, Any], error: type[Exception]
) -> None:
    # The password id is the client's: before, a seal naming "legacy" turned the bad
    # entry into WeakSecret (a 500), while every other seal unsealed fine.
    good = seal(SESSION, PW, now=T0)
    prefix, _, rest = good.partition("**")
    naming_legacy = f"{prefix}*legacy*{rest}"
    for sealed in (good, naming_legacy, "garbage", "Fe26.2*nosuchid*" + "*" * 5):
        with pytest.raises(error):
            unseal(sealed, table, now=T0)


def test_a_valid_table_gives_only_invalid_seal_for_any_password_id() -> None:
    good = seal(SESSION, PW, now=T0)
    prefix, _, rest = good.partition("**")
    for pid in ("legacy", "__proto__", "k1", "a b", "default"):
        with pytest.raises(InvalidSeal) as info:
            unseal(f"{prefix}*{pid}*{rest}", UNSEAL_ALL, now=T0)
        assert info.value.verdict is Verdict.FORGED


def _authentic(plaintext: bytes, *, iv: str | None = None, ct_suffix: str = "") -> str:
    """A seal MAC'd with PW around any plaintext or base64 text: what only iron could forge."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    enc_salt, mac_salt, raw_iv = "e" * 64, "f" * 64, bytes(range(16))
    padder = padding.PKCS7(128).padder()
    key = iron._derive((False, PW.encode()), enc_salt)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(raw_iv)).encryptor()
    ct = encryptor.update(padder.update(plaintext) + padder.finalize()) + encryptor.finalize()
    iv_text = iron._b64(raw_iv) if iv is None else iv
    ct_text = iron._b64(ct) + ct_suffix
    base = f"Fe26.2**{enc_salt}*{iv_text}*{ct_text}*"
    mac = iron._mac(iron._derive((False, PW.encode()), mac_salt), base)
    return f"{base}*{mac_salt}*{mac}"


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_base64_is_read_as_node_reads_it_and_the_notes_say_so(node: NodeIron) -> None:
    plaintext = json.dumps(SESSION).encode()
    canonical = iron._b64(bytes(range(16)))  # 22 characters: 4 spare low bits at the end
    stray = canonical[:-1] + ALPHABET[ALPHABET.index(canonical[-1]) ^ 1]
    noncanonical = _authentic(plaintext, iv=stray)
    # 40 bytes of plaintext pad to 48 of ciphertext: 64 characters; one more is 4n + 1.
    one_past = _authentic(b'{"pad":"' + b"x" * 31 + b'"}', ct_suffix="A")
    [theirs_stray, theirs_past] = node.run(
        [node_unseal(noncanonical, PW), node_unseal(one_past, PW)]
    )
    assert theirs_stray == {"ok": True, "result": SESSION}
    assert unseal(noncanonical, PW, now=T0) == SESSION  # as Node: not MALFORMED
    assert theirs_past == {"ok": True, "result": {"pad": "x" * 31}}  # Node drops the "A"
    assert verdict_of(one_past, PW, now=T0) == ("malformed", "encoding")
    doc = " ".join((iron.__doc__ or "").split())
    assert "non-canonical base64 are MALFORMED" not in doc
    assert "one character past a multiple of four is MALFORMED" in doc


def test_deep_nesting_and_huge_integers_are_documented_differences(node: NodeIron) -> None:
    deep = _authentic(b'{"deep":' + b"[" * 1500 + b"]" * 1500 + b"}")
    huge = _authentic(b'{"n":1' + b"0" * 5000 + b"}")
    [theirs_huge] = node.run([node_unseal(huge, PW)])
    assert theirs_huge == {"ok": True, "result": {"n": None}}, "iron: Infinity (null in JSON)"
    # Node's reply to the deep one is too deep for json.loads too: read it as text.
    assert node.proc.stdin is not None and node.proc.stdout is not None
    node.proc.stdin.write(json.dumps(node_unseal(deep, PW)) + "\n")
    node.proc.stdin.flush()
    assert node.proc.stdout.readline().startswith('{"ok":true,"result":{"deep":[[[['), "iron: yes"
    # Here both are MALFORMED, never a RecursionError or ValueError...
    assert verdict_of(deep, PW, now=T0) == ("malformed", "json")
    assert verdict_of(huge, PW, now=T0) == ("malformed", "json")
    # ...and the claim "accepted exactly when iron would" says so.
    unseal_doc = " ".join((unseal.__doc__ or "").split())
    assert "deep nesting, over-long integers" in unseal_doc
    module_doc = " ".join((iron.__doc__ or "").split())
    assert "recursion limit" in module_doc and "4300 digits" in module_doc
