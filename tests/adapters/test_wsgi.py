"""The WSGI middleware, around a bare WSGI app, through werkzeug's test client."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
from werkzeug.test import Client, TestResponse

from donjon import KeyRing, TokenCodec, Verdict
from donjon.adapters import Proxy
from donjon.adapters.wsgi import ENVIRON_KEY, SessionMiddleware, get_session
from donjon.config import CookiePolicy
from donjon.engine import AsyncEngine, Engine
from donjon.session import Session
from donjon.stores import MemoryStore
from donjon.testing import FrozenClock

from ._wsgi_http import FlakyStore, cookie_attributes, make_engine

NAME = "donjon"  # the cookie's name with CookiePolicy(secure=False)
OPAQUE_503 = {"error": "service unavailable"}


def bare_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The four example routes, written against WSGI alone."""
    session = get_session(environ)
    path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
    body: dict[str, Any]
    if path == "/count":
        session["n"] = session.get("n", 0) + 1
        body = {"n": session["n"]}
    elif path == "/login" and method == "POST":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        form = parse_qs(environ["wsgi.input"].read(size).decode())
        session.login(form["user"][0])
        body = {"user": form["user"][0]}
    elif path == "/logout" and method == "POST":
        session.destroy()
        body = {"user": None}
    elif path == "/whoami":
        body = {"user": session.user_id, "verdict": session.verdict.value}
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    data = json.dumps(body).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


@pytest.fixture
def engine_store() -> tuple[Engine, FlakyStore]:
    return make_engine()


@pytest.fixture
def engine(engine_store: tuple[Engine, FlakyStore]) -> Engine:
    return engine_store[0]


@pytest.fixture
def store(engine_store: tuple[Engine, FlakyStore]) -> FlakyStore:
    return engine_store[1]


@pytest.fixture
def client(engine: Engine) -> Client:
    return Client(SessionMiddleware(bare_app, engine=engine))


def set_cookies(resp: TestResponse) -> list[str]:
    return resp.headers.getlist("Set-Cookie")


def token_of(resp: TestResponse) -> str:
    (header,) = set_cookies(resp)
    name, value, _ = cookie_attributes(header)
    assert name == NAME
    assert value
    return value


def with_cookie(engine: Engine, path: str, token: str, method: str = "GET") -> TestResponse:
    """One request carrying ``token``, from a client with no cookie jar."""
    bare = Client(SessionMiddleware(bare_app, engine=engine), use_cookies=False)
    return bare.open(path, method=method, headers={"Cookie": f"{NAME}={token}"})


# -- the four routes ------------------------------------------------------
def test_count_increments_and_sets_the_cookie_once(client: Client) -> None:
    first = client.get("/count")
    assert first.json == {"n": 1}
    assert len(set_cookies(first)) == 1
    assert first.headers["Cache-Control"] == "no-store"
    for n in (2, 3):
        resp = client.get("/count")
        assert resp.json == {"n": n}
        assert set_cookies(resp) == []  # not rolling: nothing new to say
        assert "Cache-Control" not in resp.headers


def test_whoami_before_and_after_login(client: Client) -> None:
    assert client.get("/whoami").json == {"user": None, "verdict": "absent"}
    resp = client.post("/login", data={"user": "alice"})
    assert resp.json == {"user": "alice"}
    assert client.get("/whoami").json == {"user": "alice", "verdict": "valid"}


def test_login_regenerates_the_id(client: Client, engine: Engine) -> None:
    before = token_of(client.get("/count"))
    after = token_of(client.post("/login", data={"user": "alice"}))
    assert after != before
    # The data survives the regeneration.
    assert client.get("/count").json == {"n": 2}
    # The pre-login cookie is dead: a fresh session; superseded moments ago,
    # it is not cleared (a request racing the login must not delete the new one).
    old = with_cookie(engine, "/whoami", before)
    assert old.json == {"user": None, "verdict": "unknown"}
    assert set_cookies(old) == []


def test_login_records_the_device(client: Client, engine: Engine) -> None:
    client.post("/login", data={"user": "dora"}, headers={"User-Agent": "Testzilla/1.0"})
    [info] = engine.sessions_of("dora")
    assert info.device == "Testzilla/1.0"


