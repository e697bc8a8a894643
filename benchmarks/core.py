"""Core benchmark: the token codec against the HMAC floor, itsdangerous and Django.

The floor is one ``hmac.digest(key, 40-byte message, "sha256")``: a codec cannot
authenticate a token with less work than one HMAC-SHA256. Every Donjon number is
given as a ratio to it, and the targets are:

* verify of a valid token <= 2.0x the floor; issue <= 2.5x the floor;
* rejecting a forged or expired token costs no more than accepting a valid
  one (5 % allowed for noise): no slow path an attacker can pick;
* Donjon verify is faster than itsdangerous and Django ``unsign``, and Donjon
  issue faster than their ``sign``.

Run alone with ``.venv/bin/python benchmarks/core.py [--quick]``; ``benchmarks/run.py``
runs it as a section of ``REPORT.md``.
"""

from __future__ import annotations

import hmac
import os
import sys
import time
from typing import Any

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _bench import TIMES, Bench, Report, Section, Timing, measure_all, section_main

import donjon
from donjon import Verdict
from donjon.core import new_session_id
from donjon.testing import FrozenClock

TITLE = "Core: token codec"

NOISE = 1.05
"""Allowance for timer noise where two costs must be equal or ordered."""
VERIFY_FLOOR_MAX = 2.0
ISSUE_FLOOR_MAX = 2.5
MALFORMED_FLOOR_MAX = 0.25
"""Malformed input is rejected before any HMAC: a fraction of the floor."""
TTL = 3600.0


def _donjon_benches() -> list[Bench]:
    clock = FrozenClock()
    now = clock.time()
    ring = donjon.KeyRing.generate(["user", "admin"])
    codec = donjon.TokenCodec(ring, clock=clock)

    sid = new_session_id()
    valid = codec.issue(session_class="user", ttl=TTL)
    forged = valid[:-1] + ("0" if valid[-1] != "0" else "1")
    expired = codec.issue(session_class="user", ttl=TTL, now=now - 2 * TTL)
    revoked = codec.issue(session_class="admin", ttl=TTL, now=now - 60)
    ring.set_epoch("admin", now - 30)
    malformed = "v1." + "a" * 4997

    expect = {
        "valid": (valid, Verdict.VALID),
        "forged": (forged, Verdict.FORGED),
        "expired": (expired, Verdict.EXPIRED),
        "revoked": (revoked, Verdict.REVOKED),
        "malformed": (malformed, Verdict.MALFORMED),
    }
    for name, (token, verdict) in expect.items():
        got = codec.verify(token)
        assert got.verdict is verdict, f"{name}: expected {verdict}, got {got}"
    assert codec.verify(forged).reason == "bad_mac"
    assert len(malformed) == 5000

    ns: dict[str, Any] = {
        "issue": codec.issue,
        "verify": codec.verify,
        "sid": sid,
        "TTL": TTL,
        **{name: token for name, (token, _) in expect.items()},
    }
    return [
        Bench("issue", "Donjon issue (new random id)", 'issue(session_class="user", ttl=TTL)', ns),
        Bench(
            "issue_sid",
            "Donjon issue (given session id)",
            'issue(session_class="user", ttl=TTL, session_id=sid)',
            ns,
        ),
        Bench("verify_valid", "Donjon verify: valid", "verify(valid)", ns),
        Bench("verify_forged", "Donjon verify: forged (last MAC digit)", "verify(forged)", ns),
        Bench("verify_expired", "Donjon verify: expired", "verify(expired)", ns),
        Bench("verify_revoked", "Donjon verify: revoked (class epoch)", "verify(revoked)", ns),
        Bench(
            "verify_malformed",
            "Donjon verify: malformed (5000 chars)",
            "verify(malformed)",
            ns,
        ),
    ]


def _itsdangerous_benches(secret: bytes, value: str) -> list[Bench]:
    from itsdangerous import TimestampSigner

    signer = TimestampSigner(secret)
    signed = signer.sign(value)
    assert signer.unsign(signed, max_age=3600) == value.encode()
    ns = {"sign": signer.sign, "unsign": signer.unsign, "value": value, "signed": signed}
    return [
        Bench("itsd_sign", "itsdangerous TimestampSigner.sign", "sign(value)", ns),
        Bench(
            "itsd_unsign",
            "itsdangerous TimestampSigner.unsign(max_age)",
            "unsign(signed, max_age=3600)",
            ns,
        ),
    ]


