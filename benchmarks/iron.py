"""Compat benchmark: @hapi/iron seals (``donjon.compat.iron``) against Fernet.

The payload is a session dict of about 200 bytes of JSON. Both sides go from
object to token and back: iron seals and unseals the dict; Fernet (pyca's
AES-128-CBC + HMAC-SHA256) encrypts and decrypts its ``json.dumps``. iron
does more per call than Fernet — two PBKDF2 key derivations (one iteration
each, under fresh 256-bit salts), AES-256 instead of AES-128, and JSON written
the way JavaScript writes it — so it is slower by design; the targets bound
by how much, and check that no rejection is slower than an acceptance:

* seal <= 3x Fernet encrypt; unseal <= 3x Fernet decrypt;
* unsealing a forged or expired seal costs no more than a valid one (5 %
  allowed for noise): the MAC and the expiration are checked before any
  decryption;
* a malformed 5000-character value is rejected in <= 0.25x a valid unseal.

Run alone with ``.venv/bin/python benchmarks/iron.py [--quick]``; ``benchmarks/run.py``
runs it as a section of ``REPORT.md`` once ``iron`` is in its ``SECTIONS``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _bench import TIMES, Bench, Report, Section, Timing, measure_all, section_main

from donjon import Verdict
from donjon.compat.iron import InvalidSeal, seal, unseal

TITLE = "Compat: @hapi/iron seals"

NOISE = 1.05
"""Allowance for timer noise where two costs must be equal or ordered."""
FERNET_MAX = 3.0
MALFORMED_MAX = 0.25
ACCESS_MAX = 10.0
"""The access check decrypts and parses a whole session; a plain verify checks one MAC."""
TTL = 3600.0
PASSWORD = "iron-bench-" + os.urandom(24).hex()

SESSION: dict[str, Any] = {
    "user_id": 123456,
    "name": "Zoë Example",
    "roles": ["admin", "editor"],
    "csrf": os.urandom(16).hex(),
    "cart": [{"sku": "A-100", "qty": 2, "price": 19.99}],
    "theme": "dark",
    "login_at": 1800000000.5,
}
"""About 200 bytes of JSON: a typical cookie session."""


def _verdict(sealed: str, now: float) -> Verdict:
    try:
        unseal(sealed, PASSWORD, now=now)
    except InvalidSeal as exc:
        return exc.verdict
    return Verdict.VALID


def _iron_benches(now: float) -> list[Bench]:
    valid = seal(SESSION, PASSWORD, ttl=TTL, now=now)
    forged = valid[:-1] + ("A" if valid[-1] != "A" else "B")
    expired = seal(SESSION, PASSWORD, ttl=TTL, now=now - 2 * TTL)
    malformed = "Fe26.2" + "a" * 4994
    expect = {
        "valid": (valid, Verdict.VALID),
        "forged": (forged, Verdict.FORGED),
        "expired": (expired, Verdict.EXPIRED),
        "malformed": (malformed, Verdict.MALFORMED),
    }
    for name, (sealed, verdict) in expect.items():
        got = _verdict(sealed, now)
        assert got is verdict, f"{name}: expected {verdict}, got {got}"
    assert unseal(valid, PASSWORD, now=now) == SESSION
    assert len(malformed) == 5000

    ns: dict[str, Any] = {
        "seal": seal,
        "unseal": unseal,
        "InvalidSeal": InvalidSeal,
        "obj": SESSION,
        "pw": PASSWORD,
        "TTL": TTL,
        "now": now,
        **{name: sealed for name, (sealed, _) in expect.items()},
    }
    reject = "try:\n    unseal({}, pw, now=now)\nexcept InvalidSeal:\n    pass"
    return [
        Bench("seal", "iron seal (ttl, fresh salts and IV)", "seal(obj, pw, ttl=TTL, now=now)", ns),
        Bench("unseal_valid", "iron unseal: valid", "unseal(valid, pw, now=now)", ns),
        Bench("unseal_forged", "iron unseal: forged (last MAC char)", reject.format("forged"), ns),
        Bench("unseal_expired", "iron unseal: expired", reject.format("expired"), ns),
        Bench(
            "unseal_malformed",
            "iron unseal: malformed (5000 chars)",
            reject.format("malformed"),
            ns,
        ),
    ]


def _fernet_benches() -> list[Bench]:
    from cryptography.fernet import Fernet

    fernet = Fernet(Fernet.generate_key())
    token = fernet.encrypt(json.dumps(SESSION).encode())
    assert json.loads(fernet.decrypt(token, ttl=int(TTL))) == SESSION
    ns = {
        "encrypt": fernet.encrypt,
        "decrypt": fernet.decrypt,
        "dumps": json.dumps,
        "loads": json.loads,
        "obj": SESSION,
        "token": token,
        "TTL": int(TTL),
    }
    return [
        Bench(
            "fernet_encrypt", "Fernet encrypt(json.dumps(obj))", "encrypt(dumps(obj).encode())", ns
        ),
        Bench(
            "fernet_decrypt",
            "Fernet json.loads(decrypt(token, ttl))",
            "loads(decrypt(token, TTL))",
            ns,
        ),
    ]


def _donjon_benches(now: float) -> list[Bench]:
    """Donjon's own sealed cookies (AES-256-GCM) and the two-credential access check."""
    from donjon import KeyRing, TokenCodec
    from donjon.config import TwoCredentials
    from donjon.engine import Engine
    from donjon.stores import MemoryStore
    from donjon.stores.cookie import SealedCodec

    ring = KeyRing.generate(["user"])
    codec = SealedCodec(ring)
    sealed = codec.seal(SESSION, ttl=TTL, now=now)
    assert codec.unseal(sealed, now=now).payload == SESSION
    engine = Engine(keyring=ring, store=MemoryStore(), two_credentials=TwoCredentials(), guard=None)
    s = engine.load(None)
    for key, value in SESSION.items():
        s[key] = value
    s.login("bench")
    access = engine.commit(s, presented=False).token
    assert engine.core.load_access(access, now).verdict is Verdict.VALID
    tokens = TokenCodec(ring)
    token = tokens.issue(ttl=TTL, now=now)
    ns: dict[str, Any] = {
        "codec": codec,
        "sealed": sealed,
        "obj": SESSION,
        "TTL": TTL,
        "now": now,
        "core": engine.core,
        "access": access,
        "tokens": tokens,
        "token": token,
    }
    return [
        Bench(
            "gcm_seal",
            "donjon sealed cookie: seal (AES-256-GCM)",
            "codec.seal(obj, ttl=TTL, now=now)",
            ns,
        ),
        Bench("gcm_unseal", "donjon sealed cookie: unseal", "codec.unseal(sealed, now=now)", ns),
        Bench(
            "access_check",
            "two-credential access check (no store)",
            "core.load_access(access, now)",
            ns,
        ),
        Bench(
            "token_verify",
            "plain token verify (TokenCodec.verify)",
            "tokens.verify(token, now=now)",
            ns,
        ),
    ]


