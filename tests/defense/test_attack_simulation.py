"""An attack simulation: a forged-cookie flood against the Starlette example on real Redis.

The example app (``examples.starlette_app.create_app``) runs in-process behind
``httpx.ASGITransport``, one client per address. An attacker sprays forged,
tampered, guessed and malformed cookies while ordinary users log in and count
from other addresses at the same time. What must hold:

- the attacker is locked out (429 with ``Retry-After``) after exactly
  ``threshold`` attack verdicts, and stays locked out;
- the users never see an error, and their counters are right;
- the attacker's cookies cost the store **zero** commands: counted twice, by
  Redis itself (``INFO commandstats``) and by a counting proxy around the
  store that attributes every call to the request's client address;
- expired (and retired) cookies are ordinary users: they never lock anyone out.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import redis

from donjon import KeyRing, Verdict
from donjon.config import CookiePolicy
from donjon.engine import AsyncEngine
from donjon.guard import Guard, GuardPolicy
from donjon.stores.redis import AsyncRedisStore, RedisStore

pytestmark = pytest.mark.redis

NAME = "donjon"
"""The cookie name with ``CookiePolicy(secure=False)``."""
THRESHOLD = GuardPolicy().threshold
ATTACK_VERDICTS = {Verdict.FORGED.value, Verdict.MALFORMED.value}

CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("client", default=None)
"""The address of the request being served (set by :func:`attributing`)."""

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


# -- the set-up ---------------------------------------------------------------------


def attributing(app: ASGIApp) -> ASGIApp:
    """Wrap an ASGI app so that store calls know which client's request made them."""

    async def wrapped(scope: Scope, receive: Any, send: Any) -> None:
        peer = scope.get("client")
        token = CLIENT.set(peer[0] if peer else None)
        try:
            await app(scope, receive, send)
        finally:
            CLIENT.reset(token)

    return wrapped


class CountingStore:
    """Wraps a sync or async store; records (method, client address) of every call.

    The client comes from :data:`CLIENT`; ``asyncio.to_thread`` copies the
    context, so calls of a blocking store run in threads are attributed too.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str | None]] = []
        self.blocking = getattr(inner, "blocking", True)

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target):
            return target
        if inspect.iscoroutinefunction(target):

            async def acall(*args: Any, **kwargs: Any) -> Any:
                self.calls.append((name, CLIENT.get()))
                return await target(*args, **kwargs)

            return acall

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, CLIENT.get()))
            return target(*args, **kwargs)

        return call

    def by(self, client: str) -> list[str]:
        """The store calls made while serving ``client``."""
        return [name for name, who in self.calls if who == client]


def redis_commands(raw: redis.Redis) -> Counter[str]:
    """Commands Redis has run so far, by name (INFO itself left out)."""
    stats = raw.info("commandstats")
    return Counter(
        {k: int(v["calls"]) for k, v in stats.items() if not k.startswith("cmdstat_info")}
    )


def example_module(tmp_path: Path, name: str) -> ModuleType:
    """Import ``examples.<name>`` without touching ``./data`` (it builds an app on import)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DONJON_DATA", str(tmp_path / "example-data"))
        mp.setenv("DONJON_STORE", "memory")
        mp.setenv("DONJON_COOKIE_SECURE", "0")
        return importlib.import_module(f"examples.{name}")


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client to read Redis's own statistics (connected before any count)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.ping()
    yield client
    client.close()


@pytest.fixture(params=["sync", "async"])
def store(
    request: pytest.FixtureRequest,
    make_redis_store: Callable[..., RedisStore],
    make_async_redis_store: Callable[..., AsyncRedisStore],
) -> CountingStore:
    """A counting proxy around a real RedisStore (run in threads) or AsyncRedisStore."""
    inner = make_redis_store() if request.param == "sync" else make_async_redis_store()
    return CountingStore(inner)


def client_at(app: ASGIApp, ip: str) -> httpx.AsyncClient:
    """An HTTP client whose requests come from ``ip``."""
    transport = httpx.ASGITransport(app=app, client=(ip, 40000 + random.randrange(20000)))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


# -- the attacker's cookies -------------------------------------------------------------


