"""Stores benchmark: what one request costs each store, and how that grows with size.

For MemoryStore, SQLiteStore, RedisStore and PostgresStore (real servers from
``tests/servers``, started for the section on free 127.0.0.1 ports):

* µs per request through the real sync :class:`~donjon.engine.Engine`
  (``engine.load(token)`` then ``engine.commit``) and directly on the store
  (``store.load(key)``; ``store.write`` of one changed field);
* the store calls each kind of request makes (a counting wrapper around the
  store) and, for Redis, the commands the server executed (``INFO
  commandstats`` deltas, with the engine's epoch cache fresh).

Targets: a valid, unchanged session costs exactly one read and no write; a
forged, expired or revoked token costs zero store calls (and zero Redis
commands). Then the number of stored sessions grows 1k -> 10k -> 100k -> 1M
(``--quick``: 1k -> 10k) for memory, SQLite and Redis, and ``store.load`` of
random stored keys must stay flat: 1M/1k <= 2.0x, or no more than a plain dict
of as many keys grows in the same run (the memory hierarchy's floor; linear
growth would be 1000x).

Run alone with ``.venv/bin/python benchmarks/stores.py [--quick]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _bench import TIMES, Bench, Report, Section, Timing, measure_all, section_main
from _servers import (
    CountingStore,
    RedisStats,
    cpu_sets,
    describe_calls,
    pinned,
    postgres_server,
    quiet_donjon_logs,
    redis_server,
    split_calls,
)

from donjon import KeyRing, Verdict
from donjon.core._ids import record_key
from donjon.engine import Engine
from donjon.stores import MemoryStore, SQLiteStore, Write

TITLE = "Stores: per-request store work"

FLAT_MAX = 2.0
"""``store.load`` at 1M sessions over at 1k: flat, not linear."""
SIZES = (1_000, 10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)
COUNT_REQUESTS = 200
"""Requests per kind when counting store calls and Redis commands."""
SAMPLE = 10_000
"""Random stored keys each size's load cycles through."""
TTL = 12 * 3600.0
LABELS = {
    "memory": "MemoryStore",
    "sqlite": "SQLiteStore",
    "redis": "RedisStore",
    "postgres": "PostgresStore",
}


# -- stores and sessions ---------------------------------------------------------
@dataclass
class Subject:
    """One store with a timing engine, a counting engine and tokens of every verdict."""

    kind: str
    store: Any
    engine: Engine
    counting: Engine
    counter: CountingStore
    tokens: dict[str, str]
    key: str


def _engine(ring: KeyRing, store: Any, *, epoch_refresh: float = 1.0) -> Engine:
    # guard=None: the guard's cost is the guard section's; here, the store's.
    return Engine(keyring=ring, store=store, guard=None, epoch_refresh=epoch_refresh)


def _subject(kind: str, store: Any) -> Subject:
    ring = KeyRing.generate(["user", "admin"])
    engine = _engine(ring, store)
    counter = CountingStore(store)
    counting = _engine(ring, counter, epoch_refresh=3600.0)
    s = engine.load(None)
    s["n"] = 0
    s["name"] = "Zoë Example"
    s["roles"] = ["editor"]
    valid = engine.commit(s, presented=False).token
    assert valid is not None
    now = engine.core.now()
    codec = engine.core.codec
    revoked = codec.issue(session_class="admin", ttl=TTL, now=now - 60)
    engine.kill("admin", at=now - 30)
    counting.refresh_epochs()  # the kill is now known to both engines, the cache fresh
    tokens = {
        "valid": valid,
        "forged": valid[:-1] + ("0" if valid[-1] != "0" else "1"),
        "expired": codec.issue(session_class="user", ttl=TTL, now=now - 2 * TTL),
        "revoked": revoked,
    }
    expect = {
        "valid": Verdict.VALID,
        "forged": Verdict.FORGED,
        "expired": Verdict.EXPIRED,
        "revoked": Verdict.REVOKED,
    }
    for name, token in tokens.items():
        got = engine.load(token).verdict
        assert got is expect[name], f"{kind}: {name} token gave {got}"
    sid = engine.load(valid).id
    assert sid is not None
    return Subject(kind, store, engine, counting, counter, tokens, record_key(sid))