def benches() -> list[Bench]:
    now = time.time()
    return [*_iron_benches(now), *_fernet_benches(), *_donjon_benches(now)]


def _ratio_check(
    section: Section, name: str, t: dict[str, Timing], num: str, den: str, limit: float
) -> None:
    a, b = t[num].best, t[den].best
    section.target(
        name,
        a / b,
        limit,
        f"{a:.3f} µs / {b:.3f} µs = {a / b:.2f}{TIMES} (limit {limit:g}{TIMES})",
    )


def run(report: Report, *, quick: bool = False) -> Section:
    """Measure, check the targets and add the iron section to ``report``."""
    section = report.section(TITLE)
    started = time.perf_counter()
    print(f"[{TITLE}]")
    t = measure_all(benches(), quick=quick)
    pairs = {
        "seal": "fernet_encrypt",
        "unseal_valid": "fernet_decrypt",
        "unseal_forged": "fernet_decrypt",
        "unseal_expired": "fernet_decrypt",
        "unseal_malformed": "fernet_decrypt",
        "fernet_encrypt": "fernet_encrypt",
        "fernet_decrypt": "fernet_decrypt",
        "gcm_seal": "fernet_encrypt",
        "gcm_unseal": "fernet_decrypt",
        "access_check": "fernet_decrypt",
        "token_verify": "fernet_decrypt",
    }
    rows = [
        (
            tm.bench.label,
            f"{tm.best:.3f}",
            f"{tm.median:.3f}",
            f"{tm.best / t[pairs[key]].best:.2f}{TIMES}",
            f"{tm.number:,}",
        )
        for key, tm in t.items()
    ]
    size = len(json.dumps(SESSION, separators=(",", ":"), ensure_ascii=False).encode())
    sealed_len = len(seal(SESSION, PASSWORD, ttl=TTL))
    section.text(
        f"One operation per row, µs per operation (lower is better). The payload is a "
        f"session dict of {size} bytes of JSON; its iron seal is {sealed_len} characters. "
        "Ratios are to Fernet encrypt (for seal) or Fernet decrypt (for unseal), both "
        "including `json.dumps`/`json.loads`. Seals are checked for their expected "
        "verdict before timing."
    )
    section.table(
        ("operation", "µs/op (min)", "µs/op (median)", f"{TIMES} Fernet", "calls/run"), rows
    )
    for key, tm in t.items():
        print(
            f"  {tm.bench.label:<44} {tm.best:8.3f} µs  median {tm.median:8.3f}  "
            f"{tm.best / t[pairs[key]].best:5.2f}{TIMES} Fernet"
        )

    _ratio_check(
        section,
        f"seal ≤ {FERNET_MAX:g}{TIMES} Fernet encrypt",
        t,
        "seal",
        "fernet_encrypt",
        FERNET_MAX,
    )
    _ratio_check(
        section,
        f"unseal ≤ {FERNET_MAX:g}{TIMES} Fernet decrypt",
        t,
        "unseal_valid",
        "fernet_decrypt",
        FERNET_MAX,
    )
    _ratio_check(section, "unseal forged ≤ unseal valid", t, "unseal_forged", "unseal_valid", NOISE)
    _ratio_check(
        section, "unseal expired ≤ unseal valid", t, "unseal_expired", "unseal_valid", NOISE
    )
    _ratio_check(
        section,
        f"unseal malformed ≤ {MALFORMED_MAX:g}{TIMES} unseal valid",
        t,
        "unseal_malformed",
        "unseal_valid",
        MALFORMED_MAX,
    )
    _ratio_check(
        section, "sealed cookie seal ≤ Fernet encrypt", t, "gcm_seal", "fernet_encrypt", NOISE
    )
    _ratio_check(
        section, "sealed cookie unseal ≤ Fernet decrypt", t, "gcm_unseal", "fernet_decrypt", NOISE
    )
    _ratio_check(
        section,
        f"access check ≤ {ACCESS_MAX:g}{TIMES} plain token verify",
        t,
        "access_check",
        "token_verify",
        ACCESS_MAX,
    )
    section.text(
        "The access check decrypts a ~200-byte session (AES-256-GCM) and builds the session "
        "with no store call; the plain verify checks a MAC only and still needs a store read "
        "(see the Stores section: ~60-100 µs on Redis) to get at the data."
    )
    section.targets_table()
    section.seconds = time.perf_counter() - started
    section.text(
        f"Forged and expired limits allow {NOISE - 1:.0%} for timer noise. "
        f"Section run time: {section.seconds:.1f} s."
    )
    return section


def main(argv: list[str] | None = None) -> int:
    return section_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
