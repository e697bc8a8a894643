"""``donjon bench``: how fast tokens are issued and checked on this machine."""

from __future__ import annotations

import hmac
import json
import secrets
import timeit
from collections.abc import Callable

from ..core import KeyRing, TokenCodec
from ._progress import Progress


def _measure(fn: Callable[[], object], seconds: float) -> float:
    number, elapsed = 1, 0.0
    while elapsed < seconds / 5:
        number *= 4
        elapsed = timeit.timeit(fn, number=number)
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def run_bench(*, seconds: float, as_json: bool) -> int:
    """Measure µs per operation against the HMAC floor; print a table."""
    ring = KeyRing.generate(["user"])
    codec = TokenCodec(ring)
    token = codec.issue(ttl=3600)
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")
    key, msg = secrets.token_bytes(32), secrets.token_bytes(40)
    cases: dict[str, Callable[[], object]] = {
        "floor hmac-sha256 (40 B)": lambda: hmac.digest(key, msg, "sha256"),
        "issue": lambda: codec.issue(ttl=3600),
        "verify valid": lambda: codec.verify(token),
        "verify forged": lambda: codec.verify(forged),
        "verify malformed (5 kB)": lambda: codec.verify("x" * 5000),
    }
    bar = Progress(len(cases), "measuring")
    results = {}
    for name, fn in cases.items():
        results[name] = _measure(fn, seconds)
        bar.advance()
    bar.close()
    floor = results["floor hmac-sha256 (40 B)"]
    if as_json:
        print(json.dumps({k: {"us": v, "x_floor": v / floor} for k, v in results.items()}))
        return 0
    for name, us in results.items():
        print(f"{name:<28} {us:8.3f} µs  {us / floor:5.2f}x floor")
    return 0