def test_logout_clears_the_cookie_and_kills_the_old_one(client: Client, engine: Engine) -> None:
    token = token_of(client.post("/login", data={"user": "alice"}))
    resp = client.post("/logout")
    (cleared,) = set_cookies(resp)
    name, value, attrs = cookie_attributes(cleared)
    assert (name, value) == (NAME, "")
    assert "max-age=0" in attrs
    assert resp.headers["Cache-Control"] == "no-store"
    assert client.get_cookie(NAME) is None
    assert client.get("/whoami").json == {"user": None, "verdict": "absent"}
    assert with_cookie(engine, "/whoami", token).json == {"user": None, "verdict": "unknown"}


# -- bad cookies ----------------------------------------------------------
def forged_token() -> str:
    """A well-formed token signed with a key the server does not have."""
    other = TokenCodec(KeyRing.generate(["user"]), clock=FrozenClock())
    return other.issue(session_class="user", ttl=3600)


@pytest.mark.parametrize(
    ("token", "verdict"),
    [
        ("garbage", "malformed"),
        ("", "absent"),
        ("v1." + "A" * 5000, "malformed"),
        ("A" * 20_000, "malformed"),  # over MAX_COOKIE_HEADER: found, too long a token
        (None, "forged"),
    ],
    ids=["garbage", "empty", "long", "header-too-large", "forged"],
)
def test_bad_cookie_gives_a_fresh_session_and_is_cleared(
    engine: Engine, store: FlakyStore, token: str | None, verdict: str
) -> None:
    value = forged_token() if token is None else token
    resp = with_cookie(engine, "/whoami", value)
    assert resp.status_code == 200
    assert resp.json == {"user": None, "verdict": verdict}
    (cleared,) = set_cookies(resp)
    assert cookie_attributes(cleared)[1] == ""
    assert "max-age=0" in cookie_attributes(cleared)[2]
    # Steps 1-6 of the pipeline never touch the store.
    assert store.calls == []


def test_bad_cookie_then_writing_issues_a_new_session(engine: Engine) -> None:
    resp = with_cookie(engine, "/count", "garbage")
    assert resp.json == {"n": 1}
    (header,) = set_cookies(resp)
    assert cookie_attributes(header)[1] not in ("", "garbage")


def test_untouched_new_session_sets_no_cookie(client: Client, store: FlakyStore) -> None:
    resp = client.get("/whoami")
    assert resp.status_code == 200
    assert set_cookies(resp) == []
    assert "Cache-Control" not in resp.headers
    assert store.calls == []


# -- store down ------------------------------------------------------------
def test_store_down_while_loading_is_503(engine: Engine, store: FlakyStore) -> None:
    called: list[str] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        called.append(environ["PATH_INFO"])
        return bare_app(environ, start_response)

    client = Client(SessionMiddleware(app, engine=engine))
    client.get("/count")
    store.go_down()
    resp = client.get("/whoami")
    assert resp.status_code == 503
    assert resp.json == OPAQUE_503
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Cache-Control"] == "no-store"
    assert set_cookies(resp) == []
    assert called == ["/count"]
    # Back up: the same cookie works again.
    store.fail.clear()
    assert client.get("/count").json == {"n": 2}


def test_store_down_does_not_matter_without_a_valid_cookie(
    client: Client, store: FlakyStore
) -> None:
    store.go_down()
    assert client.get("/whoami").json == {"user": None, "verdict": "absent"}


class TrackedBody:
    """An app iterable that records whether it was closed."""

    def __init__(self) -> None:
        self.closed = False
        self.iterated = False

    def __iter__(self) -> Iterator[bytes]:
        self.iterated = True
        yield b"secret page"

    def close(self) -> None:
        self.closed = True


