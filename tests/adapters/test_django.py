"""Django: ``request.session`` is the donjon session; tested through ``django.test.Client``.

Settings are configured once, here (no conftest): the URLconf is this
module's, which serves the example app's views (``examples.django_app``) and
a few test views. Each test gets its own engine with ``override_settings``.
``django.contrib.auth`` is installed, on a SQLite file in a temporary
folder (a file, not ``:memory:``: async views reach it from another thread),
so that its ``login``/``logout``/``auser`` run against the donjon session.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings

from donjon import KeyRing, Verdict
from donjon.config import CookiePolicy
from donjon.core._ids import record_key
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
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(Path(tempfile.mkdtemp(prefix="donjon-django-")) / "db.sqlite3"),
            }
        },
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            "donjon.adapters.django.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
        DONJON_ENGINE=_DEFAULT_ENGINE,
    )
    django.setup()

from django.contrib import auth  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.http import (  # noqa: E402
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.test import AsyncClient, Client, override_settings  # noqa: E402
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


def crash(request: HttpRequest) -> HttpResponse:
    request.session.login("mallory")  # type: ignore[attr-defined]
    raise RuntimeError("boom")


def effect(request: HttpRequest) -> HttpResponse:
    STATE.setdefault("ran", []).append(request.path)
    return HttpResponse("done")


BACKEND = "django.contrib.auth.backends.ModelBackend"


def auth_login(request: HttpRequest, name: str) -> JsonResponse:
    auth.login(request, User.objects.get(username=name), backend=BACKEND)
    return JsonResponse({"user": name, "keys": sorted(request.session.keys())})


def auth_logout(request: HttpRequest) -> JsonResponse:
    auth.logout(request)
    return JsonResponse({})


def auth_who(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"user": request.user.get_username() or None})


async def auth_alogin(request: HttpRequest, name: str) -> JsonResponse:
    await auth.alogin(request, await User.objects.aget(username=name), backend=BACKEND)
    return JsonResponse({"user": name})


async def auth_alogout(request: HttpRequest) -> JsonResponse:
    await auth.alogout(request)
    return JsonResponse({})


async def auth_awho(request: HttpRequest) -> JsonResponse:
    user = await request.auser()  # type: ignore[attr-defined]
    return JsonResponse({"user": user.get_username() or None})


urlpatterns = [
    *django_app.urlpatterns,
    path("auth/login/<name>", auth_login),
    path("auth/logout", auth_logout),
    path("auth/who", auth_who),
    path("auth/alogin/<name>", auth_alogin),
    path("auth/alogout", auth_alogout),
    path("auth/awho", auth_awho),
    path("probe", probe),
    path("cycle", cycle),
    path("flush", flush),
    path("plain", plain),
    path("stream", stream),
    path("admin/sessions", admin_sessions),
    path("effect", effect),
    path("crash", crash),
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
    assert cleared.OutputString().startswith(f"{NAME}=;"), "an empty value, not \"\""
    # Django's test client keeps a deleted cookie as an empty value (a
    # browser drops it): no token, no attack.
    assert client.get("/whoami").json() == {"user": None, "verdict": "absent"}
    # The logged-out cookie is dead.
    assert with_cookie("/whoami", token).json() == {"user": None, "verdict": "unknown"}


def test_login_regenerates_the_id(client: Client) -> None:
    before = token_of(client.get("/count"))
    after = token_of(client.post("/login", {"user": "alice"}))
    assert after != before
    assert client.get("/count").json() == {"n": 2}
    old = with_cookie("/whoami", before)
    assert old.json() == {"user": None, "verdict": "unknown"}
    assert not old.cookies, "a cookie superseded moments ago is not cleared"


def test_login_records_the_device(engine: Engine) -> None:
    Client(HTTP_USER_AGENT="Testzilla/1.0").post("/login", {"user": "dora"})
    [info] = engine.sessions_of("dora")
    assert info.device == "Testzilla/1.0"


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


def test_a_kept_deleted_cookie_is_never_counted_as_an_attack(client: Client) -> None:
    client.post("/login", {"user": "alice"})
    client.post("/logout")
    # The test client (like some real clients) keeps sending donjon="".
    statuses = [client.get("/whoami").status_code for _ in range(25)]
    assert statuses == [200] * 25, "no lock-out"
    fresh = Client()
    fresh.cookies[NAME] = ""
    assert fresh.get("/whoami").json() == {"user": None, "verdict": "absent"}


def test_two_credential_engine_is_refused() -> None:
    from donjon.config import TwoCredentials
    from donjon.errors import ConfigurationError

    engine = Engine(
        keyring=KeyRing.generate(), store=MemoryStore(),
        two_credentials=TwoCredentials(access_ttl=60),
    )
    with (
        override_settings(DONJON_ENGINE=engine),
        pytest.raises(ConfigurationError, match=r"wsgi\.SessionMiddleware"),
    ):
        SessionMiddleware(lambda request: HttpResponse())


# -- django.contrib.auth on the donjon session ---------------------------------
AUTH_MIDDLEWARE = [
    *settings.MIDDLEWARE,
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]


@pytest.fixture(scope="module")
def users() -> None:
    call_command("migrate", verbosity=0)
    for name in ("alice", "bob"):
        User.objects.get_or_create(username=name)


@pytest.fixture
def auth_settings(users: None, engine: Engine) -> Iterator[None]:
    with override_settings(MIDDLEWARE=AUTH_MIDDLEWARE):
        yield


@pytest.mark.usefixtures("auth_settings")
def test_auth_login_switching_users_gives_a_new_session() -> None:
    client = Client()
    assert client.get("/auth/who").json() == {"user": None}
    alice = client.get("/auth/login/alice")
    assert alice.json()["keys"] == ["_auth_user_backend", "_auth_user_hash", "_auth_user_id"]
    alice_token = token_of(alice)
    assert client.get("/auth/who").json() == {"user": "alice"}
    # Django's login() flushes another user's session, then sets its keys.
    bob = client.get("/auth/login/bob")
    assert bob.json()["keys"] == ["_auth_user_backend", "_auth_user_hash", "_auth_user_id"]
    bob_token = token_of(bob)
    assert bob_token != alice_token
    assert client.get("/auth/who").json() == {"user": "bob"}
    assert with_cookie("/whoami", alice_token).json()["verdict"] == "unknown"
    # Logging in again as the same user keeps the session, as in Django.
    assert morsel(client.get("/auth/login/bob")) is None
    assert client.get("/auth/who").json() == {"user": "bob"}


@pytest.mark.usefixtures("auth_settings")
def test_auth_login_makes_the_donjon_user(engine: Engine) -> None:
    """django.contrib.auth's login() is a donjon login: "log out everywhere",
    the session listing and the session limit work for Django's users."""
    alice_pk = str(User.objects.get(username="alice").pk)
    first, second = Client(), Client()
    t1 = token_of(first.get("/auth/login/alice"))
    t2 = token_of(second.get("/auth/login/alice"))
    assert {i.key for i in engine.sessions_of(alice_pk)} == {
        record_key(t.split(".")[3]) for t in (t1, t2)
    }
    assert engine.revoke_user(alice_pk) == 2
    assert first.get("/auth/who").json() == {"user": None}
    assert second.get("/auth/who").json() == {"user": None}