def _request_fns(engine: Engine, tokens: dict[str, str]) -> dict[str, Callable[[], None]]:
    load, commit = engine.load, engine.commit
    valid = tokens["valid"]

    def unchanged() -> None:
        s = load(valid)
        commit(s, presented=True)

    def counter() -> None:
        s = load(valid)
        s["n"] = s.get("n", 0) + 1
        commit(s, presented=True)

    def rejected(token: str) -> Callable[[], None]:
        def fn() -> None:
            s = load(token)
            commit(s, presented=True)

        return fn

    return {
        "unchanged": unchanged,
        "counter": counter,
        "forged": rejected(tokens["forged"]),
        "expired": rejected(tokens["expired"]),
        "revoked": rejected(tokens["revoked"]),
    }


REQUESTS = {
    "unchanged": "valid, unchanged (load + commit)",
    "counter": "valid, counter written (load + commit)",
    "forged": "forged MAC",
    "expired": "expired",
    "revoked": "revoked (class epoch)",
}


def _benches(sub: Subject) -> list[Bench]:
    fns = _request_fns(sub.engine, sub.tokens)
    store = sub.store
    rec = store.load(sub.key)
    assert rec is not None
    write = Write(
        key=sub.key,
        fields={"n": "7"},
        session_class=rec.session_class,
        user_id=rec.user_id,
        created_at=rec.created_at,
        last_seen=rec.last_seen,
        expires_at=rec.expires_at,
        create=False,
    )
    ns: dict[str, Any] = {
        "store_load": store.load,
        "store_write": store.write,
        "key": sub.key,
        "w": write,
        **{f"req_{k}": fn for k, fn in fns.items()},
    }
    out = [
        Bench(f"{sub.kind}:store_load", "store.load(key)", "store_load(key)", ns),
        Bench(f"{sub.kind}:store_write", "store.write(one field)", "store_write(w)", ns),
    ]
    out += [Bench(f"{sub.kind}:{k}", label, f"req_{k}()", ns) for k, label in REQUESTS.items()]
    return out


def _count(sub: Subject, stats: RedisStats | None) -> dict[str, tuple[dict[str, int], Any]]:
    """Store calls (and Redis commands) per kind of request."""
    fns = _request_fns(sub.counting, sub.tokens)
    out: dict[str, tuple[dict[str, int], Any]] = {}
    for name, fn in fns.items():
        sub.counting.refresh_epochs()  # a fresh epoch cache: no epoch read in the loop
        sub.counter.reset()
        if stats is not None:
            stats.reset()
        for _ in range(COUNT_REQUESTS):
            fn()
        calls = dict(sub.counter.counts)
        out[name] = (calls, stats.delta()[0] if stats is not None else None)
    return out


# -- bulk fills ------------------------------------------------------------------------
def bulk_key(i: int) -> str:
    """The record key of bulk session ``i``: 64 hex digits, like a real record key."""
    a = hashlib.sha1(b"a%d" % i, usedforsecurity=False).hexdigest()
    b = hashlib.sha1(b"b%d" % i, usedforsecurity=False).hexdigest()
    return a + b[:24]


_FILL_LUA = """
-- ARGV: first, last, prefix, created, expires, ttl ms
local prefix = ARGV[3]
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  local k = redis.sha1hex('a' .. i) .. string.sub(redis.sha1hex('b' .. i), 1, 24)
  local s = prefix .. '{' .. string.sub(k, 1, 2) .. '}:s:' .. k
  redis.call('HSET', s, 'class', 'user', 'created', ARGV[4], 'seen', ARGV[4],
             'expires', ARGV[5], 'd:n', '1')
  redis.call('PEXPIRE', s, ARGV[6])
end
return 1
"""


def _fill_memory(store: MemoryStore, start: int, end: int, now: float) -> None:
    for i in range(start, end):
        store.write(
            Write(
                key=bulk_key(i),
                fields={"n": "1"},
                session_class="user",
                user_id=None,
                created_at=now,
                last_seen=now,
                expires_at=now + TTL,
                create=True,
            )
        )


