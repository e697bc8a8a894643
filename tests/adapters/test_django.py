"""Django: ``request.session`` is the donjon session; tested through ``django.test.Client``.

Settings are configured once, here (no conftest): the URLconf is this
module's, which serves the example app's views (``examples.django_app``) and
a few test views. Each test gets its own engine with ``override_settings``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.conf import settings

from donjon import KeyRing, Verdict
from donjon.config import CookiePolicy
from donjon.engine import AsyncEngine, Engine
from donjon.session import Session
from donjon.stores import MemoryStore

from ._wsgi_http import FlakyStore, cookie_attributes, make_engine

_DEFAULT_ENGINE, _ = make_engine()

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["testserver"],
        SECRET_KEY="django-test-secret-not-for-production-0123456789abcdef",
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            "donjon.adapters.django.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
        DONJON_ENGINE=_DEFAULT_ENGINE,
    )
    django.setup()

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from examples import django_app  # noqa: E402

from donjon import StoreUnavailable  # noqa: E402
from donjon.adapters.django import (  # noqa: E402
    DjangoSession,
    SessionMiddleware,
    engine_from_settings,
    get_session,
)

NAME = "donjon"
OPAQUE_503 = {"error": "service unavailable"}
STATE: dict[str, Any] = {}


# -- test views (the example's four routes come from examples.django_app) -
def probe(request: HttpRequest) -> HttpResponse:
    s = request.session
    STATE["facade"] = isinstance(s, DjangoSession)
    STATE["same"] = get_session(request) is s.donjon  # type: ignore[attr-defined]
    STATE["verdict"] = s.verdict  # type: ignore[attr-defined]
    return HttpResponse("ok")


def cycle(request: HttpRequest) -> HttpResponse:
    request.session["seen"] = True
    request.session.cycle_key()
    return HttpResponse("cycled")


def flush(request: HttpRequest) -> HttpResponse:
    request.session.flush()
    return HttpResponse("flushed")


def plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse("no session here")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    request.session["n"] = 1

    def body() -> Iterator[bytes]:
        STATE["started"] = True
        try:
            yield b"secret "
            yield b"page"
        finally:
            STATE["closed"] = True

    gen = body()
    next(gen)  # live generator: only close() ends it properly
    response = StreamingHttpResponse(gen)
    response["X-App"] = "1"
    return response


def admin_sessions(request: HttpRequest) -> HttpResponse:
    raise StoreUnavailable("redis is down: connection refused to 10.0.0.5")


def effect(request: HttpRequest) -> HttpResponse:
    STATE.setdefault("ran", []).append(request.path)
    return HttpResponse("done")


urlpatterns = [
    *django_app.urlpatterns,
    path("probe", probe),
    path("cycle", cycle),
    path("flush", flush),
    path("plain", plain),
    path("stream", stream),
    path("admin/sessions", admin_sessions),
    path("effect", effect),
]


@pytest.fixture(autouse=True)
def _clear_state() -> None:
    STATE.clear()


@pytest.fixture
def engine_store() -> Iterator[tuple[Engine, FlakyStore]]:
    engine, store = make_engine()
    with override_settings(DONJON_ENGINE=engine):
        yield engine, store


@pytest.fixture
def engine(engine_store: tuple[Engine, FlakyStore]) -> Engine:
    return engine_store[0]


@pytest.fixture
def store(engine_store: tuple[Engine, FlakyStore]) -> FlakyStore:
    return engine_store[1]


@pytest.fixture
def client(engine: Engine) -> Client:
    return Client()


def morsel(client_or_response: Any) -> Any:
    return client_or_response.cookies.get(NAME)


def token_of(response: Any) -> str:
    m = morsel(response)
    assert m is not None
    assert m.value
    return str(m.value)


def with_cookie(path_: str, token: str) -> Any:
    fresh = Client()
    fresh.cookies[NAME] = token
    return fresh.get(path_)


# -- the four routes ------------------------------------------------------
def test_count_increments(client: Client) -> None:
    first = client.get("/count")
    assert first.json() == {"n": 1}
    assert morsel(first) is not None
    assert first["Cache-Control"] == "no-store"
    assert client.get("/count").json() == {"n": 2}
    third = client.get("/count")
    assert third.json() == {"n": 3}
    assert morsel(third) is None


def test_login_whoami_logout(client: Client) -> None:
    assert client.get("/whoami").json() == {"user": None, "verdict": "absent"}
    login = client.post("/login", {"user": "alice"})
    assert login.json() == {"user": "alice"}
    token = token_of(login)
    assert client.get("/whoami").json() == {"user": "alice", "verdict": "valid"}

    logout = client.post("/logout")
    assert logout.json() == {"user": None}
    cleared = morsel(logout)
    assert cleared.value == ""
    assert cleared["max-age"] == 0
    assert logout["Cache-Control"] == "no-store"
    # Django's test client keeps a deleted cookie as an empty value (a
    # browser drops it); donjon reads an empty value as malformed.
    assert client.get("/whoami").json() == {"user": None, "verdict": "malformed"}
    # The logged-out cookie is dead.
    assert with_cookie("/whoami", token).json() == {"user": None, "verdict": "unknown"}


def test_login_regenerates_the_id(client: Client) -> None:
    before = token_of(client.get("/count"))
    after = token_of(client.post("/login", {"user": "alice"}))
    assert after != before
    assert client.get("/count").json() == {"n": 2}
    old = with_cookie("/whoami", before)
    assert old.json() == {"user": None, "verdict": "unknown"}
    assert morsel(old)["max-age"] == 0


def test_api_posts_are_csrf_exempt(engine: Engine) -> None:
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/login", {"user": "alice"}).status_code == 200
    assert strict.post("/logout").status_code == 200


# -- request.session is the donjon session ---------------------------------
def test_request_session_is_the_donjon_session(client: Client) -> None:
    client.get("/probe")
    assert STATE == {"facade": True, "same": True, "verdict": Verdict.ABSENT}


def test_cycle_key_regenerates_and_flush_destroys(client: Client) -> None:
    before = token_of(client.get("/count"))
    after = token_of(client.get("/cycle"))
    assert after != before
    assert with_cookie("/whoami", before).json()["verdict"] == "unknown"
    assert client.get("/count").json() == {"n": 2}
    flushed = client.get("/flush")
    assert morsel(flushed)["max-age"] == 0
    assert with_cookie("/whoami", after).json()["verdict"] == "unknown"


def test_vary_cookie_when_the_session_is_used(client: Client) -> None:
    assert "Cookie" in client.get("/whoami").get("Vary", "")
    assert not client.get("/plain").has_header("Vary")


# -- bad cookies ----------------------------------------------------------
@pytest.mark.parametrize("token", ["garbage", "v1.user.k1.AAAA.BBBB"])
def test_bad_cookie_gives_a_fresh_session_and_is_cleared(store: FlakyStore, token: str) -> None:
    resp = with_cookie("/whoami", token)
    assert resp.status_code == 200
    assert resp.json()["user"] is None
    assert resp.json()["verdict"] in ("malformed", "forged")
    assert morsel(resp)["max-age"] == 0
    assert store.calls == []


def test_untouched_new_session_sets_no_cookie(client: Client, store: FlakyStore) -> None:
    resp = client.get("/whoami")
    assert morsel(resp) is None
    assert not resp.has_header("Cache-Control")
    assert store.calls == []


# -- edge answers -----------------------------------------------------------
def test_store_down_while_loading_is_503_and_no_view_runs(
    client: Client, store: FlakyStore
) -> None:
    client.get("/effect")
    client.get("/count")
    store.go_down()
    resp = client.get("/effect")
    assert resp.status_code == 503
    assert json.loads(resp.content) == OPAQUE_503
    assert resp["Content-Type"] == "application/json"
    assert resp["Cache-Control"] == "no-store"
    assert morsel(resp) is None
    assert STATE["ran"] == ["/effect"]
    store.fail.clear()
    assert client.get("/count").json() == {"n": 2}


def test_commit_failure_is_503_and_closes_the_streamed_body(
    client: Client, store: FlakyStore
) -> None:
    store.fail.add("write")
    resp = client.get("/stream")
    assert resp.status_code == 503
    assert json.loads(resp.content) == OPAQUE_503
    assert not resp.has_header("X-App")
    assert morsel(resp) is None
    assert STATE == {"started": True, "closed": True}


def test_store_unavailable_from_a_view_is_the_opaque_503(client: Client) -> None:
    resp = client.get("/admin/sessions")
    assert resp.status_code == 503
    assert json.loads(resp.content) == OPAQUE_503
    assert b"10.0.0.5" not in resp.content


def test_locked_out_client_gets_429_and_no_view_runs(
    client: Client, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def locked(*args: Any, **kwargs: Any) -> Session:
        session = Session(verdict=Verdict.LOCKED_OUT)
        session.retry_after = 30
        return session

    monkeypatch.setattr(engine, "load", locked)
    resp = client.get("/effect")
    assert resp.status_code == 429
    assert resp["Retry-After"] == "30"
    assert json.loads(resp.content) == {"error": "too many requests"}
    assert "ran" not in STATE


# -- cookie attributes ------------------------------------------------------
def test_default_policy_cookie_attributes() -> None:
    policy = CookiePolicy()
    engine, _ = make_engine(policy)
    with override_settings(DONJON_ENGINE=engine):
        resp = Client().get("/count", secure=True)
    m = resp.cookies["__Host-donjon"]
    assert m.value
    name, _, expected = cookie_attributes(policy.header(m.value, max_age=43200))
    assert name == "__Host-donjon"
    got = {a for a in cookie_attributes(m.OutputString())[2] if not a.startswith("expires=")}
    # Django adds an Expires matching Max-Age; every policy attribute is there.
    assert got == expected
    assert resp["Cache-Control"] == "no-store"


# -- configuration ------------------------------------------------------------
_FACTORY_CALLS: list[int] = []


def engine_factory() -> Engine:
    _FACTORY_CALLS.append(1)
    return Engine(
        keyring=KeyRing.generate(), store=MemoryStore(), cookie=CookiePolicy(secure=False)
    )


def async_engine_factory() -> AsyncEngine:
    return AsyncEngine(keyring=KeyRing.generate(), store=MemoryStore())


SHARED_ENGINE = Engine(keyring=KeyRing.generate(), store=MemoryStore())


def test_engine_from_a_dotted_factory_is_built_once() -> None:
    _FACTORY_CALLS.clear()
    with override_settings(DONJON_ENGINE=f"{__name__}.engine_factory"):
        first = engine_from_settings()
        assert engine_from_settings() is first
        SessionMiddleware(lambda request: HttpResponse())
        assert _FACTORY_CALLS == [1]
    with override_settings(DONJON_ENGINE=f"{__name__}.engine_factory"):
        assert engine_from_settings() is not first


def test_engine_from_a_dotted_engine() -> None:
    with override_settings(DONJON_ENGINE=f"{__name__}.SHARED_ENGINE"):
        assert engine_from_settings() is SHARED_ENGINE


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "set DONJON_ENGINE"),
        (f"{__name__}.async_engine_factory", "AsyncEngine"),
        (async_engine_factory(), "AsyncEngine"),
        (f"{__name__}.NAME", "not a donjon Engine"),
    ],
)
def test_bad_engine_settings_are_improperly_configured(value: Any, message: str) -> None:
    with override_settings(DONJON_ENGINE=value), pytest.raises(ImproperlyConfigured, match=message):
        engine_from_settings()


def test_trusted_proxies_setting(engine: Engine) -> None:
    seen: list[str | None] = []
    engine.core.events.add(lambda event: seen.append(event.client))
    with override_settings(DONJON_TRUSTED_PROXIES=["127.0.0.1"]):
        Client().get("/whoami", HTTP_X_FORWARDED_FOR="198.51.100.1")
    Client().get("/whoami", HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert seen == ["198.51.100.1", "127.0.0.1"]


def test_get_session_without_the_middleware_raises() -> None:
    with pytest.raises(LookupError, match="MIDDLEWARE"):
        get_session(HttpRequest())