@pytest.mark.usefixtures("auth_settings")
def test_auth_logout() -> None:
    client = Client()
    token = token_of(client.get("/auth/login/alice"))
    logout = client.get("/auth/logout")
    assert morsel(logout)["max-age"] == 0
    assert client.get("/auth/who").json() == {"user": None}
    assert with_cookie("/whoami", token).json()["verdict"] == "unknown"


@pytest.mark.usefixtures("auth_settings")
async def test_async_auth_alogin_auser_alogout() -> None:
    client = AsyncClient()
    assert (await client.get("/auth/awho")).json() == {"user": None}
    alice = token_of(await client.get("/auth/alogin/alice"))
    assert (await client.get("/auth/awho")).json() == {"user": "alice"}
    bob = token_of(await client.get("/auth/alogin/bob"))
    assert bob != alice
    assert (await client.get("/auth/awho")).json() == {"user": "bob"}
    await client.get("/auth/alogout")
    assert (await client.get("/auth/awho")).json() == {"user": None}


# -- the rest of Django's session API -------------------------------------------
def _view(engine: Engine, **kwargs: Any) -> DjangoSession:
    return DjangoSession(Session(**kwargs), engine=engine)


def test_session_key_is_the_record_id(engine: Engine) -> None:
    assert _view(engine).session_key is None
    assert _view(engine, session_id="abc").session_key == "abc"