def test_commit_failure_is_503_and_closes_the_app_iterable(
    engine: Engine, store: FlakyStore
) -> None:
    body = TrackedBody()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        get_session(environ)["n"] = 1
        start_response("200 OK", [("Content-Type", "text/html"), ("X-App", "1")])
        return body

    store.fail.add("write")
    resp = Client(SessionMiddleware(app, engine=engine)).get("/", buffered=True)
    assert resp.status_code == 503
    assert resp.json == OPAQUE_503
    assert "X-App" not in resp.headers
    assert set_cookies(resp) == []
    assert body.closed
    assert not body.iterated


def test_commit_failure_with_a_lazy_start_is_503_and_closes_the_generator(
    engine: Engine, store: FlakyStore
) -> None:
    state = {"closed": False, "after_start": False}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        # A generator: start_response runs only when the server iterates.
        try:
            get_session(environ)["n"] = 1
            start_response("200 OK", [("Content-Type", "text/html")])
            yield b"secret page"
            state["after_start"] = True
            yield b"more"
        finally:
            state["closed"] = True

    store.fail.add("write")
    resp = Client(SessionMiddleware(app, engine=engine)).get("/", buffered=True)
    assert resp.status_code == 503
    assert resp.get_data() == json.dumps(OPAQUE_503, separators=(",", ":")).encode()
    assert state == {"closed": True, "after_start": False}