def _django_benches(secret: str, value: str) -> list[Bench]:
    from django.conf import settings

    if not settings.configured:
        settings.configure(SECRET_KEY=secret)
    from django.core.signing import TimestampSigner

    signer = TimestampSigner(key=secret)
    signed = signer.sign(value)
    assert signer.unsign(signed, max_age=3600) == value
    ns = {"sign": signer.sign, "unsign": signer.unsign, "value": value, "signed": signed}
    return [
        Bench("django_sign", "Django signing.TimestampSigner.sign", "sign(value)", ns),
        Bench(
            "django_unsign",
            "Django signing.TimestampSigner.unsign(max_age)",
            "unsign(signed, max_age=3600)",
            ns,
        ),
    ]


def _floor_bench() -> Bench:
    ns = {"digest": hmac.digest, "key": os.urandom(32), "msg": os.urandom(40)}
    return Bench(
        "floor", 'floor: hmac.digest(key, 40 B, "sha256")', 'digest(key, msg, "sha256")', ns
    )


def benches() -> list[Bench]:
    secret = os.urandom(32).hex()
    value = new_session_id()
    return [
        _floor_bench(),
        *_donjon_benches(),
        *_itsdangerous_benches(secret.encode(), value),
        *_django_benches(secret, value),
    ]


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
    """Measure, check the targets and add the core section to ``report``."""
    section = report.section(TITLE)
    started = time.perf_counter()
    print(f"[{TITLE}]")
    items = benches()
    t = measure_all(items, quick=quick)
    floor = t["floor"].best

    rows = [
        (
            tm.bench.label,
            f"{tm.best:.3f}",
            f"{tm.median:.3f}",
            f"{tm.best / floor:.2f}{TIMES}",
            f"{tm.number:,}",
        )
        for tm in t.values()
    ]
    section.text(
        "One operation per row, µs per operation (lower is better). A session id is "
        "43 characters (32 random bytes, base64url); the competitors sign an id of "
        "the same shape with a timestamp, under their default algorithms (itsdangerous: HMAC-SHA1 "
        "with a key derived per call; Django: HMAC-SHA256). Tokens are checked for "
        "their expected verdict before timing."
    )
    section.table(
        ("operation", "µs/op (min)", "µs/op (median)", f"{TIMES} floor", "calls/run"), rows
    )
    for tm in t.values():
        print(
            f"  {tm.bench.label:<48} {tm.best:8.3f} µs  median {tm.median:8.3f}  "
            f"{tm.best / floor:5.2f}{TIMES} floor"
        )

    _ratio_check(
        section, f"verify valid ≤ 2.0{TIMES} floor", t, "verify_valid", "floor", VERIFY_FLOOR_MAX
    )
    _ratio_check(
        section, f"issue (random id) ≤ 2.5{TIMES} floor", t, "issue", "floor", ISSUE_FLOOR_MAX
    )
    _ratio_check(
        section, f"issue (given id) ≤ 2.5{TIMES} floor", t, "issue_sid", "floor", ISSUE_FLOOR_MAX
    )
    _ratio_check(section, "verify forged ≤ verify valid", t, "verify_forged", "verify_valid", NOISE)
    _ratio_check(
        section, "verify expired ≤ verify valid", t, "verify_expired", "verify_valid", NOISE
    )
    _ratio_check(
        section,
        f"verify malformed ≤ 0.25{TIMES} floor",
        t,
        "verify_malformed",
        "floor",
        MALFORMED_FLOOR_MAX,
    )
    for other, label in (("itsd_unsign", "itsdangerous"), ("django_unsign", "Django")):
        _ratio_check(section, f"verify faster than {label} unsign", t, "verify_valid", other, 1.0)
    for other, label in (("itsd_sign", "itsdangerous"), ("django_sign", "Django")):
        _ratio_check(section, f"issue faster than {label} sign", t, "issue", other, 1.0)
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
