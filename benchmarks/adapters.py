"""Adapters benchmark: the same Starlette endpoint behind six session layers.

``GET /count`` reads one session key and writes a counter back. It is served,
side by side in one run, by bare Starlette (the counter in a global),
Starlette's own ``SessionMiddleware`` (signed cookie), starsessions with its
Redis store, and Donjon's ASGI middleware over MemoryStore, SQLiteStore and
AsyncRedisStore (see ``benchmarks/apps``). Each app runs alone under uvicorn
(one worker, no access log) pinned to one core; wrk runs on the other core
with a Lua script that keeps the session cookie. The same apps are also
called in-process (ASGI, no HTTP) for the per-request cost of each layer.

Then a forged-cookie flood: every request carries a fresh random cookie, to
starsessions (a random 32-hex id, its own format) and to Donjon over Redis
(a well-formed token with a random MAC). Redis ``INFO commandstats`` and
``DBSIZE`` deltas give commands and new keys per request. Donjon's app gets a
guard whose threshold is never reached (one client sends the whole flood and
would otherwise be locked out after 20 requests: the guard section covers
lock-outs; here the point is the store's cost).

Targets: Donjon+memory >= 0.6x bare Starlette's throughput; Donjon+Redis >=
2x starsessions+Redis; under the flood Donjon sends 0 Redis commands and
creates 0 keys per request and keeps >= 0.8x bare throughput.

Run alone with ``.venv/bin/python benchmarks/adapters.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import logging
import os
import pstats
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _bench import TIMES, Bench, Report, Section, measure_all, section_main
from _servers import (
    RedisStats,
    WrkResult,
    cpu_sets,
    describe_calls,
    pinned,
    quiet_donjon_logs,
    redis_server,
    run_wrk,
    uvicorn_server,
    wrk_path,
)

import donjon

TITLE = "Adapters: Starlette apps under uvicorn"

MEMORY_VS_BARE_MIN = 0.6
REDIS_VS_STARSESSIONS_MIN = 2.0
FLOOD_VS_BARE_MIN = 0.8
CONNECTIONS = 16
PREFIXES = 1000
"""Distinct forged-token prefixes in the flood script (each gets a random MAC)."""
INPROC_BATCH = 50
"""Requests per timed call in-process (the timing divides by it)."""
STACKS: list[tuple[str, str]] = [("asyncio", "h11"), ("uvloop", "httptools")]
"""uvicorn's plain install (pure-Python HTTP parsing), then ``uvicorn[standard]``'s
stack (uvloop, httptools): a much cheaper HTTP layer, so a stricter test of every
ratio to bare Starlette."""
_Calls = dict[str, tuple[dict[str, int], int, int]]
"""Per run tag: Redis commands by name, new keys, requests."""


@dataclass(frozen=True)
class App:
    key: str
    label: str
    factory: str
    env: dict[str, str] = field(default_factory=dict)
    cookie: str | None = None


def _apps(redis_url: str, sqlite_path: str) -> list[App]:
    return [
        App("bare", "bare Starlette (counter in a global)", "bare:create_app"),
        App(
            "starlette",
            "Starlette SessionMiddleware (signed cookie)",
            "starlette_cookie:create_app",
            cookie="session",
        ),
        App(
            "starsessions",
            "starsessions + Redis",
            "starsessions_redis:create_app",
            {"BENCH_REDIS_URL": redis_url},
            cookie="session",
        ),
        App(
            "minimal",
            "reference floor: minimal signed-id middleware (HMAC + dict; no guard, "
            "events or timeouts)",
            "minimal:create_app",
            cookie="donjon",
        ),
        App(
            "donjon_memory",
            "Donjon + MemoryStore",
            "donjon_app:create_app",
            {"BENCH_STORE": "memory"},
            cookie="donjon",
        ),
        App(
            "donjon_sqlite",
            "Donjon + SQLiteStore",
            "donjon_app:create_app",
            {"BENCH_STORE": "sqlite", "BENCH_SQLITE_PATH": sqlite_path},
            cookie="donjon",
        ),
        App(
            "donjon_redis",
            "Donjon + AsyncRedisStore",
            "donjon_app:create_app",
            {"BENCH_STORE": "redis", "BENCH_REDIS_URL": redis_url},
            cookie="donjon",
        ),
    ]


# -- wrk scripts -----------------------------------------------------------------
KEEP_LUA = """\
-- Keep the session cookie: send back what the last Set-Cookie set.
local cookie = nil
response = function(status, headers, body)
  for k, v in pairs(headers) do
    if string.lower(k) == "set-cookie" then cookie = string.match(v, "^([^;]+)") end
  end
end
request = function()
  if cookie then return wrk.format("GET", "{path}", {{["Cookie"] = cookie}}) end
  return wrk.format("GET", "{path}")