def test_test_cookie(engine: Engine) -> None:
    view = _view(engine)
    assert not view.test_cookie_worked()
    view.set_test_cookie()
    assert view.test_cookie_worked()
    assert dict(view.donjon) == {"testcookie": "worked"}
    view.delete_test_cookie()
    assert not view.test_cookie_worked()


def test_expiry_follows_the_absolute_timeout(engine: Engine) -> None:
    absolute = int(engine.core.timeouts.absolute)
    now = engine.core.now()
    assert _view(engine).get_expiry_age() == absolute, "a new session gets it all"
    loaded = _view(engine, session_id="abc", expires_at=now + 100.5)
    assert loaded.get_expiry_age() == 101
    assert loaded.get_expiry_date() == datetime.fromtimestamp(now + 101, tz=UTC)
    assert loaded.get_session_cookie_age() == absolute
    loaded.login("alice")  # a login starts the absolute timeout again
    assert loaded.get_expiry_age() == absolute
    assert _view(engine, session_id="abc", expires_at=now - 5).get_expiry_age() == 0
    assert _view(engine).get_expire_at_browser_close() is False
    engine2, _ = make_engine(CookiePolicy(secure=False, persistent=False))
    assert _view(engine2).get_expire_at_browser_close() is True


def test_set_expiry_names_the_donjon_way(engine: Engine) -> None:
    view = _view(engine)
    view.set_expiry(None)  # the default policy: nothing to do
    for value in (0, 300, datetime.now(tz=UTC)):
        with pytest.raises(NotImplementedError, match=r"Timeouts\(idle=.*persistent=False"):
            view.set_expiry(value)


async def test_save_names_the_donjon_way(engine: Engine) -> None:
    view = _view(engine)
    with pytest.raises(NotImplementedError, match="saves the session once"):
        view.save()
    with pytest.raises(NotImplementedError, match="saves the session once"):
        await view.asave()


def test_expiry_without_an_engine_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="needs the engine"):
        DjangoSession(Session()).get_expiry_age()


async def test_async_api(engine: Engine) -> None:
    view = _view(engine, session_id="abc", data={"a": 1})
    assert await view.aget("a") == 1
    assert await view.aget("zz", 2) == 2
    await view.aset("b", 2)
    assert await view.asetdefault("b", 3) == 2
    assert await view.asetdefault("c", 3) == 3
    assert await view.ahas_key("c")
    assert await view.apop("c") == 3
    assert await view.apop("c", None) is None
    with pytest.raises(KeyError):
        await view.apop("c")
    await view.aupdate({"d": 4})
    assert sorted(await view.akeys()) == ["a", "b", "d"]
    assert sorted(await view.avalues()) == [1, 2, 4]
    assert sorted(await view.aitems()) == [("a", 1), ("b", 2), ("d", 4)]
    await view.aset_test_cookie()
    assert await view.atest_cookie_worked()
    await view.adelete_test_cookie()
    assert await view.aget_expiry_age() == int(engine.core.timeouts.absolute)
    assert isinstance(await view.aget_expiry_date(), datetime)
    assert await view.aget_expire_at_browser_close() is False
    with pytest.raises(NotImplementedError):
        await view.aset_expiry(0)
    await view.acycle_key()
    assert view.regenerated
    await view.aflush()
    assert view.destroyed and dict(view.donjon) == {}
    view2 = _view(engine, session_id="x", data={"a": 1})
    await view2.aclear()
    assert view2.destroyed


def test_a_view_that_crashes_keeps_nothing(engine: Engine) -> None:
    client = Client(raise_request_exception=False)
    r = client.get("/crash")
    assert r.status_code == 500
    assert NAME not in r.cookies
    assert engine.sessions_of("mallory") == []