def _fill_sqlite(path: Path, start: int, end: int, now: float) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        # Sorted: appends to the B-trees instead of random inserts (several times faster).
        keys = sorted(bulk_key(i) for i in range(start, end))
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO donjon_sessions"
            " (key, session_class, user_id, created_at, last_seen, expires_at)"
            " VALUES (?, 'user', NULL, ?, ?, ?)",
            ((k, now, now, now + TTL) for k in keys),
        )
        db.executemany(
            "INSERT INTO donjon_fields (key, name, value) VALUES (?, 'n', '1')",
            ((k,) for k in keys),
        )
        db.execute("COMMIT")
    finally:
        db.close()


def _fill_redis(client: Any, prefix: str, start: int, end: int, now: float) -> None:
    script = client.register_script(_FILL_LUA)
    step = 50_000
    for a in range(start, end, step):
        b = min(end, a + step) - 1
        script(args=[a, b, prefix, repr(now), repr(now + TTL), int(TTL * 1000)])


# -- the section -------------------------------------------------------------------------
@contextlib.contextmanager
def _stores(tmp: Path, redis_url: str, pg_url: str | None) -> Iterator[dict[str, Any]]:
    from donjon.stores.redis import RedisStore

    stores: dict[str, Any] = {
        "memory": MemoryStore(max_sessions=2_000_000),
        "sqlite": SQLiteStore(tmp / "sessions.sqlite3"),
        "redis": RedisStore.from_url(redis_url),
    }
    if pg_url is not None:
        from donjon.stores.postgres import PostgresStore

        stores["postgres"] = PostgresStore.from_url(pg_url)
    try:
        yield stores
    finally:
        for s in stores.values():
            with contextlib.suppress(Exception):
                s.close()


def _floors(stores: dict[str, Any], pg_url: str | None) -> tuple[list[Bench], list[Any]]:
    """One bare round trip to each server (the floor of any store call)."""
    benches = [
        Bench(
            "redis:floor",
            "floor: PING (one round trip)",
            "ping()",
            {"ping": stores["redis"].client.ping},
        )
    ]
    closers: list[Any] = []
    if pg_url is not None and "postgres" in stores:
        import psycopg

        conn = psycopg.connect(pg_url, autocommit=True)
        closers.append(conn)
        benches.append(
            Bench(
                "postgres:floor",
                "floor: SELECT 1 (one round trip)",
                "ex('SELECT 1').fetchall()",
                {"ex": conn.execute},
            )
        )
        from psycopg_pool import ConnectionPool

        for name, check in (("pool_check", ConnectionPool.check_connection), ("pool", None)):
            pool = ConnectionPool(
                pg_url, min_size=1, max_size=2, kwargs={"autocommit": True}, check=check
            )
            pool.wait()
            closers.append(pool)

            def via_pool(pool: Any = pool) -> None:
                with pool.connection() as c:
                    c.execute("SELECT 1").fetchall()

            label = (
                "SELECT 1 via a ConnectionPool with check=check_connection (as the store's)"
                if check is not None
                else "SELECT 1 via a ConnectionPool without check"
            )
            benches.append(Bench(f"postgres:{name}", label, "via()", {"via": via_pool}))
    return benches, closers


def _cross_cpu_ping(store: Any, cpu: str | None) -> float | None:
    """µs per PING with this process on another CPU than redis-server (VM wake-ups)."""
    if cpu is None:
        return None
    ping = store.client.ping
    with pinned(cpu):
        for _ in range(200):
            ping()
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(1000):
                ping()
            best = min(best, (time.perf_counter() - t0) / 1000 * 1e6)
    return best


