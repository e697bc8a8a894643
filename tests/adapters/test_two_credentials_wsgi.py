"""The two-credential mode through the WSGI middleware (Flask example)."""

from __future__ import annotations

import pytest
from examples.flask_app import create_app
from flask.testing import FlaskClient

from donjon import KeyRing
from donjon.config import CookiePolicy, Timeouts, TwoCredentials
from donjon.engine import Engine
from donjon.stores import MemoryStore
from donjon.testing import FrozenClock


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_800_000_000.0)


@pytest.fixture
def client(clock: FrozenClock) -> FlaskClient:
    from donjon.adapters.wsgi import SessionMiddleware

    engine = Engine(
        keyring=KeyRing.generate(), store=MemoryStore(clock=clock), clock=clock,
        cookie=CookiePolicy(secure=False), timeouts=Timeouts(idle=3600, absolute=8 * 3600),
        two_credentials=TwoCredentials(access_ttl=300), guard=None,
    )
    app = create_app(engine)
    app.wsgi_app = SessionMiddleware(app.wsgi_app, engine=engine)  # type: ignore[method-assign]
    return app.test_client()


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
