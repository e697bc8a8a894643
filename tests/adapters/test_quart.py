"""Quart: the example app through httpx's ASGI transport, and ``session_of``."""

from __future__ import annotations

import httpx
import pytest
from quart import Quart, jsonify

from donjon.adapters.quart import SessionMiddleware, session_of
from donjon.errors import ConfigurationError

from .test_asgi import AppSuite, fresh_engine


class TestQuart(AppSuite):
    example = "quart_app"


async def test_session_of_without_the_middleware() -> None:
    app = Quart(__name__)

    @app.get("/")
    async def index() -> object:
        try:
            session_of()
        except ConfigurationError as exc:
            return jsonify({"error": str(exc)})
        return jsonify({"error": None})

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        response = await client.get("/")
    assert "SessionMiddleware" in response.json()["error"]


async def test_quart_own_session_is_left_alone() -> None:
    app = Quart(__name__)

    @app.get("/")
    async def index() -> object:
        session_of()["k"] = 1
        return jsonify({"ok": True})

    app.asgi_app = SessionMiddleware(app.asgi_app, engine=fresh_engine())  # type: ignore[method-assign]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        response = await client.get("/")
    cookies = response.headers.get_list("set-cookie")
    assert len(cookies) == 1 and cookies[0].startswith("donjon=")
    assert "session=" not in cookies[0], "Quart's own cookie session is not written"


@pytest.mark.parametrize(("path", "replaced"), [("/whoami", False), ("/count", True)])
async def test_a_bad_cookie_is_cleared_or_replaced_under_quart(path: str, replaced: bool) -> None:
    from examples.quart_app import create_app

    app = create_app(fresh_engine())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        client.cookies.set("donjon", "v1.user.k1.forged")
        response = await client.get(path)
    assert response.status_code == 200
    (cookie,) = response.headers.get_list("set-cookie")
    # A session the request wrote gets a new token; an untouched one is cleared.
    assert cookie.startswith("donjon=v1.") if replaced else cookie.startswith("donjon=;")