def _per_request(
    section: Section,
    stores: dict[str, Any],
    stats: RedisStats,
    quick: bool,
    pg_url: str | None,
    other_cpu: str | None,
) -> None:
    subjects = {k: _subject(k, s) for k, s in stores.items()}
    counts = {k: _count(sub, stats if k == "redis" else None) for k, sub in subjects.items()}
    print("  per-request cost:")
    floors, closers = _floors(stores, pg_url)
    try:
        t = measure_all(
            [b for sub in subjects.values() for b in _benches(sub)] + floors, quick=quick
        )
    finally:
        for c in closers:
            c.close()
    cross = _cross_cpu_ping(stores["redis"], other_cpu)

    rows = []
    for kind in subjects:
        for op in ("floor", "pool", "pool_check", "store_load", "store_write", *REQUESTS):
            if f"{kind}:{op}" not in t:
                continue
            tm = t[f"{kind}:{op}"]
            calls = counts[kind][op][0] if op in counts[kind] else None
            rows.append(
                (
                    LABELS[kind],
                    tm.bench.label,
                    f"{tm.best:.1f}",
                    f"{tm.median:.1f}",
                    _calls_text(calls)
                    if calls is not None
                    else (
                        "(no store)"
                        if op in ("floor", "pool", "pool_check")
                        else "(the call itself)"
                    ),
                )
            )
            print(f"  {LABELS[kind]:<14} {tm.bench.label:<42} {tm.best:9.1f} µs")
    section.text(
        "### Per request\n\n"
        "µs per operation through the sync `Engine` (no guard: the guard section has it) "
        "and directly on the store. The session holds three fields (`n`, a name, a list); "
        "the counter request changes `n` only, so the save is a field-level write (its "
        "cost through the engine is the difference between the two `valid` rows). A "
        "request's store calls are counted by a wrapper around the store, "
        f"{COUNT_REQUESTS} requests of each kind with the engine's epoch cache fresh "
        "(the engine re-reads the shared class epochs at most once per `epoch_refresh`, "
        "1 s by default, and only for a MAC-valid token)."
    )
    section.table(
        ("store", "operation", "µs (min)", "µs (median)", "store calls per request"), rows
    )
    if cross is not None:
        section.text(
            f"With this process moved to CPU {other_cpu} (redis-server stays on its CPU), a "
            f"`PING` takes {cross:.0f} µs: on this VM, waking an idle CPU dominates a "
            "round trip between CPUs, which is why everything above shares one CPU."
        )

    redis_counts = counts["redis"]
    rrows = []
    for op, label in REQUESTS.items():
        calls = redis_counts[op][1] or {}
        reads, writes = split_calls(calls)
        rrows.append(
            (
                label,
                f"{reads / COUNT_REQUESTS:.3g}",
                f"{writes / COUNT_REQUESTS:.3g}",
                describe_calls(calls, COUNT_REQUESTS),
            )
        )
    section.text(
        "Redis commands the server executed, per request (`CONFIG RESETSTAT`, then "
        "`INFO commandstats` deltas over "
        f"{COUNT_REQUESTS} requests; commands a Lua script runs count under their own "
        "names, and `EVALSHA` counts as a write):"
    )
    section.table(("request", "reads", "writes", "commands per request"), rrows)

    for kind, c in counts.items():
        calls = c["unchanged"][0]
        reads = calls.get("load", 0) / COUNT_REQUESTS
        writes = sum(v for k, v in calls.items() if k != "load") / COUNT_REQUESTS
        section.target(
            f"{LABELS[kind]}: valid unchanged session = 1 read, 0 writes",
            abs(reads - 1) + writes,
            0.0,
            f"{reads:g} reads, {writes:g} other calls per request ({_calls_text(calls)})",
        )
    for kind, c in counts.items():
        n = sum(sum(c[op][0].values()) for op in ("forged", "expired", "revoked"))
        section.target(
            f"{LABELS[kind]}: forged, expired, revoked = 0 store calls",
            n / COUNT_REQUESTS,
            0.0,
            f"{n} calls in {3 * COUNT_REQUESTS} requests",
        )
    calls = redis_counts["unchanged"][1] or {}
    reads, writes = split_calls(calls)
    section.target(
        "Redis: valid unchanged session = exactly 1 read command, 0 writes",
        abs(reads / COUNT_REQUESTS - 1) + writes / COUNT_REQUESTS,
        0.0,
        f"{describe_calls(calls, COUNT_REQUESTS)} per request",
    )
    for op in ("forged", "expired", "revoked"):
        calls = redis_counts[op][1] or {}
        total = sum(calls.values())
        section.target(
            f"Redis: {op} token = 0 commands",
            total / COUNT_REQUESTS,
            0.0,
            f"{total} commands in {COUNT_REQUESTS} requests",
        )


def _calls_text(calls: dict[str, int]) -> str:
    if not calls:
        return "none"
    return ", ".join(f"{k} {v / COUNT_REQUESTS:g}" for k, v in sorted(calls.items()))


