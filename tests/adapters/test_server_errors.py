"""A server error commits nothing, in every adapter.

Frameworks such as Flask, Quart and Litestar turn an exception into a 500
*inside* the app, so the middleware sees an ordinary response start: without
this rule a view that logged a user in and then crashed would keep the login.
"""

from __future__ import annotations

from typing import Any

import flask
import httpx
import pytest
from litestar import Litestar, Request, get
from quart import Quart

from donjon.adapters import asgi, wsgi
from donjon.adapters.flask import init_app
from donjon.adapters.litestar import session_middleware
from donjon.adapters.quart import SessionMiddleware as QuartMiddleware
from donjon.adapters.quart import session_of

from ._wsgi_http import make_engine
from .test_asgi import fresh_engine


async def _call(app: Any, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """Call an ASGI app once, from 1.2.3.4; return the messages it sent."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    await app({**scope, "client": ("1.2.3.4", 1)}, receive, send)
    return sent


def _no_cookie(headers: Any) -> bool:
    return not [v for k, v in headers.items() if k.lower() == "set-cookie"]


def test_flask_view_that_crashes_keeps_nothing() -> None:
    engine, _ = make_engine()
    app = flask.Flask(__name__)
    init_app(app, engine)

    @app.post("/crash")
    def crash() -> str:
        flask.session["n"] = 999
        flask.session.login("mallory")  # type: ignore[attr-defined]
        raise RuntimeError("boom")

    @app.get("/who")
    def who() -> dict[str, Any]:
        return {"user": flask.session.user_id, "n": flask.session.get("n")}  # type: ignore[attr-defined]

    client = app.test_client()
    app.testing = False  # Flask's own 500 page, as in production
    r = client.post("/crash")
    assert r.status_code == 500
    assert "Set-Cookie" not in r.headers
    assert client.get("/who").json == {"user": None, "n": None}


def test_wsgi_app_answering_500_keeps_nothing() -> None:
    engine, _ = make_engine()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        session = environ["donjon.session"]
        session.login("mallory")
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"oops"]

    seen: list[tuple[str, list[tuple[str, str]]]] = []
    body = wsgi.SessionMiddleware(app, engine=engine)(
        {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "REMOTE_ADDR": "10.0.0.1"},
        lambda status, headers, exc_info=None: seen.append((status, headers)),  # type: ignore[misc]
    )
    assert b"".join(body) == b"oops"
    ((status, headers),) = seen
    assert status.startswith("500")
    assert not [h for h in headers if h[0].lower() == "set-cookie"]
    assert engine.sessions_of("mallory") == []


async def test_quart_view_that_crashes_keeps_nothing() -> None:
    engine = fresh_engine()
    app = Quart(__name__)
    app.asgi_app = QuartMiddleware(app.asgi_app, engine=engine)  # type: ignore[method-assign]

    @app.post("/crash")
    async def crash() -> str:
        session_of().login("mallory")
        raise RuntimeError("boom")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.post("/crash")
    assert r.status_code == 500
    assert _no_cookie(r.headers)
    assert await engine.sessions_of("mallory") == []


async def test_litestar_handler_that_crashes_keeps_nothing() -> None:
    engine = fresh_engine()

    @get("/crash")
    async def crash(request: Request[Any, Any, Any]) -> None:
        request.session.login("mallory")
        raise RuntimeError("boom")

    app = Litestar(route_handlers=[crash], middleware=[session_middleware(engine=engine)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/crash")
    assert r.status_code == 500
    assert _no_cookie(r.headers)
    assert await engine.sessions_of("mallory") == []


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_raw_asgi_server_errors_keep_nothing(status: int) -> None:
    engine = fresh_engine()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["session"].login("mallory")
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent = await _call(asgi.SessionMiddleware(app, engine=engine), [])
    assert sent[0]["status"] == status and sent[0]["headers"] == []
    assert await engine.sessions_of("mallory") == []


@pytest.mark.parametrize("status", [500, 503])
async def test_a_server_error_still_logs_out_and_clears_a_bad_cookie(status: int) -> None:
    """Only what raises privilege is dropped: a logout is kept, a stale cookie cleared."""
    engine = fresh_engine()
    s = await engine.load(None)
    s.login("alice")
    token = (await engine.commit(s, presented=False)).token
    assert token is not None
    action = {"do": "logout"}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if action["do"] == "logout":
            scope["session"].logout()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def run(cookie: str) -> list[dict[str, Any]]:
        wrapped = asgi.SessionMiddleware(app, engine=engine)
        return await _call(wrapped, [(b"cookie", f"donjon={cookie}".encode())])

    sent = await run(token)
    assert any(k == b"set-cookie" and b"Max-Age=0" in v for k, v in sent[0]["headers"])
    assert (await engine.load(token)).verdict.value == "unknown", "the logout was kept"
    action["do"] = "nothing"
    sent = await run(token)  # the stale cookie, with another server error
    assert any(k == b"set-cookie" and b"Max-Age=0" in v for k, v in sent[0]["headers"])


def test_flask_failed_logout_is_still_a_logout() -> None:
    engine, _ = make_engine()
    app = flask.Flask(__name__)
    init_app(app, engine)

    @app.post("/login")
    def login() -> str:
        flask.session.login("alice")  # type: ignore[attr-defined]
        return "ok"

    @app.post("/logout-then-crash")
    def crash() -> str:
        flask.session.logout()  # type: ignore[attr-defined]
        raise RuntimeError("boom")

    client = app.test_client()
    app.testing = False
    assert client.post("/login").status_code == 200
    assert [i.user_id for i in engine.sessions_of("alice")] == ["alice"]
    assert client.post("/logout-then-crash").status_code == 500
    assert engine.sessions_of("alice") == []
