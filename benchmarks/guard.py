"""Guard benchmark: what the brute-force guard costs per request, and its memory bound.

In-process, through the sync :class:`~donjon.engine.Engine` over a
MemoryStore:

* the guard's overhead on ``engine.load``: a valid cookie, and a forged
  cookie from many clients (fresh addresses, so none reaches the threshold and
  the table stays at its bound, inserting and evicting on every call), each
  with the default :class:`~donjon.guard.Guard` and with ``guard=None``;
* the rejection throughput of a locked-out client (``engine.load`` answers
  LOCKED_OUT before any parsing) against a valid load;
* the guard's memory after one million distinct attacking addresses
  (tracemalloc), against ``GuardPolicy.max_clients``.

Targets: a locked-out client is rejected at least as fast as a valid load is
served; the guard adds at most 25 % to a valid load; after 1M addresses the
table holds at most ``max_clients`` clients, at no more than the ~200 bytes
per client the guard's docstring promises (+25 % allowance).

Run alone with ``.venv/bin/python benchmarks/guard.py [--quick]``.
"""

from __future__ import annotations

import gc
import itertools
import os
import sys
import time
import tracemalloc
from typing import Any

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _bench import TIMES, Bench, Report, Section, measure_all, section_main
from _servers import quiet_donjon_logs

from donjon import KeyRing, Verdict
from donjon.engine import Engine
from donjon.guard import Guard, GuardPolicy
from donjon.stores import MemoryStore

TITLE = "Guard: brute-force guard overhead and memory"

VALID_OVERHEAD_MAX = 1.25
LOCKED_VS_VALID_MAX = 1.0
DOC_BYTES_PER_CLIENT = 310
BYTES_ALLOWANCE = 1.25
ATTACKERS = 1_000_000
QUICK_ATTACKERS = 200_000
ADDRESS_POOL = 300_000
"""Distinct addresses the many-clients benches cycle through (3x the default bound)."""
USER = "198.51.100.7"
LOCKED = "203.0.113.66"


def _address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def _engines() -> tuple[dict[str, Engine], dict[str, str]]:
    ring = KeyRing.generate(["user"])
    store = MemoryStore()
    guarded = Engine(keyring=ring, store=store)
    bare = Engine(keyring=ring, store=store, guard=None)
    locking = Engine(
        keyring=ring,
        store=store,
        guard=Guard(GuardPolicy(lockout=3600.0, max_lockout=3600.0)),
    )
    s = bare.load(None)
    s["n"] = 1
    valid = bare.commit(s, presented=False).token
    assert valid is not None
    forged = valid[:-1] + ("0" if valid[-1] != "0" else "1")
    # Lock one client out (for an hour: longer than the measurement).
    lock_guard = locking.core.guard
    assert lock_guard is not None
    for _ in range(lock_guard.policy.threshold):
        locking.load(forged, client=LOCKED)
    assert locking.load(valid, client=LOCKED).verdict is Verdict.LOCKED_OUT
    assert guarded.load(valid, client=USER).verdict is Verdict.VALID
    assert bare.load(forged, client=USER).verdict is Verdict.FORGED
    return {"guarded": guarded, "bare": bare, "locking": locking}, {
        "valid": valid,
        "forged": forged,
    }


def _benches() -> list[Bench]:
    engines, tokens = _engines()
    pool = [_address(i) for i in range(ADDRESS_POOL)]
    ns: dict[str, Any] = {
        "g": engines["guarded"].load,
        "b": engines["bare"].load,
        "lk": engines["locking"].load,
        "nxt": next,
        "ga": itertools.cycle(pool),
        "ba": itertools.cycle(pool),
        "USER": USER,
        "LOCKED": LOCKED,
        **tokens,
    }
    return [
        Bench("valid_none", "valid cookie, guard=None", "b(valid, client=USER)", ns),
        Bench("valid_guard", "valid cookie, Guard()", "g(valid, client=USER)", ns),
        Bench(
            "forged_none",
            "forged cookie, many clients, guard=None",
            "b(forged, client=nxt(ba))",
            ns,
        ),
        Bench(
            "forged_guard",
            "forged cookie, many clients, Guard() at its bound",
            "g(forged, client=nxt(ga))",
            ns,
        ),
        Bench(
            "locked_valid",
            "locked-out client, valid cookie",
            "lk(valid, client=LOCKED)",
            ns,
        ),
        Bench(
            "locked_forged",
            "locked-out client, forged cookie",
            "lk(forged, client=LOCKED)",
            ns,
        ),
    ]


