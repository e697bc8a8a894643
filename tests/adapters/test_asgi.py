"""The pure ASGI middleware, and the behaviour every ASGI framework shares.

:class:`AppSuite` is the contract of the example apps (Starlette, FastAPI,
Litestar): each framework's test module subclasses it with its own client.
The tests below it drive :class:`~donjon.adapters.asgi.SessionMiddleware`
around a bare ASGI app.
"""

from __future__ import annotations

import importlib
import json
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from types import ModuleType
from typing import Any, ClassVar

import httpx
import pytest

from donjon.adapters import Proxy
from donjon.adapters._cookies import MAX_COOKIE_HEADER
from donjon.adapters.asgi import Message, Scope, SessionMiddleware
from donjon.config import CookiePolicy, Timeouts
from donjon.core import KeyRing, Verdict
from donjon.engine import AsyncEngine
from donjon.engine._logic import MOVED_GRACE
from donjon.errors import ConfigurationError, StoreUnavailable
from donjon.events import VerdictEvent
from donjon.session import Session
from donjon.stores import MemoryStore, Record, SessionInfo, Write
from donjon.testing import FrozenClock

NAME = "donjon"
"""The cookie name with ``CookiePolicy(secure=False)`` (no prefix)."""


# -- helpers shared with the framework tests ------------------------------------


class FlakyStore:
    """An async store over :class:`MemoryStore` that can be taken down.

    While ``down`` is true every call raises :class:`StoreUnavailable`, as a
    real store does when its server is unreachable.
    """

    def __init__(self, clock: FrozenClock) -> None:
        self.inner = MemoryStore(clock=clock)
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("test store is down")

    async def load(self, key: str) -> Record | None:
        self._check()
        return self.inner.load(key)

    async def write(self, write: Write) -> bool:
        self._check()
        return self.inner.write(write)

    async def delete(self, key: str) -> bool:
        self._check()
        return self.inner.delete(key)

    async def touch(self, key: str, *, last_seen: float, expires_at: float) -> None:
        self._check()
        self.inner.touch(key, last_seen=last_seen, expires_at=expires_at)

    async def sessions_of(self, user_id: str) -> list[SessionInfo]:
        self._check()
        return self.inner.sessions_of(user_id)

    async def revoke_user(self, user_id: str) -> int:
        self._check()
        return self.inner.revoke_user(user_id)

    async def epochs(self) -> dict[str, float]:
        self._check()
        return self.inner.epochs()

    async def raise_epoch(self, session_class: str, epoch: float) -> float:
        self._check()
        return self.inner.raise_epoch(session_class, epoch)

    async def close(self) -> None:
        self.inner.close()


def make_engine(
    store: FlakyStore,
    clock: FrozenClock,
    cookie: CookiePolicy | None = None,
    **kwargs: Any,
) -> AsyncEngine:
    """An engine on the test store and clock; plain-HTTP cookies unless told."""
    return AsyncEngine(
        keyring=KeyRing.generate(["user", "admin"]),
        store=store,
        clock=clock,
        cookie=cookie if cookie is not None else CookiePolicy(secure=False),
        **kwargs,
    )


def load_example(name: str) -> ModuleType:
    """Import ``examples.<name>`` without writing to ``./data``.

    The module builds a module-level ``app`` from the environment when first
    imported; point it at a throw-away folder and the memory store.
    """
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setenv("DONJON_DATA", tmp)
        mp.setenv("DONJON_STORE", "memory")
        mp.setenv("DONJON_COOKIE_SECURE", "0")
        return importlib.import_module(f"examples.{name}")


def set_cookies(response: httpx.Response) -> list[str]:
    """The response's ``Set-Cookie`` header values."""
    return response.headers.get_list("set-cookie")


def issued(response: httpx.Response, name: str = NAME) -> str:
    """The token the response sets (fails when it sets none, or clears it)."""
    [header] = set_cookies(response)
    key, _, rest = header.partition("=")
    assert key == name
    value = rest.split(";", 1)[0]
    assert value
    assert "Max-Age=0" not in header
    return value