def _scaling(section: Section, tmp: Path, redis_url: str, quick: bool) -> None:
    from donjon.stores.redis import RedisStore

    sizes = QUICK_SIZES if quick else SIZES
    sqlite_path = tmp / "scale.sqlite3"
    stores: dict[str, Any] = {
        "memory": MemoryStore(max_sessions=2_000_000),
        "sqlite": SQLiteStore(sqlite_path),
        "redis": RedisStore.from_url(redis_url, prefix="scale:"),
    }
    stores["redis"].client.flushdb()
    ring = KeyRing.generate(["user"])
    engines = {k: _engine(ring, s) for k, s in stores.items()}
    # Real sessions (with tokens) for engine.load, created before the bulk.
    tokens: dict[str, list[str]] = {}
    for k, e in engines.items():
        toks = []
        for _ in range(256):
            s = e.load(None)
            s["n"] = 1
            tok = e.commit(s, presented=False).token
            assert tok is not None
            toks.append(tok)
        tokens[k] = toks
    now = time.time()
    rng = random.Random(1234)
    filled = 0
    results: dict[int, dict[str, Timing]] = {}
    fill_seconds: dict[str, float] = dict.fromkeys(stores, 0.0)
    server_us: dict[int, float] = {}
    plain: dict[str, tuple[int, str, float]] = {}
    """The hardware floor: a plain dict of as many keys, read at random."""
    try:
        for size in sizes:
            print(f"  {size:,} sessions: filling...")
            for kind, store in stores.items():
                t0 = time.perf_counter()
                if kind == "memory":
                    _fill_memory(store, filled, size, now)
                elif kind == "sqlite":
                    _fill_sqlite(sqlite_path, filled, size, now)
                else:
                    _fill_redis(store.client, store.prefix, filled, size, now)
                fill_seconds[kind] += time.perf_counter() - t0
            filled = size
            assert len(stores["memory"]) == size + 256
            assert stores["redis"].client.dbsize() == size + 256
            for i in range(len(plain), size):
                plain[bulk_key(i)] = (i, "user", now)
            sample = [bulk_key(rng.randrange(size)) for _ in range(SAMPLE)]
            for kind, store in stores.items():
                assert store.load(sample[0]) is not None, (kind, size)
            benches = []
            for kind, store in stores.items():
                keys = itertools.cycle(sample)
                toks = itertools.cycle(tokens[kind])
                ns = {
                    "load": store.load,
                    "keys": keys,
                    "nxt": next,
                    "eload": engines[kind].load,
                    "toks": toks,
                }
                benches.append(
                    Bench(f"{kind}:store", "store.load(random key)", "load(nxt(keys))", ns)
                )
                benches.append(
                    Bench(f"{kind}:engine", "engine.load(valid token)", "eload(nxt(toks))", ns)
                )
            benches.append(
                Bench(
                    "dict:store",
                    "floor: dict.get(random key) on a plain dict of as many keys",
                    "get(nxt(keys))",
                    {"get": plain.get, "keys": itertools.cycle(sample), "nxt": next},
                )
            )
            rclient = stores["redis"].client
            rclient.config_resetstat()
            results[size] = measure_all(benches, quick=quick)
            server_us[size] = float(
                rclient.info("commandstats").get("cmdstat_hgetall", {}).get("usec_per_call", 0.0)
            )
            for b in benches:
                print(f"  {size:>9,} {b.key:<16} {results[size][b.key].best:8.2f} µs")
    finally:
        for s in stores.values():
            with contextlib.suppress(Exception):
                s.close()

    first, last = sizes[0], sizes[-1]
    rows = []
    for kind in stores:
        for what in ("store", "engine"):
            key = f"{kind}:{what}"
            vals = [results[n][key].best for n in sizes]
            rows.append(
                (
                    LABELS[kind],
                    results[first][key].bench.label,
                    *(f"{v:.2f}" for v in vals),
                    f"{vals[-1] / vals[0]:.2f}{TIMES}",
                )
            )
    vals = [results[n]["dict:store"].best for n in sizes]
    rows.insert(
        0,
        (
            "(floor)",
            results[first]["dict:store"].bench.label,
            *(f"{v:.3f}" for v in vals),
            f"{vals[-1] / vals[0]:.2f}{TIMES}",
        ),
    )
    rows.append(
        (
            "redis-server",
            "HGETALL inside the server (`usec_per_call`)",
            *(f"{server_us[n]:.2f}" for n in sizes),
            f"{server_us[last] / server_us[first]:.2f}{TIMES}" if server_us[first] else "",
        )
    )
    section.text(
        "### Cost as the number of stored sessions grows\n\n"
        f"µs per load (minimum of the runs) at each size. `store.load` cycles through "
        f"{SAMPLE:,} keys drawn at random from all the stored ones; `engine.load` cycles "
        "through 256 real sessions created before the bulk (token verified, record read "
        "and decoded). Bulk records are written directly: MemoryStore by `store.write`, "
        "SQLite by `executemany` in one transaction, Redis by a Lua script "
        "(50,000 `HSET` + `PEXPIRE` per call). The floor row reads a plain dict of as "
        "many string keys at random: what the memory hierarchy alone adds once the data "
        "outgrows the CPU caches (no store can be flatter than it). The target for each "
        f"store: 1M/1k at most {FLAT_MAX:g}{TIMES}, or at most the floor's own growth "
        f"(linear would be 1000{TIMES}). Fill time: "
        + ", ".join(f"{LABELS[k]} {v:.1f} s" for k, v in fill_seconds.items())
        + "."
    )
    section.table(
        ("store", "operation", *(f"{n:,}" for n in sizes), f"{last:,} / {first:,}"),
        rows,
    )
    # "Flat, not linear": linear would be 1000x. A store may grow by FLAT_MAX, or by
    # as much as a plain dict grows in the same run (the memory hierarchy's floor).
    floor = results[last]["dict:store"].best / results[first]["dict:store"].best
    limit = max(FLAT_MAX, floor)
    for kind in stores:
        a = results[first][f"{kind}:store"].best
        b = results[last][f"{kind}:store"].best
        section.target(
            f"{LABELS[kind]}: load flat from {first:,} to {last:,} sessions",
            b / a,
            limit,
            f"{b:.2f} µs / {a:.2f} µs = {b / a:.2f}{TIMES} (limit {limit:.2f}{TIMES}: "
            f"{FLAT_MAX:g}{TIMES} or the plain dict's own {floor:.2f}{TIMES})",
        )