def _component_benches() -> list[Bench]:
    """The pieces of a guarded load, timed alone (for the table of where time goes)."""
    import dataclasses

    from donjon.events import Events, VerdictEvent
    from donjon.guard import client_key

    full = Guard()
    now = time.time()
    pool = [_address(i) for i in range(ADDRESS_POOL)]
    for a in pool[: full.policy.max_clients]:
        full.record(a, Verdict.FORGED, now)
    forged = VerdictEvent(
        verdict=Verdict.FORGED,
        reason="bad_mac",
        session_class=None,
        key_id="k1",
        client=USER,
        path="/count",
        session_ref=None,
        time=now,
    )
    valid = dataclasses.replace(
        forged, verdict=Verdict.VALID, reason="", session_ref="0a1b2c3d4e5f"
    )
    ns: dict[str, Any] = {
        "ck": client_key,
        "full": full,
        "FORGED": Verdict.FORGED,
        "now": now,
        "nxt": next,
        "addrs": itertools.cycle(pool[full.policy.max_clients :]),
        "emit": Events().emit,
        "ev": forged,
        "valid": valid,
        "replace": dataclasses.replace,
        "USER": USER,
    }
    return [
        Bench("c_key4", "guard.key_of: client_key(IPv4)", "ck(USER)", ns),
        Bench("c_key6", "guard.key_of: client_key(IPv6)", "ck('2001:db8:85a3::8a2e:370:7334')", ns),
        Bench(
            "c_retry", "guard.retry_after (the lock-out check)", "full.retry_after(USER, now)", ns
        ),
        Bench(
            "c_record",
            "guard.record(FORGED), new client, table full",
            "full.record(nxt(addrs), FORGED, now)",
            ns,
        ),
        Bench("c_emit_valid", "Events.emit(VALID event): not logged", "emit(valid)", ns),
        Bench("c_emit_forged", "Events.emit(FORGED event): a WARNING record", "emit(ev)", ns),
        Bench("c_asdict", "VerdictEvent.as_dict() (inside that WARNING)", "ev.as_dict()", ns),
        Bench(
            "c_replace",
            "dataclasses.replace(event, duration=...) (EngineCore.finish)",
            "replace(ev, duration=0.001)",
            ns,
        ),
    ]


def _memory(n: int) -> dict[str, float]:
    """Feed ``n`` distinct attacking addresses to a default guard; measure it."""
    guard = Guard()
    now = time.time()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    key_of, record = guard.key_of, guard.record
    for i in range(n):
        record(key_of(_address(i)), Verdict.FORGED, now)
    took = time.perf_counter() - started
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    size = len(guard)
    # IPv6: a million addresses of one /64 are one client.
    v6 = Guard()
    for i in range(min(n, 100_000)):
        v6.record(v6.key_of(f"2001:db8:1:2::{i >> 16:x}:{i & 0xFFFF:x}"), Verdict.FORGED, now)
    return {
        "addresses": n,
        "size": size,
        "bytes": current - base,
        "peak": peak - base,
        "seconds": took,
        "bound": guard.policy.max_clients,
        "v6_size": len(v6),
        "v6_addresses": min(n, 100_000),
    }