def cleared(response: httpx.Response, name: str = NAME) -> bool:
    """Whether the response deletes the session cookie."""
    [header] = set_cookies(response)
    return header.startswith(f"{name}=;") and "Max-Age=0" in header


async def with_cookie(client: httpx.AsyncClient, path: str, header: str) -> httpx.Response:
    """GET ``path`` with exactly ``header`` as the Cookie header (the jar is emptied).

    The header is sent as Latin-1 bytes, so non-ASCII input reaches the app.
    """
    client.cookies.clear()
    return await client.get(path, headers={b"cookie": header.encode("latin-1")})


def fresh_engine(**kwargs: Any) -> AsyncEngine:
    """An engine on its own memory store and frozen clock."""
    clock = FrozenClock()
    return make_engine(FlakyStore(clock), clock, **kwargs)


# -- the contract of the example apps -------------------------------------------


class AppSuite:
    """What every ASGI example app does, whatever its framework.

    Subclasses set :attr:`example` and, when the framework has its own test
    client, override :meth:`client_for`.
    """

    example: ClassVar[str]
    base_url: ClassVar[str] = "http://testserver"

    def client_for(self, app: Any, *, https: bool = False) -> httpx.AsyncClient:
        """The framework's test client for ``app`` (httpx over ASGI by default)."""
        base = self.base_url.replace("http://", "https://") if https else self.base_url
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)

    def create_app(self, engine: AsyncEngine) -> Any:
        """The example app around ``engine``."""
        return load_example(self.example).create_app(engine)

    @pytest.fixture
    def clock(self) -> FrozenClock:
        return FrozenClock()

    @pytest.fixture
    def store(self, clock: FrozenClock) -> FlakyStore:
        return FlakyStore(clock)

    @pytest.fixture
    def engine(self, store: FlakyStore, clock: FrozenClock) -> AsyncEngine:
        return make_engine(store, clock)

    @pytest.fixture
    async def client(self, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
        async with self.client_for(self.create_app(engine)) as client:
            yield client

    async def login(self, client: httpx.AsyncClient, user: str = "ann") -> str:
        response = await client.post("/login", data={"user": user})
        assert response.status_code == 200
        assert response.json() == {"user": user}
        return issued(response)

    # -- the four routes ---------------------------------------------------

    async def test_module_app_is_importable(self) -> None:
        assert load_example(self.example).app is not None

    async def test_count_increments(self, client: httpx.AsyncClient) -> None:
        responses = [await client.get("/count") for _ in range(3)]
        assert [r.json() for r in responses] == [{"n": 1}, {"n": 2}, {"n": 3}]
        issued(responses[0])
        assert responses[0].headers["cache-control"] == "no-store"
        # Not rolling: the cookie is sent once, not on every response.
        assert set_cookies(responses[1]) == set_cookies(responses[2]) == []

    async def test_anonymous_untouched_session_sets_no_cookie(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/whoami")
        assert response.status_code == 200
        assert response.json() == {"user": None, "verdict": "absent"}
        assert set_cookies(response) == []

    async def test_login_regenerates_the_id(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        before = issued(await client.get("/count"))
        after = await self.login(client)
        assert after != before
        assert (await client.get("/whoami")).json() == {"user": "ann", "verdict": "valid"}
        assert (await client.get("/count")).json() == {"n": 2}, "data survives the login"
        # The pre-login cookie is dead: a fresh session. For a minute it is
        # known as superseded: not cleared (a request racing the login must
        # not delete the new cookie), not counted by the guard.
        stale = await with_cookie(client, "/whoami", f"{NAME}={before}")
        assert stale.status_code == 200
        assert stale.json() == {"user": None, "verdict": "unknown"}
        assert set_cookies(stale) == []
        clock.advance(MOVED_GRACE + 1)
        stale = await with_cookie(client, "/whoami", f"{NAME}={before}")
        assert stale.json() == {"user": None, "verdict": "unknown"}
        assert cleared(stale), "after the grace period, an unknown cookie is cleared"

    async def test_login_records_the_device(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        response = await client.post(
            "/login",
            data={"user": "dora"},
            headers={b"user-agent": "Testzilla/1.0 (\u00e9)".encode()},
        )
        assert response.status_code == 200
        [info] = await engine.sessions_of("dora")
        assert info.device == "Testzilla/1.0 (??)", "the User-Agent, printable ASCII only"

    async def test_login_without_prior_session(self, client: httpx.AsyncClient) -> None:
        await self.login(client, "bob")
        assert (await client.get("/whoami")).json() == {"user": "bob", "verdict": "valid"}

    async def test_login_needs_a_user(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/login", data={})
        assert response.status_code == 400
        assert response.json() == {"error": "form field 'user' is required"}
        assert set_cookies(response) == []

    @pytest.mark.parametrize("user", ["", "   ", "\t\n"])
    async def test_login_refuses_a_blank_user(self, client: httpx.AsyncClient, user: str) -> None:
        # The same answer as the Flask and Django examples.
        response = await client.post("/login", data={"user": user})
        assert response.status_code == 400
        assert response.json() == {"error": "form field 'user' is required"}
        assert set_cookies(response) == []

    async def test_login_strips_the_user(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/login", data={"user": "  ann "})
        assert response.json() == {"user": "ann"}
        assert (await client.get("/whoami")).json() == {"user": "ann", "verdict": "valid"}

    async def test_logout_clears_the_cookie_and_kills_it(self, client: httpx.AsyncClient) -> None:
        token = await self.login(client)
        response = await client.post("/logout")
        assert response.status_code == 200
        assert cleared(response)
        assert response.headers["cache-control"] == "no-store"
        assert NAME not in client.cookies
        assert (await client.get("/whoami")).json() == {"user": None, "verdict": "absent"}
        replay = await with_cookie(client, "/whoami", f"{NAME}={token}")
        assert replay.json() == {"user": None, "verdict": "unknown"}
        assert cleared(replay)

    async def test_logout_without_session_sends_nothing(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/logout")
        assert response.status_code == 200
        assert set_cookies(response) == []

    # -- bad cookies: a verdict, a fresh session, the cookie cleared, never a 500

    @pytest.mark.parametrize(
        ("make", "verdict"),
        [
            pytest.param(lambda t: "garbage", "malformed", id="garbage"),
            pytest.param(lambda t: "", "absent", id="empty"),
            pytest.param(lambda t: f'"{t}"', "malformed", id="quoted"),
            pytest.param(lambda t: t + "x", "malformed", id="trailing-junk"),
            pytest.param(lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"), "forged", id="mac"),
            pytest.param(lambda t: t.replace(".user.", ".admin.", 1), "forged", id="class"),
            pytest.param(lambda t: "é" * 20, "malformed", id="non-ascii"),
        ],
    )
    async def test_bad_cookie_gives_a_fresh_session(
        self, client: httpx.AsyncClient, make: Callable[[str], str], verdict: str
    ) -> None:
        token = await self.login(client)
        response = await with_cookie(client, "/whoami", f"{NAME}={make(token)}")
        assert response.status_code == 200
        assert response.json() == {"user": None, "verdict": verdict}
        assert cleared(response)
        assert (await client.get("/count")).json() == {"n": 1}

    async def test_cookie_from_another_key_ring_is_forged(
        self, client: httpx.AsyncClient, store: FlakyStore, clock: FrozenClock
    ) -> None:
        async with self.client_for(self.create_app(make_engine(store, clock))) as other:
            token = await self.login(other)
        response = await with_cookie(client, "/whoami", f"{NAME}={token}")
        assert response.json() == {"user": None, "verdict": "forged"}
        assert cleared(response)

    @pytest.mark.parametrize(
        ("seconds", "verdict"),
        [(12 * 3600 + 1, "expired"), (31 * 60, "idle_expired")],
    )
    async def test_expired_cookie_gives_a_fresh_session(
        self, client: httpx.AsyncClient, clock: FrozenClock, seconds: float, verdict: str
    ) -> None:
        await self.login(client)
        clock.advance(seconds)
        response = await client.get("/whoami")
        assert response.status_code == 200
        assert response.json() == {"user": None, "verdict": verdict}
        assert cleared(response)

    async def test_duplicate_cookies_first_wins(self, client: httpx.AsyncClient) -> None:
        token = await self.login(client)
        good_first = await with_cookie(client, "/whoami", f"{NAME}={token}; {NAME}=junk")
        assert good_first.json() == {"user": "ann", "verdict": "valid"}
        junk_first = await with_cookie(client, "/whoami", f"{NAME}=junk; {NAME}={token}")
        assert junk_first.json() == {"user": None, "verdict": "malformed"}
        assert cleared(junk_first)

    async def test_broken_syntax_around_a_good_cookie(self, client: httpx.AsyncClient) -> None:
        token = await self.login(client)
        header = f';; {NAME}; =x; a="b;c"; {NAME} = {token} ;;'
        response = await with_cookie(client, "/whoami", header)
        assert response.json() == {"user": "ann", "verdict": "valid"}
        assert set_cookies(response) == []

    async def test_name_without_value_is_absent(self, client: httpx.AsyncClient) -> None:
        response = await with_cookie(client, "/whoami", f"{NAME}; other=1")
        assert response.json() == {"user": None, "verdict": "absent"}
        assert set_cookies(response) == []

    async def test_huge_cookie_header_keeps_a_valid_session(
        self, client: httpx.AsyncClient
    ) -> None:
        """Many other cookies must not log the user out (nor, repeated, lock them out)."""
        token = await self.login(client)
        header = f"{NAME}={token}; pad={'x' * MAX_COOKIE_HEADER}"
        for _ in range(25):
            response = await with_cookie(client, "/whoami", header)
            assert response.status_code == 200
            assert response.json() == {"user": "ann", "verdict": "valid"}
            assert set_cookies(response) == []

    # -- the store ---------------------------------------------------------

    async def test_store_down_while_loading_is_503(
        self, client: httpx.AsyncClient, store: FlakyStore
    ) -> None:
        await self.login(client)
        store.down = True
        response = await client.get("/whoami")
        assert response.status_code == 503
        assert response.json() == {"error": "service unavailable"}
        assert response.headers["cache-control"] == "no-store"
        assert set_cookies(response) == []
        store.down = False
        assert (await client.get("/whoami")).json() == {"user": "ann", "verdict": "valid"}

    async def test_store_down_while_saving_is_503(
        self, client: httpx.AsyncClient, store: FlakyStore
    ) -> None:
        store.down = True
        response = await client.get("/count")
        assert response.status_code == 503
        assert response.json() == {"error": "service unavailable"}
        assert set_cookies(response) == []
        store.down = False
        assert (await client.get("/count")).json() == {"n": 1}

    async def test_bad_cookie_costs_no_store_call(
        self, client: httpx.AsyncClient, store: FlakyStore
    ) -> None:
        token = await self.login(client)
        store.down = True  # any store call would now be a 503
        forged = token[:-1] + ("0" if token[-1] != "0" else "1")
        response = await with_cookie(client, "/whoami", f"{NAME}={forged}")
        assert response.status_code == 200
        assert response.json() == {"user": None, "verdict": "forged"}

    # -- cookie attributes -------------------------------------------------

    async def test_default_policy_cookie_attributes(
        self, store: FlakyStore, clock: FrozenClock
    ) -> None:
        engine = make_engine(store, clock, CookiePolicy())
        async with self.client_for(self.create_app(engine), https=True) as client:
            response = await client.get("/count")
            [header] = set_cookies(response)
            name, _, _ = header.partition("=")
            attrs = {
                key.strip().lower(): value
                for key, _, value in (part.partition("=") for part in header.split(";")[1:])
            }
            assert name == "__Host-donjon"
            assert attrs == {
                "path": "/",
                "max-age": str(int(Timeouts().absolute)),
                "secure": "",
                "httponly": "",
                "samesite": "Lax",
            }
            assert response.headers["cache-control"] == "no-store"
            # Over HTTPS the Secure cookie comes back and is valid.
            assert (await client.get("/whoami")).json() == {"user": None, "verdict": "valid"}


# -- the middleware around a bare ASGI app --------------------------------------


async def bare_app(scope: Scope, receive: Any, send: Any) -> None:
    """Sets ``x`` on ``/set``; answers the verdict with its own Cache-Control."""
    session = scope["session"]
    assert isinstance(session, Session)
    if scope["path"] == "/set":
        session["x"] = 1
    body = json.dumps({"verdict": session.verdict.value, "x": session.get("x")}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"cache-control", b"public, max-age=60"),
        (b"x-app", b"kept"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def store(clock: FrozenClock) -> FlakyStore:
    return FlakyStore(clock)


@pytest.fixture
def events() -> list[VerdictEvent]:
    return []


@pytest.fixture
def engine(store: FlakyStore, clock: FrozenClock, events: list[VerdictEvent]) -> AsyncEngine:
    return make_engine(store, clock, events=[events.append])


def bare_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_cache_control_replaced_only_when_a_cookie_is_sent(engine: AsyncEngine) -> None:
    async with bare_client(SessionMiddleware(bare_app, engine=engine)) as client:
        setting = await client.get("/set")
        assert setting.headers.get_list("cache-control") == ["no-store"]
        assert setting.headers["x-app"] == "kept"
        issued(setting)
        reading = await client.get("/")
        assert reading.json() == {"verdict": "valid", "x": 1}
        assert reading.headers["cache-control"] == "public, max-age=60"
        assert set_cookies(reading) == []


async def test_an_app_reusing_its_message_never_sends_a_token_twice(engine: AsyncEngine) -> None:
    start: Message = {"type": "http.response.start", "status": 200, "headers": []}
    body: Message = {"type": "http.response.body", "body": b"ok"}

    async def reusing(scope: Scope, receive: Any, send: Any) -> None:
        if scope["path"] == "/set":
            scope["session"]["x"] = 1
        await send(start)  # the same dict for every response
        await send(body)

    async with bare_client(SessionMiddleware(reusing, engine=engine)) as alice:
        issued(await alice.get("/set"))
    async with bare_client(SessionMiddleware(reusing, engine=engine)) as bob:
        later = await bob.get("/")
    assert set_cookies(later) == [], "alice's token must not reach bob"
    assert start["headers"] == []


async def test_store_down_at_commit_drops_the_app_response(
    engine: AsyncEngine, store: FlakyStore
) -> None:
    store.down = True
    async with bare_client(SessionMiddleware(bare_app, engine=engine)) as client:
        response = await client.get("/set")
    assert response.status_code == 503
    assert response.content == b'{"error":"service unavailable"}'
    assert response.headers["content-length"] == str(len(response.content))
    assert "x-app" not in response.headers


async def test_non_http_scopes_pass_through(engine: AsyncEngine) -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(scope)

    async def nothing() -> Message:
        raise AssertionError("not called")

    async def no_send(message: Message) -> None:
        raise AssertionError("not called")

    await SessionMiddleware(app, engine=engine)({"type": "lifespan"}, nothing, no_send)
    assert seen == [{"type": "lifespan"}]


def _locked_out_engine() -> AsyncEngine:
    """A real engine whose guard has already locked out 1.2.3.4 (and 127.0.0.1)."""
    from donjon import KeyRing
    from donjon.guard import Guard, GuardPolicy
    from donjon.stores import MemoryStore

    guard = Guard(GuardPolicy(threshold=1, lockout=2.2))
    for client in ("1.2.3.4", "127.0.0.1"):
        guard.record(client, Verdict.FORGED, time.time())
    return AsyncEngine(
        keyring=KeyRing.generate(),
        store=MemoryStore(),
        cookie=CookiePolicy(secure=False),
        guard=guard,
    )


async def test_locked_out_is_429_with_retry_after() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise AssertionError("the app is not reached")

    middleware = SessionMiddleware(app, engine=_locked_out_engine())
    async with bare_client(middleware) as client:
        response = await client.get("/", headers={"cookie": f"{NAME}=x"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json() == {"error": "too many requests"}
    assert set_cookies(response) == []


async def _websocket(middleware: SessionMiddleware, cookie: str | None = None) -> list[Message]:
    sent: list[Message] = []
    headers = [(b"cookie", cookie.encode())] if cookie else []
    scope = {"type": "websocket", "path": "/ws", "headers": headers, "client": ("1.2.3.4", 5)}

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    return sent


async def test_websocket_gets_the_session_read_only(engine: AsyncEngine, store: FlakyStore) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        session = scope["session"]
        session["ignored"] = True
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": session.verdict.value})

    sent = await _websocket(SessionMiddleware(app, engine=engine), f"{NAME}=garbage")
    assert sent == [
        {"type": "websocket.accept"},
        {"type": "websocket.send", "text": "malformed"},
    ]
    assert len(store.inner) == 0, "nothing a socket handler changes is saved"


async def test_websocket_store_down_closes_1013(engine: AsyncEngine, store: FlakyStore) -> None:
    async with bare_client(SessionMiddleware(bare_app, engine=engine)) as client:
        token = issued(await client.get("/set"))
    store.down = True

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise AssertionError("the app is not reached")

    sent = await _websocket(SessionMiddleware(app, engine=engine), f"{NAME}={token}")
    assert sent == [{"type": "websocket.close", "code": 1013}]


async def test_websocket_locked_out_closes_1008() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise AssertionError("the app is not reached")

    middleware = SessionMiddleware(app, engine=_locked_out_engine())
    assert await _websocket(middleware) == [{"type": "websocket.close", "code": 1008}]


async def test_binding_to_request_context(engine: AsyncEngine) -> None:
    def user_agent(scope: Scope) -> bytes | None:
        return dict(scope["headers"]).get(b"user-agent")

    app = SessionMiddleware(bare_app, engine=engine, binding=user_agent)
    async with bare_client(app) as client:
        client.headers["user-agent"] = "browser/1"
        await client.get("/set")
        assert (await client.get("/")).json()["verdict"] == "valid"
        client.headers["user-agent"] = "curl/8"
        response = await client.get("/")
    assert response.json() == {"verdict": "binding_mismatch", "x": None}
    assert cleared(response)


@pytest.mark.parametrize(
    ("proxy", "forwarded", "client"),
    [
        (None, "203.0.113.9", "127.0.0.1"),
        (Proxy(trusted=["10.0.0.0/8"]), "203.0.113.9", "127.0.0.1"),
        (Proxy(trusted=["127.0.0.1"]), "198.51.100.1, 203.0.113.9", "203.0.113.9"),
    ],
)
async def test_client_key_honours_only_trusted_proxies(
    engine: AsyncEngine,
    events: list[VerdictEvent],
    proxy: Proxy | None,
    forwarded: str,
    client: str,
) -> None:
    # httpx's ASGI transport presents the peer as 127.0.0.1.
    app = SessionMiddleware(bare_app, engine=engine, proxy=proxy)
    async with bare_client(app) as http:
        await http.get("/", headers={"x-forwarded-for": forwarded, "cookie": f"{NAME}=bad"})
    assert [(e.verdict, e.client) for e in events] == [(Verdict.MALFORMED, client)]


def test_client_of_without_peer(engine: AsyncEngine) -> None:
    middleware = SessionMiddleware(bare_app, engine=engine, proxy=Proxy(trusted=["10.0.0.1"]))
    assert middleware.client_of({"type": "http", "headers": []}) is None


def test_same_site_none_needs_secure() -> None:
    with pytest.raises(ConfigurationError, match="same_site='none' requires secure"):
        CookiePolicy(same_site="none", secure=False)
    header = CookiePolicy(same_site="none").header("t", max_age=10)
    assert header.endswith("; Secure; HttpOnly; SameSite=None")


def test_sync_engine_is_refused() -> None:
    from donjon.engine import Engine

    engine = Engine(keyring=KeyRing.generate(), store=MemoryStore())
    with pytest.raises(TypeError, match="needs an AsyncEngine"):
        SessionMiddleware(bare_app, engine=engine)  # type: ignore[arg-type]


# -- requests without a peer address (a server on a Unix socket) ----------------


async def _status(app: Any, headers: list[tuple[bytes, bytes]], client: Any = "absent") -> int:
    """One GET straight through ASGI; ``client`` absent from the scope by default."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    if client != "absent":
        scope["client"] = client
    await app(scope, receive, send)
    status: int = sent[0]["status"]
    return status


FORGED = (b"cookie", f"{NAME}=v1.user.k1.AAAA.BBBB".encode())


def _adapter_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "donjon.adapters"]


async def test_without_a_peer_address_the_guard_warns_once_per_middleware(
    engine: AsyncEngine, events: list[VerdictEvent], caplog: pytest.LogCaptureFixture
) -> None:
    middleware = SessionMiddleware(bare_app, engine=engine)
    with caplog.at_level(logging.WARNING, logger="donjon.adapters"):
        for client in ("absent", None, "absent"):
            assert await _status(middleware, [FORGED], client) == 200
    [record] = _adapter_records(caplog)
    assert "trust_unix_socket=True" in record.getMessage()
    assert [e.client for e in events] == [None, None, None]
    other = SessionMiddleware(bare_app, engine=engine, proxy=Proxy(trusted=["10.0.0.0/8"]))
    with caplog.at_level(logging.WARNING, logger="donjon.adapters"):
        await _status(other, [FORGED])
    assert len(_adapter_records(caplog)) == 2


async def test_a_trusted_unix_socket_proxy_gives_the_forwarded_client(
    engine: AsyncEngine, events: list[VerdictEvent], caplog: pytest.LogCaptureFixture
) -> None:
    middleware = SessionMiddleware(bare_app, engine=engine, proxy=Proxy(trust_unix_socket=True))
    attacker = [FORGED, (b"x-forwarded-for", b"198.51.100.1, 203.0.113.9")]
    with caplog.at_level(logging.WARNING, logger="donjon.adapters"):
        statuses = [await _status(middleware, attacker) for _ in range(25)]
    assert 429 in statuses, "forged cookies through the socket now lead to a lock-out"
    assert events[0].client == "203.0.113.9"
    innocent = [(b"x-forwarded-for", b"192.0.2.8")]
    assert await _status(middleware, innocent) == 200
    assert _adapter_records(caplog) == []


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("::ffff:10.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("10.0.0.1", "203.0.113.9:5555", "203.0.113.9"),
        ("10.0.0.1", "[2001:db8::1]:443", "2001:db8::/64"),  # the guard keys IPv6 by /64
        ("::ffff:10.0.0.1", "203.0.113.9, ::ffff:10.0.0.2", "203.0.113.9"),
    ],
)
async def test_mapped_peers_and_ports_in_forwarded_for(
    engine: AsyncEngine, events: list[VerdictEvent], peer: str, forwarded: str, client: str
) -> None:
    middleware = SessionMiddleware(bare_app, engine=engine, proxy=Proxy(trusted=["10.0.0.0/8"]))
    await _status(middleware, [FORGED, (b"x-forwarded-for", forwarded.encode())], (peer, 1))
    assert [e.client for e in events] == [client]
