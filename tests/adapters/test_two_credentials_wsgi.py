"""The two-credential mode through the WSGI middleware, around a Flask app.

Flask's own session interface (``init_app``) does not serve the refresh
path and refuses such an engine; the WSGI middleware does, and views read
the session with :func:`donjon.adapters.wsgi.get_session`.
"""

from __future__ import annotations

import flask
import pytest
from flask.testing import FlaskClient
from flask.typing import ResponseReturnValue

from donjon import KeyRing
from donjon.adapters.wsgi import SessionMiddleware, get_session
from donjon.config import CookiePolicy, Timeouts, TwoCredentials
from donjon.engine import Engine
from donjon.guard import Guard
from donjon.stores import MemoryStore
from donjon.testing import FrozenClock


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_800_000_000.0)


def make_client(clock: FrozenClock, *, guard: Guard | None = None) -> FlaskClient:
    engine = Engine(
        keyring=KeyRing.generate(), store=MemoryStore(clock=clock), clock=clock,
        cookie=CookiePolicy(secure=False), timeouts=Timeouts(idle=3600, absolute=8 * 3600),
        two_credentials=TwoCredentials(access_ttl=300), guard=guard,
    )
    app = flask.Flask(__name__)

    @app.get("/count")
    def count() -> ResponseReturnValue:
        session = get_session(flask.request.environ)
        n = session.get("n")
        session["n"] = n = n + 1 if isinstance(n, int) else 1
        return {"n": n}

    @app.post("/login")
    def login() -> ResponseReturnValue:
        get_session(flask.request.environ).login(flask.request.form["user"])
        return {"user": flask.request.form["user"]}

    @app.post("/logout")
    def logout() -> ResponseReturnValue:
        get_session(flask.request.environ).destroy()
        return {"user": None}

    @app.get("/whoami")
    def whoami() -> ResponseReturnValue:
        session = get_session(flask.request.environ)
        return {"user": session.user_id, "verdict": session.verdict.value}

    @app.get("/<path:anything>")
    def other(anything: str) -> ResponseReturnValue:
        return {"path": anything}

    app.wsgi_app = SessionMiddleware(app.wsgi_app, engine=engine)  # type: ignore[method-assign]
    return app.test_client()


@pytest.fixture
def client(clock: FrozenClock) -> FlaskClient:
    return make_client(clock, guard=None)


def test_wsgi_refresh_flow(client: FlaskClient, clock: FrozenClock) -> None:
    assert client.post("/login", data={"user": "kai"}).status_code == 200
    assert client.get("/count").json == {"n": 1}
    clock.advance(301)
    r = client.get("/count")
    assert r.status_code == 307
    r = client.get(r.headers["Location"])
    assert r.status_code == 303 and r.headers["Location"] == "/count"
    assert len(r.headers.getlist("Set-Cookie")) == 2
    assert client.get("/count").json == {"n": 2}
    clock.advance(301)
    assert client.post("/logout").status_code == 401
    assert client.post("/_donjon/refresh").status_code == 204
    assert client.post("/logout").status_code == 200
    assert client.post("/_donjon/refresh").status_code == 401


@pytest.mark.parametrize(
    ("query", "status", "location"),
    [
        (b"next=/%C4%80", 303, "/%C4%80"),
        (b"next=/%FF", 303, "/%FF"),
        (b"next=/\xc4\x80", 303, "/%C4%80"),
        (b"next=/caf%C3%A9", 303, "/caf%C3%A9"),
        (b"next=/ok&" + b"&".join(b"f%d=1" % i for i in range(25)), 303, "/ok"),
        (b"next=/a%0d%0aSet-Cookie:%20x=1", 204, None),
    ],
)
def test_refresh_with_any_next_delivers_the_new_cookies(
    client: FlaskClient, query: bytes, status: int, location: str | None
) -> None:
    client.post("/login", data={"user": "kai"})
    # As a WSGI server hands it over: the raw bytes, as Latin-1 (PEP 3333).
    r = client.get("/_donjon/refresh", environ_overrides={"QUERY_STRING": query.decode("latin-1")})
    assert r.status_code == status
    assert r.headers.get("Location") == location
    assert len(r.headers.getlist("Set-Cookie")) == 2
    # The old refresh credential is spent: the session lives on only because
    # the client got the new cookies.
    assert client.post("/_donjon/refresh").status_code == 204
    assert client.get("/whoami").json == {"user": "kai", "verdict": "valid"}


@pytest.mark.parametrize(
    ("path", "location"),
    [("/café", "/caf%C3%A9"), ("/中文", "/%E4%B8%AD%E6%96%87"), ("/a%3Fb", "/a%3Fb")],
)
def test_expired_access_on_a_non_ascii_path_round_trips(
    client: FlaskClient, clock: FrozenClock, path: str, location: str
) -> None:
    client.post("/login", data={"user": "kai"})
    clock.advance(301)
    r = client.get(path)
    assert r.status_code == 307
    where = r.headers["Location"]
    assert where.isascii() and where.startswith("/_donjon/refresh?next=")
    r = client.get(where)
    assert r.status_code == 303
    assert r.headers["Location"] == location
    assert client.get(location).status_code == 200
    assert client.get("/whoami").json == {"user": "kai", "verdict": "valid"}


def test_locked_out_client_on_the_refresh_path_gets_429_and_keeps_its_cookies(
    clock: FrozenClock,
) -> None:
    user = make_client(clock, guard=Guard())
    attacker = user.application.test_client(use_cookies=False)
    user.post("/login", data={"user": "kai"})
    for _ in range(40):
        r = attacker.get("/whoami", headers={"Cookie": "donjon=v1.user.k1.AAAA.BBBB"})
        if r.status_code == 429:
            break
    assert r.status_code == 429
    r = user.get("/_donjon/refresh")
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json == {"error": "too many requests"}
    assert r.headers.getlist("Set-Cookie") == [], "no cookie of the user is wiped"
    clock.advance(61)
    assert user.get("/_donjon/refresh").status_code == 204
    assert user.get("/whoami").json == {"user": "kai", "verdict": "valid"}