def run(report: Report, *, quick: bool = False) -> Section:
    """Measure, check the targets and add the guard section to ``report``."""
    section = report.section(TITLE)
    started = time.perf_counter()
    print(f"[{TITLE}]")
    load_before = os.getloadavg()
    with quiet_donjon_logs():
        t = measure_all(_benches(), quick=quick)
        parts = measure_all(_component_benches(), quick=quick)
        mem = _memory(QUICK_ATTACKERS if quick else ATTACKERS)

    base = t["valid_none"].best
    rows = []
    for tm in t.values():
        rows.append(
            (
                tm.bench.label,
                f"{tm.best:.2f}",
                f"{tm.median:.2f}",
                f"{1e6 / tm.best:,.0f}",
                f"{tm.best / base:.2f}{TIMES}",
            )
        )
        print(f"  {tm.bench.label:<52} {tm.best:8.2f} µs  {1e6 / tm.best:>10,.0f} loads/s")
    section.text(
        "`engine.load(token, client=address)` through the sync `Engine` over a "
        "MemoryStore, µs per call. `Guard()` has the default `GuardPolicy` (20 attack "
        "verdicts a minute lock a client out; at most 100,000 clients tracked). The "
        f"many-clients rows cycle through {ADDRESS_POOL:,} distinct IPv4 addresses "
        "(three times the bound), so with the guard every call adds a client and evicts "
        "the least recently seen one: the guard's worst case. The locked-out client was "
        "locked for an hour before timing. Verdict events are built and dropped (a "
        "`NullHandler`): FORGED and LOCKED_OUT are WARNING records, VALID is not logged."
    )
    section.table(
        ("load", "µs (min)", "µs (median)", "loads/s", f"{TIMES} valid, guard=None"), rows
    )

    section.text(
        "### Where the time goes\n\nThe pieces of a guarded load, timed alone (µs per call). "
        "`finish` runs for every load: it records the verdict in the guard, copies the "
        "event to add its duration, and emits it; a WARNING verdict (FORGED, MALFORMED, "
        "LOCKED_OUT...) builds a log record whose `extra` is `event.as_dict()`."
    )
    section.table(
        ("piece", "µs (min)", "µs (median)"),
        [(tm.bench.label, f"{tm.best:.2f}", f"{tm.median:.2f}") for tm in parts.values()],
    )
    for tm in parts.values():
        print(f"  {tm.bench.label:<60} {tm.best:8.2f} µs")

    bound = int(mem["bound"])
    per_client = mem["bytes"] / mem["size"] if mem["size"] else 0.0
    section.text(
        f"### Memory after {int(mem['addresses']):,} distinct attacking addresses\n\n"
        "Each address sends one forged-cookie verdict to a default `Guard()` "
        "(`guard.record(guard.key_of(address), FORGED, now)`), measured with tracemalloc "
        f"({mem['seconds']:.1f} s with tracemalloc on). A second guard gets "
        f"{int(mem['v6_addresses']):,} IPv6 addresses of one /64."
    )
    section.table(
        ("measure", "value"),
        [
            ("GuardPolicy.max_clients (the bound)", f"{bound:,}"),
            ("clients tracked after the flood", f"{int(mem['size']):,}"),
            ("memory held by the guard (tracemalloc, after gc)", f"{mem['bytes'] / 1e6:.1f} MB"),
            ("peak during the flood", f"{mem['peak'] / 1e6:.1f} MB"),
            ("bytes per tracked client", f"{per_client:.0f}"),
            (
                f"IPv6: clients tracked after {int(mem['v6_addresses']):,} addresses of one /64",
                f"{int(mem['v6_size'])}",
            ),
        ],
    )

    overhead = t["valid_guard"].best / base
    section.target(
        f"guard overhead on a valid load ≤ {VALID_OVERHEAD_MAX - 1:.0%}",
        overhead,
        VALID_OVERHEAD_MAX,
        f"{t['valid_guard'].best:.2f} µs / {base:.2f} µs = {overhead:.2f}{TIMES} "
        f"(limit {VALID_OVERHEAD_MAX:g}{TIMES})",
    )
    lk = t["locked_valid"].best
    section.target(
        "locked-out rejection at least as fast as a valid load",
        lk / t["valid_guard"].best,
        LOCKED_VS_VALID_MAX,
        f"{1e6 / lk:,.0f} rejections/s vs {1e6 / t['valid_guard'].best:,.0f} valid loads/s "
        f"({lk:.2f} µs / {t['valid_guard'].best:.2f} µs = {lk / t['valid_guard'].best:.2f}"
        f"{TIMES}, limit {LOCKED_VS_VALID_MAX:g}{TIMES})",
    )
    section.target(
        f"guard table bounded after {int(mem['addresses']):,} addresses",
        mem["size"],
        bound,
        f"{int(mem['size']):,} clients tracked (bound {bound:,})",
    )
    limit = DOC_BYTES_PER_CLIENT * BYTES_ALLOWANCE
    section.target(
        f"≤ {DOC_BYTES_PER_CLIENT} bytes per client (+{BYTES_ALLOWANCE - 1:.0%})",
        per_client,
        limit,
        f"{per_client:.0f} bytes/client, {mem['bytes'] / 1e6:.1f} MB at the bound "
        f"(limit {limit:.0f}; docstring: about {DOC_BYTES_PER_CLIENT})",
    )
    section.targets_table()
    section.seconds = time.perf_counter() - started
    load_after = os.getloadavg()
    section.text(
        f"Load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f}. "
        f"Section run time: {section.seconds:.1f} s."
    )
    return section


def main(argv: list[str] | None = None) -> int:
    return section_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