def _b64(n: int) -> str:
    return secrets.token_urlsafe(n)[: (4 * n + 2) // 3]


def attack_cookies(seen: str, rng: random.Random) -> Iterator[str]:
    """An endless, varied stream of cookies no server ever issued.

    ``seen`` is a genuine token (as an attacker may see one of their own):
    tampering with any of its fields must fail too.
    """
    version, cls, kid, sid, iat, exp, bind, mac = seen.split(".")
    now_ms = int(time.time() * 1000)
    makers: list[Callable[[], str]] = [
        # a guessed session id with a made-up MAC
        lambda: f"v1.user.k1.{_b64(32)}.{now_ms}.{now_ms + 3_600_000}._.{secrets.token_hex(32)}",
        # a genuine token with another session id (the MAC no longer matches)
        lambda: ".".join([version, cls, kid, _b64(32), iat, exp, bind, mac]),
        # a genuine token with a flipped MAC digit
        lambda: seen[:-1] + ("0" if seen[-1] != "0" else "1"),
        # a genuine token made to last longer, or promoted to admin
        lambda: ".".join([version, cls, kid, sid, iat, str(int(exp) + 10**9), bind, mac]),
        lambda: ".".join([version, "admin", kid, sid, iat, exp, bind, mac]),
        # keys and classes we never had
        lambda: ".".join([version, cls, "k9", sid, iat, exp, bind, mac]),
        lambda: ".".join([version, "root", kid, sid, iat, exp, bind, mac]),
        # malformed junk
        lambda: secrets.token_urlsafe(rng.randrange(1, 300)),
        lambda: "v2." + seen[3:],
        lambda: seen + ".x",
        lambda: seen[: rng.randrange(1, len(seen) - 1)],
        lambda: "A" * 5000,
        lambda: "....." + "." * rng.randrange(1, 10),
        lambda: ".".join([version, cls, kid, sid, iat, exp, bind, mac[:-2]]),
        lambda: ".".join([version, cls, kid, sid, "12e3", exp, bind, mac]),
    ]
    while True:
        yield rng.choice(makers)()


async def attack(
    app: ASGIApp,
    ip: str,
    seen: str,
    count: int,
    *,
    seed: int,
    log: list[str] | None = None,
    start: asyncio.Event | None = None,
) -> list[httpx.Response]:
    """Send ``count`` attack cookies from ``ip`` to /whoami (once ``start`` is set)."""
    if start is not None:
        await start.wait()
    rng = random.Random(seed)
    cookies = attack_cookies(seen, rng)
    out = []
    async with client_at(app, ip) as client:
        for _ in range(count):
            client.cookies.clear()
            out.append(await client.get("/whoami", headers={"cookie": f"{NAME}={next(cookies)}"}))
            if log is not None:
                log.append(ip)
            await asyncio.sleep(0)  # let the users' requests interleave
    return out


async def ordinary_user(
    app: ASGIApp,
    ip: str,
    name: str,
    clicks: int,
    log: list[str] | None = None,
    working: asyncio.Event | None = None,
) -> list[str]:
    """Log in, count ``clicks`` times, ask who we are; return every problem seen."""
    problems = []
    async with client_at(app, ip) as client:
        r = await client.post("/login", data={"user": name})
        if r.status_code != 200 or r.json() != {"user": name}:
            problems.append(f"{name} login: {r.status_code} {r.text}")
        for n in range(1, clicks + 1):
            r = await client.get("/count")
            if log is not None:
                log.append(ip)
            if working is not None and n == 2:
                working.set()
            if r.status_code != 200 or r.json() != {"n": n}:
                problems.append(f"{name} count {n}: {r.status_code} {r.text}")
        r = await client.get("/whoami")
        if r.status_code != 200 or r.json() != {"user": name, "verdict": "valid"}:
            problems.append(f"{name} whoami: {r.status_code} {r.text}")
    return problems


def check_locked_after_threshold(responses: list[httpx.Response]) -> None:
    """Exactly ``THRESHOLD`` attack verdicts get through, then only 429s."""
    head, tail = responses[:THRESHOLD], responses[THRESHOLD:]
    assert [r.status_code for r in head] == [200] * THRESHOLD
    assert {r.json()["verdict"] for r in head} <= ATTACK_VERDICTS
    assert all(r.json()["user"] is None for r in head)
    statuses = Counter(r.status_code for r in tail)
    assert statuses == {429: len(tail)}, statuses
    for r in tail:
        assert 1 <= int(r.headers["retry-after"]) <= GuardPolicy().lockout
        assert "set-cookie" not in r.headers, "nothing is parsed, so nothing is answered"


# -- the tests ------------------------------------------------------------------------------


async def test_a_forged_cookie_flood_is_locked_out_at_zero_store_cost(
    tmp_path: Path, store: CountingStore, raw: redis.Redis, redis_prefix: str
) -> None:
    create_app = example_module(tmp_path, "starlette_app").create_app
    guard = Guard(GuardPolicy())
    engine = AsyncEngine(
        keyring=KeyRing.generate(["user", "admin"]),
        store=store,
        cookie=CookiePolicy(secure=False),
        guard=guard,
    )
    app = attributing(create_app(engine))
    seen = engine.core.codec.issue(session_class="user", ttl=3600)
    first, second = "203.0.113.7", "198.51.100.66"
    users = [(f"192.0.2.{i + 10}", f"user{i}") for i in range(12)]

    # 1. The first attacker alone: Redis runs not a single command.
    before = redis_commands(raw)
    solo = await attack(app, first, seen, THRESHOLD + 200, seed=1)
    check_locked_after_threshold(solo)
    assert redis_commands(raw) - before == Counter()
    assert store.calls == []

    # 2. A second attacker starts, the first keeps going, users work meanwhile.
    log: list[str] = []
    working = asyncio.Event()
    flood, fresh, *problems = await asyncio.gather(
        attack(app, first, seen, 1500, seed=2, log=log),
        attack(app, second, seen, 1500, seed=3, log=log, start=working),
        *(ordinary_user(app, ip, name, 15, log, working) for ip, name in users),
    )
    # The traffic really was concurrent: the second attacker started once the
    # users were clicking, and was locked out while they still were.
    user_ips = {ip for ip, _ in users}
    clicks = [i for i, who in enumerate(log) if who in user_ips]
    locked_at = [i for i, who in enumerate(log) if who == second][THRESHOLD]
    assert clicks[0] < locked_at < clicks[-1]
    assert [p for p in problems if p] == []
    assert {r.status_code for r in flood} == {429}
    check_locked_after_threshold(fresh)

    # The counting proxy saw the users' calls, and none made for an attacker.
    assert store.by(first) == [] and store.by(second) == []
    assert {who for _, who in store.calls} == {ip for ip, _ in users}
    # The flood created nothing: Redis holds the users' sessions only.
    sessions = list(raw.scan_iter(match=f"{redis_prefix}*:s:*"))
    assert len(sessions) == len(users)
    # Only the attackers were ever counted by the guard.
    now = time.time()
    assert set(guard.locked_clients(now)) == {first, second}
    assert len(guard) == 2 and guard.lockouts == 2


async def test_expired_and_retired_cookies_never_lock_anyone_out(
    tmp_path: Path, store: CountingStore
) -> None:
    create_app = example_module(tmp_path, "starlette_app").create_app
    ring = KeyRing.generate(["user", "admin"])
    guard = Guard(GuardPolicy())
    engine = AsyncEngine(keyring=ring, store=store, cookie=CookiePolicy(secure=False), guard=guard)
    app = attributing(create_app(engine))
    codec = engine.core.codec
    past = time.time() - 7200
    expired = [codec.issue(ttl=60 + i, now=past) for i in range(3 * THRESHOLD)]
    old_kid = ring.current_key_id("user")
    before_rotation = [codec.issue(ttl=3600) for _ in range(3 * THRESHOLD)]
    ring.rotate("user")
    ring.retire("user", old_kid)
    async with client_at(app, "192.0.2.200") as client:
        for token in expired + before_rotation:
            client.cookies.clear()
            r = await client.get("/whoami", headers={"cookie": f"{NAME}={token}"})
            assert r.status_code == 200
            assert r.json()["verdict"] in {Verdict.EXPIRED.value, Verdict.RETIRED.value}
            # the stale cookie is cleared, so a real browser stops sending it
            assert r.headers["set-cookie"].startswith(f"{NAME}=;")
        assert store.calls == [], "rejected before the store"
        # ...and the user simply logs in again.
        r = await client.post("/login", data={"user": "back"})
        assert r.status_code == 200
        assert (await client.get("/count")).json() == {"n": 1}
    assert guard.locked_clients(time.time()) == {}
    assert len(guard) == 0, "ordinary verdicts are not even tracked"


async def test_the_examples_engine_guards_by_default(
    tmp_path: Path, redis_url: str, raw: redis.Redis
) -> None:
    create_app = example_module(tmp_path, "starlette_app").create_app
    config = importlib.import_module("examples._config")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DONJON_DATA", str(tmp_path / "data"))
        mp.setenv("DONJON_STORE", "redis")
        mp.setenv("DONJON_REDIS_URL", redis_url)
        mp.setenv("DONJON_COOKIE_SECURE", "0")
        engine = config.async_engine()
        sync_engine = config.sync_engine()
    try:
        for e in (engine, sync_engine):
            assert isinstance(e.core.guard, Guard)
            assert e.core.guard.policy == GuardPolicy()
        assert isinstance(engine.store, AsyncRedisStore)
        app = create_app(engine)
        seen = engine.core.codec.issue(ttl=3600)
        before = redis_commands(raw)
        check_locked_after_threshold(await attack(app, "203.0.113.99", seen, 60, seed=4))
        assert redis_commands(raw) - before == Counter()
    finally:
        await engine.close()
        sync_engine.close()
