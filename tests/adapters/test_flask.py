"""Flask: ``flask.session`` is the donjon session; tested through ``app.test_client()``.

The routes are the example app's (``examples.flask_app.create_app``), built
around a test engine.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import pytest
from flask.sessions import SessionMixin
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from donjon import KeyRing, StoreUnavailable, Verdict
from donjon.adapters.flask import FlaskSession, SessionInterface, current_session, init_app
from donjon.config import CookiePolicy, TwoCredentials
from donjon.engine import AsyncEngine, Engine
from donjon.errors import ConfigurationError
from donjon.session import Session
from donjon.stores import MemoryStore

from ._wsgi_http import FlakyStore, cookie_attributes, make_engine

NAME = "donjon"
OPAQUE_503 = {"error": "service unavailable"}


@pytest.fixture
def create_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    # Importing the example builds its own module-level app from the
    # environment: keep that in a temporary folder and in memory.
    monkeypatch.setenv("DONJON_DATA", str(tmp_path))
    monkeypatch.setenv("DONJON_STORE", "memory")
    monkeypatch.setenv("DONJON_COOKIE_SECURE", "0")
    return importlib.import_module("examples.flask_app").create_app


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
def app(create_app: Any, engine: Engine) -> flask.Flask:
    app: flask.Flask = create_app(engine)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: flask.Flask) -> FlaskClient:
    return app.test_client()


def set_cookies(resp: TestResponse) -> list[str]:
    return resp.headers.getlist("Set-Cookie")


def token_of(resp: TestResponse) -> str:
    (header,) = set_cookies(resp)
    name, value, _ = cookie_attributes(header)
    assert name == NAME
    assert value
    return value


def with_cookie(app: flask.Flask, path: str, token: str) -> TestResponse:
    return app.test_client(use_cookies=False).get(path, headers={"Cookie": f"{NAME}={token}"})


# -- the four routes ------------------------------------------------------
def test_count_increments(client: FlaskClient) -> None:
    first = client.get("/count")
    assert first.json == {"n": 1}
    assert len(set_cookies(first)) == 1
    assert first.headers["Cache-Control"] == "no-store"
    assert client.get("/count").json == {"n": 2}
    resp = client.get("/count")
    assert resp.json == {"n": 3}
    assert set_cookies(resp) == []


def test_login_records_the_device(client: FlaskClient, engine: Engine) -> None:
    client.post("/login", data={"user": "dora"}, headers={"User-Agent": "Testzilla/1.0"})
    [info] = engine.sessions_of("dora")
    assert info.device == "Testzilla/1.0"


def test_login_whoami_logout(client: FlaskClient, app: flask.Flask) -> None:
    assert client.get("/whoami").json == {"user": None, "verdict": "absent"}
    token = token_of(client.post("/login", data={"user": "alice"}))
    assert client.get("/whoami").json == {"user": "alice", "verdict": "valid"}

    resp = client.post("/logout")
    assert resp.json == {"user": None}
    (cleared,) = set_cookies(resp)
    name, value, attrs = cookie_attributes(cleared)
    assert (name, value) == (NAME, "")
    assert "max-age=0" in attrs
    assert client.get_cookie(NAME) is None
    assert client.get("/whoami").json == {"user": None, "verdict": "absent"}
    # The logged-out cookie is dead.
    assert with_cookie(app, "/whoami", token).json == {"user": None, "verdict": "unknown"}


def test_login_without_user_is_400(client: FlaskClient) -> None:
    assert client.post("/login", data={}).status_code == 400


def test_login_regenerates_the_id(client: FlaskClient, app: flask.Flask) -> None:
    before = token_of(client.get("/count"))
    after = token_of(client.post("/login", data={"user": "alice"}))
    assert after != before
    assert client.get("/count").json == {"n": 2}
    old = with_cookie(app, "/whoami", before)
    assert old.json == {"user": None, "verdict": "unknown"}
    assert set_cookies(old) == [], "a cookie superseded moments ago is not cleared"


# -- flask.session is the donjon session ----------------------------------
def test_flask_session_is_the_donjon_session(app: flask.Flask, client: FlaskClient) -> None:
    seen: dict[str, Any] = {}

    @app.get("/probe")
    def probe() -> str:
        s = flask.session
        seen["mixin"] = isinstance(s, SessionMixin)
        seen["facade"] = isinstance(s, FlaskSession)
        seen["same"] = current_session() is s.donjon  # type: ignore[attr-defined]
        seen["verdict"] = s.verdict  # type: ignore[attr-defined]
        seen["new"] = s.new
        seen["permanent"] = s.permanent
        s.permanent = False  # accepted and ignored, as Flask-Login does
        s["k"] = [1]
        seen["modified"] = s.modified
        return "ok"

    client.get("/probe")
    assert seen == {
        "mixin": True, "facade": True, "same": True, "verdict": Verdict.ABSENT,
        "new": True, "permanent": True, "modified": True,
    }
    client.get("/probe")
    assert seen["verdict"] is Verdict.VALID
    assert seen["new"] is False


def test_in_place_change_of_a_nested_value_is_saved(app: flask.Flask, client: FlaskClient) -> None:
    @app.get("/append")
    def append() -> dict[str, Any]:
        items = flask.session.setdefault("items", [])
        items.append(len(items))
        return {"items": items}

    @app.get("/append-and-mark")
    def append_and_mark() -> dict[str, Any]:
        flask.session["items"].append(-1)
        flask.session.modified = True  # Flask's idiom; harmless here
        return {"items": flask.session["items"]}

    client.get("/append")
    client.get("/append")
    assert client.get("/append").json == {"items": [0, 1, 2]}
    assert client.get("/append-and-mark").json == {"items": [0, 1, 2, -1]}
    assert client.get("/append").json == {"items": [0, 1, 2, -1, 4]}


def test_vary_cookie_when_the_session_is_used(client: FlaskClient, app: flask.Flask) -> None:
    @app.get("/plain")
    def plain() -> str:
        return "no session here"

    assert "Cookie" in client.get("/whoami").headers.get("Vary", "")
    assert "Vary" not in client.get("/plain").headers


def test_session_transaction_works(client: FlaskClient) -> None:
    with client.session_transaction() as sess:
        sess["n"] = 41
    assert client.get("/count").json == {"n": 42}


# -- bad cookies ----------------------------------------------------------
@pytest.mark.parametrize("token", ["garbage", "v1.user.k1.AAAA.BBBB", ""])
def test_bad_cookie_gives_a_fresh_session_and_is_cleared(
    app: flask.Flask, store: FlakyStore, token: str
) -> None:
    resp = with_cookie(app, "/whoami", token)
    assert resp.status_code == 200
    assert resp.json["user"] is None
    expected = ("absent",) if token == "" else ("malformed", "forged")
    assert resp.json["verdict"] in expected
    (cleared,) = set_cookies(resp)
    assert "max-age=0" in cookie_attributes(cleared)[2]
    assert store.calls == []


def test_untouched_new_session_sets_no_cookie(client: FlaskClient, store: FlakyStore) -> None:
    resp = client.get("/whoami")
    assert set_cookies(resp) == []
    assert "no-store" not in resp.headers.get("Cache-Control", "")
    assert store.calls == []


# -- edge answers -----------------------------------------------------------
def test_store_down_while_loading_is_503_and_no_view_runs(
    app: flask.Flask, client: FlaskClient, store: FlakyStore
) -> None:
    ran: list[str] = []
    app.before_request(lambda: ran.append(flask.request.path) and None)
    client.get("/count")
    store.go_down()
    resp = client.get("/count")
    assert resp.status_code == 503
    assert resp.json == OPAQUE_503
    assert resp.headers["Cache-Control"] == "no-store"
    assert set_cookies(resp) == []
    assert ran == ["/count"]
    store.fail.clear()
    assert client.get("/count").json == {"n": 2}


def test_commit_failure_is_503_and_closes_the_streamed_body(
    app: flask.Flask, client: FlaskClient, store: FlakyStore
) -> None:
    state = {"started": False, "closed": False}

    @app.get("/stream")
    def stream() -> flask.Response:
        flask.session["n"] = 1

        def body() -> Iterator[str]:
            state["started"] = True
            try:
                yield "secret "
                yield "page"
            finally:
                state["closed"] = True

        gen = body()
        next(gen)  # the generator is live: only close() ends it properly
        resp = flask.Response(gen, headers={"X-App": "1"})
        return resp

    store.fail.add("write")
    resp = client.get("/stream")
    assert resp.status_code == 503
    assert resp.json == OPAQUE_503
    assert "X-App" not in resp.headers
    assert set_cookies(resp) == []
    assert state == {"started": True, "closed": True}


def test_store_unavailable_from_a_view_is_the_opaque_503(
    app: flask.Flask, client: FlaskClient
) -> None:
    @app.get("/admin/sessions")
    def sessions() -> str:
        raise StoreUnavailable("redis is down: connection refused to 10.0.0.5")

    resp = client.get("/admin/sessions")
    assert resp.status_code == 503
    assert resp.json == OPAQUE_503
    assert b"10.0.0.5" not in resp.data


def test_locked_out_client_gets_429_and_no_view_runs(
    app: flask.Flask, client: FlaskClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def locked(*args: Any, **kwargs: Any) -> Session:
        session = Session(verdict=Verdict.LOCKED_OUT)
        session.retry_after = 0.2
        return session

    monkeypatch.setattr(engine, "load", locked)
    ran: list[str] = []

    @app.get("/effect")
    def effect() -> str:
        ran.append("view")
        return "done"

    resp = client.get("/effect")
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "1"
    assert resp.json == {"error": "too many requests"}
    assert ran == []


def test_without_init_app_the_edge_answer_still_wins(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = flask.Flask(__name__)
    app.session_interface = SessionInterface(engine)

    @app.get("/")
    def index() -> str:
        return "page"

    def locked(*args: Any, **kwargs: Any) -> Session:
        return Session(verdict=Verdict.LOCKED_OUT)

    monkeypatch.setattr(engine, "load", locked)
    resp = app.test_client().get("/")
    assert resp.status_code == 429
    assert "Retry-After" not in resp.headers
    assert resp.json == {"error": "too many requests"}


def test_current_session_outside_donjon_raises() -> None:
    app = flask.Flask(__name__)
    app.secret_key = "x" * 32
    with app.test_request_context("/"), pytest.raises(RuntimeError, match="init_app"):
        current_session()


# -- cookie attributes ------------------------------------------------------
def test_default_policy_set_cookie_attributes(create_app: Any) -> None:
    engine, _ = make_engine(CookiePolicy())
    app = create_app(engine)
    resp = app.test_client().get("/count", base_url="https://example.com")
    (header,) = set_cookies(resp)
    assert re.fullmatch(
        r"__Host-donjon=[A-Za-z0-9._-]+; Path=/; Max-Age=43200; Secure; HttpOnly; SameSite=Lax",
        header,
    ), header
    assert resp.headers["Cache-Control"] == "no-store"


def test_init_app_refuses_an_async_engine() -> None:
    engine = AsyncEngine(keyring=KeyRing.generate(), store=MemoryStore())
    with pytest.raises(TypeError, match="need the sync"):
        init_app(flask.Flask(__name__), engine)  # type: ignore[arg-type]


def test_init_app_registers_the_interface(engine: Engine) -> None:
    app = flask.Flask(__name__)
    interface = init_app(app, engine)
    assert app.session_interface is interface
    assert app.extensions["donjon"] is interface
    assert interface.get_cookie_name(app) == engine.cookie.cookie_name


# -- session.clear() is a logout ----------------------------------------------
def test_session_clear_logs_out(app: flask.Flask, client: FlaskClient) -> None:
    @app.post("/clear")
    def clear() -> str:
        flask.session.clear()
        return "bye"

    token = token_of(client.post("/login", data={"user": "alice"}))
    client.get("/count")
    resp = client.post("/clear")
    (cleared,) = set_cookies(resp)
    assert "max-age=0" in cookie_attributes(cleared)[2]
    assert client.get("/whoami").json == {"user": None, "verdict": "absent"}
    # The old cookie is dead, not just emptied: no user, no data.
    assert with_cookie(app, "/whoami", token).json == {"user": None, "verdict": "unknown"}
    assert with_cookie(app, "/count", token).json == {"n": 1}


def test_keys_set_after_clear_start_a_new_session(app: flask.Flask, client: FlaskClient) -> None:
    @app.post("/clear-and-flash")
    def clear_and_flash() -> str:
        flask.session.clear()
        flask.session["flash"] = "logged out"
        return "bye"

    @app.get("/flash")
    def flash() -> dict[str, Any]:
        return {"flash": flask.session.get("flash"), "user": current_session().user_id}

    old = token_of(client.post("/login", data={"user": "alice"}))
    new = token_of(client.post("/clear-and-flash"))
    assert new != old
    assert client.get("/flash").json == {"flash": "logged out", "user": None}
    assert with_cookie(app, "/whoami", old).json == {"user": None, "verdict": "unknown"}


def test_init_app_refuses_a_two_credential_engine() -> None:
    engine = Engine(
        keyring=KeyRing.generate(), store=MemoryStore(),
        two_credentials=TwoCredentials(access_ttl=60),
    )
    with pytest.raises(ConfigurationError, match=r"wsgi\.SessionMiddleware"):
        init_app(flask.Flask(__name__), engine)
    with pytest.raises(ConfigurationError, match="refresh path"):
        SessionInterface(engine)