end
"""

FLOOD_LUA = """\
-- Forged-cookie flood: every request carries a new random cookie.
local prefixes = {{ {prefixes} }}
local hex = "0123456789abcdef"
local function rnd(n)
  local t = {{}}
  for i = 1, n do local r = math.random(16); t[i] = string.sub(hex, r, r) end
  return table.concat(t)
end
init = function(args) math.randomseed(os.time() + os.clock() * 1e6) end
request = function()
  local c = {cookie}
  return wrk.format("GET", "{path}", {{["Cookie"] = c}})
end
"""


def _forged_prefixes(n: int) -> list[str]:
    """Token text up to the MAC, signed by a key ring the servers do not have."""
    codec = donjon.TokenCodec(donjon.KeyRing.generate(["user"]))
    return [codec.issue(session_class="user", ttl=3600)[:-64] for _ in range(n)]


def _keep_script(tmp: Path, path: str) -> Path:
    out = tmp / f"keep{path.replace('/', '_')}.lua"
    out.write_text(KEEP_LUA.format(path=path), encoding="utf-8")
    return out


def _flood_script(tmp: Path, kind: str, path: str, prefixes: list[str]) -> Path:
    if kind == "donjon":
        cookie = '"donjon=" .. prefixes[math.random(#prefixes)] .. rnd(64)'
        table = ", ".join(f'"{p}"' for p in prefixes)
    else:
        cookie = '"session=" .. rnd(32)'
        table = ""
    out = tmp / f"flood_{kind}{path.replace('/', '_')}.lua"
    out.write_text(FLOOD_LUA.format(prefixes=table, cookie=cookie, path=path), encoding="utf-8")
    return out


# -- the fallback load generator (no wrk) ------------------------------------------
def _httpx_load(
    url: str, path: str, *, seconds: float, connections: int, forged: Callable[[], str] | None
) -> WrkResult:
    """In-process load with httpx when wrk is missing: bounded by time and count."""
    import httpx

    latencies: list[float] = []
    errors = 0
    cap = 2_000_000

    async def main() -> None:
        nonlocal errors
        cookie: dict[str, str] = {}
        deadline = time.perf_counter() + seconds
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(base_url=url, limits=limits) as client:

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < deadline and len(latencies) < cap:
                    headers = {"Cookie": forged() if forged else cookie.get("c", "")}
                    t0 = time.perf_counter()
                    r = await client.get(path, headers={k: v for k, v in headers.items() if v})
                    latencies.append(time.perf_counter() - t0)
                    if r.status_code >= 400:
                        errors += 1
                    sc = r.headers.get("set-cookie")
                    if sc and not forged:
                        cookie["c"] = sc.split(";", 1)[0]
                    client.cookies.clear()

            await asyncio.gather(*(worker() for _ in range(connections)))

    started = time.perf_counter()
    asyncio.run(main())
    took = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return WrkResult(
        requests=len(latencies),
        seconds=took,
        rps=len(latencies) / took,
        p50_ms=q[49] * 1e3,
        p99_ms=q[98] * 1e3,
        errors=errors,
        command=f"httpx load generator in-process: {connections} concurrent, {seconds:g} s",
    )


# -- in-process (ASGI, no HTTP) -----------------------------------------------------
class AsgiClient:
    """Calls an ASGI app directly, keeping its session cookie like a browser."""

    def __init__(self, app: Any, *, keep: bool = True) -> None:
        self.app = app
        self.keep = keep
        self.cookie: bytes | None = None
        self.status = 0

    async def get(self, path: str, cookie: bytes | None = None) -> int:
        headers = [(b"host", b"bench.local")]
        c = cookie if cookie is not None else self.cookie
        if c:
            headers.append((b"cookie", c))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                if self.keep:
                    for k, v in message.get("headers", ()):
                        if k == b"set-cookie":
                            self.cookie = v.split(b";", 1)[0]

        await self.app(scope, receive, send)
        return self.status


def _batch(fn: Callable[[], Awaitable[int]], n: int) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        for _ in range(n):
            status = await fn()
            if status != 200:
                raise RuntimeError(f"status {status}")

    return run


def _forged_cookie_fn(kind: str, prefixes: list[str]) -> Callable[[], bytes]:
    if kind == "donjon":
        encoded = [p.encode() for p in prefixes]

        def donjon_cookie() -> bytes:
            return (
                b"donjon="
                + encoded[secrets.randbelow(len(encoded))]
                + secrets.token_hex(32).encode()
            )

        return donjon_cookie

    def starsessions_cookie() -> bytes:
        return b"session=" + secrets.token_hex(16).encode()

    return starsessions_cookie


@dataclass
class InProc:
    loop: asyncio.AbstractEventLoop
    clients: dict[str, AsgiClient]
    closers: list[Callable[[], Awaitable[None]]]
    redis_store: Any
    redis_conn: Any


@contextlib.contextmanager
def _inproc_apps(redis_url: str, sqlite_path: str) -> Iterator[InProc]:
    from apps import bare, donjon_app, starlette_cookie, starsessions_redis
    from redis.asyncio import Redis

    loop = asyncio.new_event_loop()
    closers: list[Callable[[], Awaitable[None]]] = []
    try:
        conn = Redis.from_url(redis_url)
        closers.append(conn.aclose)
        stores = {
            k: donjon_app.make_store(k, sqlite_path=sqlite_path, redis_url=redis_url)
            for k in ("memory", "sqlite", "redis")
        }
        for s in stores.values():
            if asyncio.iscoroutinefunction(s.close):
                closers.append(s.close)
        clients = {
            "bare": AsgiClient(bare.build()),
            "starlette": AsgiClient(starlette_cookie.build()),
            "starsessions": AsgiClient(starsessions_redis.build(redis_url, connection=conn)),
            "donjon_memory": AsgiClient(donjon_app.build(stores["memory"])),
            "donjon_sqlite": AsgiClient(donjon_app.build(stores["sqlite"])),
            "donjon_redis": AsgiClient(donjon_app.build(stores["redis"])),
            "donjon_redis_flood": AsgiClient(donjon_app.build(stores["redis"], guard="high")),
        }
        yield InProc(loop, clients, closers, stores["redis"], conn)
    finally:
        for close in closers:
            with contextlib.suppress(Exception):
                loop.run_until_complete(close())
        loop.close()


def _inproc_benches(ip: InProc, prefixes: list[str]) -> list[Bench]:
    ru = ip.loop.run_until_complete
    benches = []
    for key, client in ip.clients.items():
        if key == "donjon_redis_flood":
            continue
        # Sanity: the counter goes up through the kept cookie.
        first = ru(client.get("/count"))
        second = ru(client.get("/count"))
        assert first == second == 200, (key, first, second)
        run = _batch(lambda c=client: c.get("/count"), INPROC_BATCH)
        benches.append(Bench(f"count_{key}", key, "ru(run())", {"ru": ru, "run": run}))
    floods = (
        ("bare", "bare", "donjon"),
        ("starsessions", "starsessions", "starsessions"),
        ("donjon_redis", "donjon_redis_flood", "donjon"),
    )
    for key, client_key, kind in floods:
        client = AsgiClient(ip.clients[client_key].app, keep=False)
        make = _forged_cookie_fn(kind, prefixes)
        run = _batch(lambda c=client, m=make: c.get("/peek", m()), INPROC_BATCH)
        benches.append(Bench(f"flood_{key}", key, "ru(run())", {"ru": ru, "run": run}))
    # The same Donjon flood with the verdict log records switched off, to show their share.
    security = logging.getLogger("donjon.security")
    client = AsgiClient(ip.clients["donjon_redis_flood"].app, keep=False)
    make = _forged_cookie_fn("donjon", prefixes)
    inner = _batch(lambda: client.get("/peek", make()), INPROC_BATCH)

    async def nolog() -> None:
        security.setLevel(logging.ERROR)
        try:
            await inner()
        finally:
            security.setLevel(logging.NOTSET)

    benches.append(
        Bench(
            "flood_donjon_redis_nolog", "donjon_redis_nolog", "ru(run())", {"ru": ru, "run": nolog}
        )
    )
    return benches


def _redis_op_benches(ip: InProc) -> list[Bench]:
    """One session's Redis work, Donjon's store against starsessions' GET/SET."""
    import json

    from donjon.stores import Write

    ru = ip.loop.run_until_complete
    store, conn = ip.redis_store, ip.redis_conn
    now = time.time()
    key = "ab" + secrets.token_hex(31)
    fields = {"n": "1", "name": json.dumps("Zoë Example"), "roles": '["editor"]'}
    common = {
        "key": key,
        "session_class": "user",
        "user_id": None,
        "created_at": now,
        "last_seen": now,
        "expires_at": now + 3600,
    }
    assert ru(store.write(Write(fields=fields, create=True, **common)))
    # The hash name as the store's module docstring lays it out (prefix, {shard}, s:, key).
    assert ru(conn.hgetall(f"donjon:{{{key[:2]}}}:s:{key}"))
    update = Write(fields={"n": "2"}, create=False, **common)
    blob = json.dumps(
        {
            **{k: json.loads(v) for k, v in fields.items()},
            "__metadata__": {"lifetime": 43200, "created": now, "last_access": now},
        }
    )
    ru(conn.set("bench:blob", blob, ex=3600))

    def batch(make: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            for _ in range(INPROC_BATCH):
                await make()

        return run

    ops = {
        "redis_get": ("starsessions read: GET of its JSON blob", lambda: conn.get("bench:blob")),
        "redis_set": (
            "starsessions save: SET blob EX",
            lambda: conn.set("bench:blob", blob, ex=3600),
        ),
        "hgetall": (
            "HGETALL of that session's hash with redis-py alone (no Donjon)",
            lambda: conn.hgetall(f"donjon:{{{key[:2]}}}:s:{key}"),
        ),
        "store_load": ("AsyncRedisStore.load (HGETALL, decode)", lambda: store.load(key)),
        "store_write": (
            "AsyncRedisStore.write, one field (EVALSHA)",
            lambda: store.write(update),
        ),
        "redis_ping": ("PING with redis-py (one round trip, the floor)", lambda: conn.ping()),
        "lean_ping": (
            "PING with Donjon's pipelined connection",
            lambda: store.client.execute([("PING",)]),  # type: ignore[union-attr]
        ),
    }
    return [
        Bench(f"op_{k}", label, "ru(run())", {"ru": ru, "run": batch(fn)})
        for k, (label, fn) in ops.items()
    ]


def _profile(
    ip: InProc, fn: Callable[[], Awaitable[int]], requests: int, *, by_own: bool
) -> list[tuple[str, float, float]]:
    """cProfile ``requests`` in-process calls of ``fn``: donjon's functions, redis-py's
    reply parser and the stdlib calls the findings name."""
    ru = ip.loop.run_until_complete
    run = _batch(fn, requests)
    ru(run())  # warm
    prof = cProfile.Profile()
    prof.enable()
    ru(run())
    prof.disable()
    stats = pstats.Stats(prof)
    src = str(Path(donjon.__file__).resolve().parent)
    rows = []
    for (filename, _line, func), (_cc, _nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if filename.startswith(src):
            name = os.path.relpath(filename, Path(src).parent.parent)
        elif func in ("asdict", "replace", "makeRecord", "ip_address"):
            name = f"(stdlib) {os.path.basename(filename)}"
        elif "redis/_parsers" in filename.replace(os.sep, "/"):
            name = f"(redis-py) {os.path.basename(filename)}"
        else:
            continue
        rows.append((f"{name}:{func}", tt / requests * 1e6, ct / requests * 1e6))
    rows.sort(key=lambda r: -(r[1] if by_own else r[2]))
    return rows[:14]


def _profiles(ip: InProc, prefixes: list[str], requests: int) -> dict[str, list[Any]]:
    counter = ip.clients["donjon_redis"]
    flood = AsgiClient(ip.clients["donjon_redis_flood"].app, keep=False)
    make = _forged_cookie_fn("donjon", prefixes)
    return {
        "`GET /count` with a valid cookie, Donjon + AsyncRedisStore, by own time (CPU, "
        "not waiting)": _profile(ip, lambda: counter.get("/count"), requests, by_own=True),
        "`GET /peek` with a forged cookie, Donjon + AsyncRedisStore, by cumulative time": (
            _profile(ip, lambda: flood.get("/peek", make()), requests, by_own=False)
        ),
    }


# -- the section -----------------------------------------------------------------------
def _ratio_at_least(
    section: Section, name: str, num: float, den: float, minimum: float, unit: str
) -> None:
    ratio = num / den if den else 0.0
    section.target(
        name,
        -ratio,
        -minimum,
        f"{num:,.0f} / {den:,.0f} {unit} = {ratio:.2f}{TIMES} (min {minimum:g}{TIMES})",
    )


def _fmt(r: WrkResult) -> tuple[str, str, str, str, str]:
    return (
        f"{r.rps:,.0f}",
        f"{r.p50_ms:.2f}",
        f"{r.p99_ms:.2f}",
        f"{r.requests:,}",
        str(r.errors),
    )


def _http_runs(
    stack: tuple[str, str],
    apps: list[App],
    by_key: dict[str, App],
    tmp: Path,
    prefixes: list[str],
    stats: RedisStats,
    commands: list[str],
    *,
    seconds: float,
    warmup: float,
    rounds: int,
    quick: bool,
    have_wrk: bool,
    server_cpu: str | None,
    load_cpu: str | None,
) -> tuple[dict[str, WrkResult], dict[str, list[WrkResult]], _Calls]:
    """Every HTTP run under one uvicorn stack: best results, all rounds, Redis calls."""
    runs: dict[str, list[WrkResult]] = {}
    redis_calls: _Calls = {}
    loop, parser = stack
    flood_paths = _flood_paths(quick, stack)
    # One server per configuration, all up at once (idle ones cost nothing), so
    # that rounds can alternate between apps: a noisy moment on the machine
    # then spreads over every app instead of skewing one ratio.
    configs = [(a.key, a, {}) for a in apps]
    configs.append(("donjon_redis_high", by_key["donjon_redis"], {"BENCH_GUARD": "high"}))
    configs.append(
        (
            "donjon_redis_nolog",
            by_key["donjon_redis"],
            {"BENCH_GUARD": "high", "BENCH_LOG": "off"},
        )
    )
    servers = {}
    with contextlib.ExitStack() as up:
        for name, app, env in configs:
            srv = up.enter_context(
                uvicorn_server(
                    app.factory, {**app.env, **env}, cpu=server_cpu, loop=loop, http=parser
                )
            )
            _sanity(srv.url, app)
            servers[name] = srv
            commands.append(f"# {name}: {app.label} ({loop}+{parser})\n{srv.shown()}")

        keep = _keep_script(tmp, "/count")
        plan: list[tuple[str, str, str, Path | None, Callable[[], str] | None, int]] = []
        for app in apps:
            plan.append((f"count/{app.key}", app.key, "/count", keep, None, rounds))
        for path in flood_paths:
            for key, server, kind in (
                ("bare", "bare", "donjon"),
                ("minimal", "minimal", "donjon"),
                ("starsessions", "starsessions", "starsessions"),
                ("donjon_redis", "donjon_redis_high", "donjon"),
                ("donjon_redis_nolog", "donjon_redis_nolog", "donjon"),
            ):
                if path == "/count" and key in ("bare", "minimal", "donjon_redis_nolog"):
                    continue
                script = _flood_script(tmp, kind, path, prefixes) if have_wrk else None
                make = _forged_cookie_fn(kind, prefixes)
                plan.append(
                    (
                        f"flood{path}/{key}",
                        server,
                        path,
                        script,
                        lambda m=make: m().decode(),
                        rounds if path == "/peek" else 1,
                    )
                )
        if have_wrk and warmup:
            for srv in servers.values():
                run_wrk(srv.url, keep, seconds=warmup, connections=CONNECTIONS, cpu=load_cpu)
        for r in range(rounds):
            print(f"  round {r + 1}/{rounds}")
            for tag, server, path, script, forged, n_rounds in plan:
                if r >= n_rounds:
                    continue
                url = servers[server].url
                time.sleep(0.3)  # let the previous run's last requests finish
                stats.client.flushdb()
                stats.reset()
                if have_wrk and script is not None:
                    res = run_wrk(
                        url, script, seconds=seconds, connections=CONNECTIONS, cpu=load_cpu
                    )
                else:
                    res = _httpx_load(
                        url, path, seconds=seconds, connections=CONNECTIONS, forged=forged
                    )
                calls, keys = stats.delta()
                if r == 0:
                    commands.append(f"# {tag} -> {server} ({loop}+{parser})\n{res.command}")
                runs.setdefault(tag, []).append(res)
                totals = redis_calls.setdefault(tag, ({}, 0, 0))
                merged = dict(totals[0])
                for c, n in calls.items():
                    merged[c] = merged.get(c, 0) + n
                redis_calls[tag] = (merged, totals[1] + keys, totals[2] + res.requests)
                print(
                    f"    {tag:<30} {res.rps:9,.0f} req/s  p50 {res.p50_ms:6.2f} ms  "
                    f"p99 {res.p99_ms:6.2f} ms  errors {res.errors}"
                )

    http = {tag: max(rs, key=lambda x: x.rps) for tag, rs in runs.items()}
    return http, runs, redis_calls


def _flood_paths(quick: bool, stack: tuple[str, str]) -> list[str]:
    """``/count`` under flood (information only) in the first stack of a full run."""
    return ["/peek"] if quick or stack != STACKS[0] else ["/peek", "/count"]


def _http_tables(
    section: Section,
    stack: str,
    apps: list[App],
    by_key: dict[str, App],
    http: dict[str, WrkResult],
    runs: dict[str, list[WrkResult]],
    redis_calls: _Calls,
    flood_paths: list[str],
) -> None:
    """The ``/count`` and flood tables of one uvicorn stack."""
    rows = []
    bare_rps = http["count/bare"].rps
    for app in apps:
        r = http[f"count/{app.key}"]
        calls, _keys, n = redis_calls[f"count/{app.key}"]
        rows.append(
            (
                app.label,
                *_fmt(r),
                " / ".join(f"{x.rps:,.0f}" for x in runs[f"count/{app.key}"]),
                f"{r.rps / bare_rps:.2f}{TIMES}",
                describe_calls(calls, n) if app.key in ("starsessions", "donjon_redis") else "",
            )
        )
    section.text(f"### `GET /count` over HTTP (read one key, write a counter), {stack}")
    section.table(
        (
            "app",
            "req/s",
            "p50 ms",
            "p99 ms",
            "requests",
            "errors",
            "req/s, each round",
            f"{TIMES} bare",
            "Redis commands per request",
        ),
        rows,
    )
    ceiling = http["count/donjon_memory"].rps / http["count/starsessions"].rps
    section.text(
        f"For scale: Donjon with the in-process memory store reaches {ceiling:.2f}{TIMES} "
        "starsessions+Redis here, the ratio Donjon+Redis would reach if Redis cost "
        "nothing at all. Both Redis apps make one read and one write round trip per "
        "`/count`; Donjon's lead comes from cheaper round trips, not fewer."
    )
    if "count/minimal" in http:
        floor = http["count/minimal"].rps
        section.text(
            f"The reference floor (`apps/minimal.py`: an HMAC-signed id and a dict, "
            f"nothing else) reaches {floor / bare_rps:.2f}{TIMES} bare Starlette here: "
            "about the most a session layer of Donjon's design (signed id, data in a store) "
            f"can reach in pure Python on this stack. Donjon+memory reaches "
            f"{http['count/donjon_memory'].rps / floor:.2f}{TIMES} the floor's throughput, "
            "with the guard, verdict events, timeouts and kill-switch checks on."
        )
    frows = []
    for path in flood_paths:
        base = http.get(f"flood{path}/bare")
        for key in ("bare", "minimal", "starsessions", "donjon_redis", "donjon_redis_nolog"):
            tag = f"flood{path}/{key}"
            if tag not in http:
                continue
            r = http[tag]
            calls, keys, n = redis_calls[tag]
            frows.append(
                (
                    f"`{path}`",
                    _label(by_key, key),
                    *_fmt(r)[:3],
                    f"{r.rps / base.rps:.2f}{TIMES}" if base else "",
                    f"{sum(calls.values()) / n:.3g}",
                    describe_calls(calls, n),
                    f"{keys / n:.3g}",
                )
            )
    section.text(f"### Forged-cookie flood, {stack}")
    section.table(
        (
            "endpoint",
            "app",
            "req/s",
            "p50 ms",
            "p99 ms",
            f"{TIMES} bare (flood)",
            "Redis commands/request",
            "which",
            "new keys/request",
        ),
        frows,
    )


def _http_targets(
    section: Section, stack: str, http: dict[str, WrkResult], redis_calls: _Calls
) -> None:
    """The HTTP targets, checked within one uvicorn stack."""
    _ratio_at_least(
        section,
        f"{stack}: Donjon+memory ≥ {MEMORY_VS_BARE_MIN}{TIMES} bare Starlette (HTTP req/s)",
        http["count/donjon_memory"].rps,
        http["count/bare"].rps,
        MEMORY_VS_BARE_MIN,
        "req/s",
    )
    _ratio_at_least(
        section,
        f"{stack}: Donjon+Redis ≥ {REDIS_VS_STARSESSIONS_MIN:g}{TIMES} starsessions+Redis "
        "(HTTP req/s)",
        http["count/donjon_redis"].rps,
        http["count/starsessions"].rps,
        REDIS_VS_STARSESSIONS_MIN,
        "req/s",
    )
    calls, keys, n = redis_calls["flood/peek/donjon_redis"]
    section.target(
        f"{stack}: flood: Donjon sends 0 Redis commands per request",
        sum(calls.values()) / n,
        0.0,
        f"{sum(calls.values())} commands / {n:,} requests ({describe_calls(calls, n)})",
    )
    section.target(
        f"{stack}: flood: Donjon creates 0 Redis keys per request",
        keys / n,
        0.0,
        f"{keys} new keys / {n:,} requests",
    )
    _ratio_at_least(
        section,
        f"{stack}: flood: Donjon+Redis ≥ {FLOOD_VS_BARE_MIN}{TIMES} bare throughput",
        http["flood/peek/donjon_redis"].rps,
        http["flood/peek/bare"].rps,
        FLOOD_VS_BARE_MIN,
        "req/s",
    )


def run(report: Report, *, quick: bool = False) -> Section:
    """Measure, check the targets and add the adapters section to ``report``."""
    section = report.section(TITLE)
    started = time.perf_counter()
    print(f"[{TITLE}]")
    seconds = 1.0 if quick else 4.0
    warmup = 0.0 if quick else 1.0
    server_cpu, load_cpu = cpu_sets()
    have_wrk = wrk_path() is not None
    if not have_wrk:
        note = (
            "**Note: `wrk` is not installed** (`apt-get install wrk`); the HTTP numbers "
            "below come from an in-process httpx load generator instead, which shares "
            "the machine with the server and is much slower than wrk: compare them only "
            "with each other."
        )
        print("  " + note)
        section.text(note)
    prefixes = _forged_prefixes(PREFIXES)
    commands: list[str] = []
    rounds = 1 if quick else 3
    stacks = [STACKS[0]] + ([STACKS[1]] if _has("uvloop") and _has("httptools") else [])
    # Per stack ("asyncio+h11", ...): best result per run tag, all rounds, Redis calls.
    runs: dict[str, dict[str, list[WrkResult]]] = {}
    http: dict[str, dict[str, WrkResult]] = {}
    redis_calls: dict[str, _Calls] = {}

    with (
        quiet_donjon_logs(),
        redis_server(cpu=int(load_cpu) if load_cpu is not None else None) as redis,
        tempfile.TemporaryDirectory(prefix="donjon-bench-adapters-") as tmpdir,
    ):
        tmp = Path(tmpdir)
        stats = RedisStats(redis.url)
        apps = _apps(redis.url, str(tmp / "sessions.sqlite3"))
        by_key = {a.key: a for a in apps}

        for stack in stacks:
            st = f"{stack[0]}+{stack[1]}"
            print(f"  uvicorn --loop {stack[0]} --http {stack[1]}")
            http_s, runs_s, calls_s = _http_runs(
                stack,
                apps,
                by_key,
                tmp,
                prefixes,
                stats,
                commands,
                seconds=seconds,
                warmup=warmup,
                rounds=rounds,
                quick=quick,
                have_wrk=have_wrk,
                server_cpu=server_cpu,
                load_cpu=load_cpu,
            )
            http[st], runs[st], redis_calls[st] = http_s, runs_s, calls_s

        # 3. in-process per-request cost
        print("  in-process (ASGI, no HTTP):")
        with pinned(load_cpu), _inproc_apps(redis.url, str(tmp / "inproc.sqlite3")) as ip:
            timings = measure_all(_inproc_benches(ip, prefixes), quick=quick)
            stats.client.config_resetstat()
            ops = measure_all(_redis_op_benches(ip), quick=quick)
            server_us = {
                k.removeprefix("cmdstat_"): float(v["usec_per_call"])
                for k, v in stats.client.info("commandstats").items()
            }
            profiles = _profiles(ip, prefixes, 200 if quick else 2000)
        stats.close()

    # -- report -----------------------------------------------------------------------
    shown = " and ".join(f"`--loop {lp} --http {hp}`" for lp, hp in stacks)
    missing = (
        ""
        if len(stacks) == len(STACKS)
        else " (uvloop and httptools are not installed here: only the first stack ran)"
    )
    section.text(
        " ".join(
            f"""
        One uvicorn process per app (`--workers 1 --no-access-log`), for each HTTP
        stack in turn: {shown}{missing}. The first is uvicorn's plain install, whose
        pure-Python HTTP parsing adds a large fixed cost to every request, so every
        ratio to bare Starlette flatters the session layers; the second is
        `uvicorn[standard]`'s (uvloop, httptools), what production installs use: a
        stricter test. All apps of a stack are started at once, each
        pinned to CPU {server_cpu}; wrk (one thread, {CONNECTIONS} connections) pinned to
        CPU {load_cpu}, and redis-server on CPU {load_cpu} too. Every server gets a
        {warmup:g} s warm-up; then {rounds} round(s) of {seconds:g} s runs alternate
        between the apps, and each app's best round (highest req/s, with its
        latencies) is reported, the other rounds alongside. wrk keeps one session per
        thread (the Lua `response` callback stores the Set-Cookie, `request` sends it
        back), so the {CONNECTIONS} connections share one session; the first requests of
        each run create it. Each app is checked first (the counter goes up through the
        cookie). Redis is emptied before each run; commands are `INFO commandstats`
        deltas over all rounds, divided by the requests wrk completed. Donjon's apps use
        the default `Guard()`; their verdict log records go to a `NullHandler` (built,
        not written). The reference floor (`apps/minimal.py`) is not a session
        library but a measuring stick: a pure ASGI middleware that checks an
        HMAC-SHA256 over the cookie's id, looks the id up in a dict and writes the
        changed fields back, and does nothing else (no guard, events, idle timeout,
        epochs or `Cache-Control`); it shows how close to bare Starlette a session
        layer of this design can get in pure Python on each stack. Apps:
        `benchmarks/apps/`.
        """.split()
        )
    )
    section.text(
        "Forged-cookie flood: every request carries a new random cookie: for "
        "starsessions `session=<32 random hex>` (its id format), for Donjon and bare "
        f"Starlette `donjon=<one of {PREFIXES} well-formed token prefixes signed by another "
        "key ring>.<64 random hex>` (verdict FORGED, reason `bad_mac`: the MAC is "
        "computed, the worst case before the store). Donjon's app runs with "
        "`GuardPolicy(threshold=10**9, unknown_threshold=10**9)`, so the single flooding "
        "client is never locked out (with the default guard it would get 429 after 20 "
        "requests; see the guard section). `/peek` reads the session and writes nothing; "
        "`/count` writes a counter, so every app stores something for each anonymous "
        "request (shown for information, no target). Donjon writes a WARNING record for "
        "the first 20 bad cookies of a client in each second (`Events(log_burst=20)`), "
        "then one summary record per second counts the rest; hooks and metrics see every "
        'event. The `/peek` row "verdict log records off" is the same Donjon app with '
        "`donjon.security` at ERROR (no verdict records at all): the share of the verdict "
        "log in the flood (no target)."
    )
    for lp, hp in stacks:
        _http_tables(
            section,
            f"{lp}+{hp}",
            apps,
            by_key,
            http[f"{lp}+{hp}"],
            runs[f"{lp}+{hp}"],
            redis_calls[f"{lp}+{hp}"],
            _flood_paths(quick, (lp, hp)),
        )

    section.text(
        "### In-process per-request cost (ASGI called directly, no HTTP)\n\n"
        f"µs per request, {INPROC_BATCH} requests per timed call; the same app modules, "
        "one event loop, Redis on loopback; the process runs on redis-server's CPU, so a "
        "round trip is CPU work, not an idle CPU waking up. Overhead is the difference to "
        "bare Starlette."
    )
    bare_us = timings["count_bare"].best / INPROC_BATCH
    irows = []
    for key, t in timings.items():
        us = t.best / INPROC_BATCH
        kind = "`/count`, cookie kept" if key.startswith("count_") else "`/peek`, forged cookie"
        base = bare_us if key.startswith("count_") else timings["flood_bare"].best / INPROC_BATCH
        irows.append(
            (
                _label(by_key, t.bench.label),
                kind,
                f"{us:.1f}",
                f"{t.median / INPROC_BATCH:.1f}",
                f"{us - base:+.1f}",
            )
        )
        print(f"  {key:<24} {us:8.1f} µs  overhead {us - base:+8.1f} µs")
    section.table(("app", "request", "µs (min)", "µs (median)", "overhead µs"), irows)
    section.text(
        "One session's Redis work alone, µs per operation on the same loop and connection "
        "pools (the session holds three fields; starsessions' blob is the same data as JSON; "
        "the server's own time per command is `INFO commandstats` `usec_per_call`, "
        "including the commands a script runs for `EVALSHA`). starsessions and the plain "
        "rows use redis-py's asyncio client; `AsyncRedisStore.from_url` uses Donjon's own "
        "pipelined connection (`donjon.stores._resp`). Both parse replies "
        + ("with hiredis" if _has("hiredis") else "in pure Python (hiredis is not installed)")
        + ": a hash's every field and value is a bulk string of its own."
    )
    op_cmd = {
        "op_redis_get": "get",
        "op_redis_set": "set",
        "op_hgetall": "hgetall",
        "op_store_load": "hgetall",
        "op_store_write": "evalsha",
        "op_redis_ping": "ping",
        "op_lean_ping": "ping",
    }
    section.table(
        ("operation", "µs (min)", "µs (median)", "command", "µs inside redis-server"),
        [
            (
                t.bench.label,
                f"{t.best / INPROC_BATCH:.1f}",
                f"{t.median / INPROC_BATCH:.1f}",
                op_cmd[k].upper(),
                f"{server_us.get(op_cmd[k], 0.0):.1f}",
            )
            for k, t in ops.items()
        ],
    )
    for t in ops.values():
        print(f"  {t.bench.label:<48} {t.best / INPROC_BATCH:8.1f} µs")

    # -- targets --------------------------------------------------------------------------
    errors = 0
    for lp, hp in stacks:
        st = f"{lp}+{hp}"
        _http_targets(section, st, http[st], redis_calls[st])
        errors += sum(r.errors for r in http[st].values())
    section.target(
        "no HTTP errors in any run", float(errors), 0.0, f"{errors} non-2xx or socket errors"
    )
    section.targets_table()

    section.text(
        "### Where Donjon spends its time (cProfile, in-process)\n\n"
        "Donjon's functions, redis-py's reply parser and the stdlib calls that matter, "
        "per request: own time (the function's own code) and cumulative time (with its "
        "callees, and for coroutines the time spent waiting, so rows nest). cProfile "
        "inflates every Python call several times over: read it for proportions; the "
        "µs tables above are the real costs."
    )
    for title, rows_ in profiles.items():
        section.text(f"{title}:")
        section.table(
            ("function", "cumulative µs/request", "own µs/request"),
            [(f"`{f}`", f"{ct:.1f}", f"{tt:.1f}") for f, tt, ct in rows_],
        )

    section.text(
        "### Commands\n\n```\n" + "\n".join(commands) + "\n```\n\nwrk scripts (`/count` "
        "shown; the flood scripts build the cookie as described above):\n\n```lua\n"
        + KEEP_LUA.format(path="/count")
        + "```"
    )
    section.seconds = time.perf_counter() - started
    section.text(f"Section run time: {section.seconds:.1f} s.")
    return section


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _label(by_key: dict[str, App], key: str) -> str:
    if key == "donjon_redis_nolog":
        return "Donjon + AsyncRedisStore, verdict log records off (`donjon.security` at ERROR)"
    return by_key[key].label


def _sanity(url: str, app: App) -> None:
    """Check the app before loading it: the counter must go up through the cookie."""
    import httpx

    with httpx.Client(base_url=url, timeout=5.0) as client:
        got = [client.get("/count").json()["n"] for _ in range(3)]
        if app.key != "bare":
            assert got == [1, 2, 3], (app.key, got)
        r = client.get(
            "/peek", headers={"Cookie": f"{app.cookie or 'x'}=forged-{secrets.token_hex(8)}"}
        )
        assert r.status_code == 200, (app.key, r.status_code)


def main(argv: list[str] | None = None) -> int:
    return section_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