def test_lazy_start_commits_and_streams(engine: Engine) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        get_session(environ)["n"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"a"
        yield b"b"

    resp = Client(SessionMiddleware(app, engine=engine)).get("/")
    assert resp.get_data() == b"ab"
    assert len(set_cookies(resp)) == 1


def test_locked_out_client_gets_429_and_the_app_is_not_called(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def locked(*args: Any, **kwargs: Any) -> Session:
        session = Session(verdict=Verdict.LOCKED_OUT)
        session.retry_after = 41.2
        return session

    monkeypatch.setattr(engine, "load", locked)
    called = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        called.append(True)
        start_response("200 OK", [])
        return [b""]

    resp = Client(SessionMiddleware(app, engine=engine)).get("/")
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "42"
    assert resp.json == {"error": "too many requests"}
    assert resp.headers["Cache-Control"] == "no-store"
    assert called == []


# -- headers ---------------------------------------------------------------
def test_default_policy_set_cookie_attributes() -> None:
    engine, _ = make_engine(CookiePolicy())
    resp = Client(SessionMiddleware(bare_app, engine=engine)).get(
        "/count", base_url="https://example.com"
    )
    (header,) = set_cookies(resp)
    assert re.fullmatch(
        r"__Host-donjon=[A-Za-z0-9._-]+; Path=/; Max-Age=43200; Secure; HttpOnly; SameSite=Lax",
        header,
    ), header
    assert resp.headers["Cache-Control"] == "no-store"


def test_app_cache_control_is_replaced_when_the_cookie_is_set(engine: Engine) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        get_session(environ)["n"] = 1
        start_response("200 OK", [("cache-control", "public, max-age=600")])
        return [b""]

    resp = Client(SessionMiddleware(app, engine=engine)).get("/")
    assert resp.headers.getlist("Cache-Control") == ["no-store"]


def test_second_start_response_with_exc_info_resends_the_cookie(engine: Engine) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        get_session(environ)["n"] = 1
        start_response("200 OK", [])
        try:
            int("boom")
        except ValueError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        return [b"error page"]

    calls: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        calls.append((status, headers))
        return lambda data: None

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": "127.0.0.1"}
    assert list(SessionMiddleware(app, engine=engine)(environ, start_response)) == [b"error page"]
    assert [status for status, _ in calls] == ["200 OK", "500 Internal Server Error"]
    first, second = ([v for k, v in h if k == "set-cookie"] for _, h in calls)
    assert first == second
    assert len(first) == 1
    assert isinstance(environ[ENVIRON_KEY], Session)


# -- the client key ---------------------------------------------------------
def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(engine: Engine) -> None:
    environ = {"REMOTE_ADDR": "203.0.113.9", "HTTP_X_FORWARDED_FOR": "198.51.100.1"}
    assert SessionMiddleware(bare_app, engine=engine).client_of(environ) == "203.0.113.9"
    trusting = SessionMiddleware(
        bare_app, engine=engine, proxy=Proxy(trusted=("203.0.113.0/24",))
    )
    assert trusting.client_of(environ) == "198.51.100.1"
    assert trusting.client_of({"REMOTE_ADDR": "192.0.2.1", **{
        "HTTP_X_FORWARDED_FOR": "198.51.100.1"}}) == "192.0.2.1"


def test_client_key_reaches_the_verdict_event(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str | None] = []
    engine, _ = make_engine()
    engine.core.events.add(lambda event: seen.append(event.client))
    Client(SessionMiddleware(bare_app, engine=engine)).get(
        "/whoami", environ_overrides={"REMOTE_ADDR": "192.0.2.7"}
    )
    assert seen == ["192.0.2.7"]


def test_binding_is_passed_to_the_engine(engine: Engine) -> None:
    mw = SessionMiddleware(
        bare_app, engine=engine, binding=lambda environ: environ.get("HTTP_X_DEVICE")
    )
    client = Client(mw)
    client.get("/count", headers={"X-Device": "phone"})
    assert client.get("/whoami", headers={"X-Device": "phone"}).json["verdict"] == "valid"
    assert (
        client.get("/whoami", headers={"X-Device": "laptop"}).json["verdict"]
        == "binding_mismatch"
    )


def test_an_async_engine_is_refused_at_start_up() -> None:
    engine = AsyncEngine(keyring=KeyRing.generate(), store=MemoryStore())
    with pytest.raises(TypeError, match="AsyncEngine is for ASGI"):
        SessionMiddleware(bare_app, engine=engine)  # type: ignore[arg-type]


def test_get_session_without_the_middleware_raises() -> None:
    with pytest.raises(LookupError, match="SessionMiddleware"):
        get_session({})


# -- requests without a peer address (a server on a Unix socket) ----------------
FORGED = f"{NAME}=v1.user.k1.AAAA.BBBB"


def _status(app: SessionMiddleware, environ: dict[str, Any]) -> str:
    got: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got.append(status)
        return lambda data: None

    base = {"REQUEST_METHOD": "GET", "PATH_INFO": "/whoami", "HTTP_COOKIE": FORGED}
    for _ in app({**base, **environ}, start_response):
        pass
    return got[0]


def test_without_remote_addr_the_guard_warns_once_per_middleware(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str | None] = []
    engine.core.events.add(lambda event: seen.append(event.client))
    middleware = SessionMiddleware(bare_app, engine=engine)
    with caplog.at_level(logging.WARNING, logger="donjon.adapters"):
        for environ in ({}, {"REMOTE_ADDR": ""}, {}):
            assert _status(middleware, environ) == "200 OK"
    [record] = [r for r in caplog.records if r.name == "donjon.adapters"]
    assert "trust_unix_socket=True" in record.getMessage()
    assert seen == [None, None, None]


def test_a_trusted_unix_socket_proxy_gives_the_forwarded_client(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str | None] = []
    engine.core.events.add(lambda event: seen.append(event.client))
    middleware = SessionMiddleware(bare_app, engine=engine, proxy=Proxy(trust_unix_socket=True))
    attacker = {"REMOTE_ADDR": "", "HTTP_X_FORWARDED_FOR": "198.51.100.1, 203.0.113.9"}
    with caplog.at_level(logging.WARNING, logger="donjon.adapters"):
        statuses = [_status(middleware, attacker) for _ in range(25)]
    assert statuses[-1].startswith("429"), "forged cookies through the socket lead to a lock-out"
    assert seen[0] == "203.0.113.9"
    innocent = {"HTTP_X_FORWARDED_FOR": "192.0.2.8", "HTTP_COOKIE": ""}
    assert _status(middleware, innocent) == "200 OK"
    assert [r for r in caplog.records if r.name == "donjon.adapters"] == []


def test_ipv4_mapped_remote_addr_is_a_trusted_proxy(engine: Engine) -> None:
    middleware = SessionMiddleware(bare_app, engine=engine, proxy=Proxy(trusted=["10.0.0.0/8"]))
    environ = {"REMOTE_ADDR": "::ffff:10.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9:5555"}
    assert middleware.client_of(environ) == "203.0.113.9"