def run(report: Report, *, quick: bool = False) -> Section:
    """Measure, check the targets and add the stores section to ``report``."""
    section = report.section(TITLE)
    started = time.perf_counter()
    print(f"[{TITLE}]")
    load_before = os.getloadavg()
    # Client and servers share one CPU: on a VM, waking an idle second CPU adds some
    # 50-100 µs to every round trip, a latency that is not the stores' work.
    cpu, other_cpu = cpu_sets()
    with (
        quiet_donjon_logs(),
        redis_server(cpu=int(cpu) if cpu is not None else None) as redis,
        postgres_server(cpu=int(cpu) if cpu is not None else None) as pg,
        tempfile.TemporaryDirectory(prefix="donjon-bench-stores-") as tmpdir,
        pinned(cpu),
    ):
        tmp = Path(tmpdir)
        stats = RedisStats(redis.url)
        version = stats.client.info("server")["redis_version"]
        servers = f"redis-server {version} on 127.0.0.1 (no persistence)"
        if pg is not None:
            servers += ", PostgreSQL " + Path(pg.bindir).parent.name + " on 127.0.0.1 (fsync off)"
        else:
            servers += "; **PostgreSQL not available: its rows are missing**"
        section.text(
            f"Servers: {servers}; SQLite in WAL mode in a temporary folder. Each is started "
            "for this section (`tests/servers`) and stopped after it. The benchmark process "
            f"and both servers are pinned to CPU {cpu}: every round trip is then CPU work "
            "(client, loopback, server) with no wake-up of an idle CPU, which on this VM "
            "adds about 100 µs per round trip (see the `PING` rows)."
        )
        with _stores(tmp, redis.url, pg.url if pg is not None else None) as stores:
            _per_request(
                section, stores, stats, quick, pg.url if pg is not None else None, other_cpu
            )
        _scaling(section, tmp, redis.url, quick)
        stats.close()
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
