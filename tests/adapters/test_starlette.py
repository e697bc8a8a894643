"""Starlette: the example app through httpx's ASGI transport, and the helpers.

Starlette's ``TestClient`` is not used: with plain ``httpx`` installed,
Starlette 1.x deprecates it (it wants ``httpx2``), and the suite turns
warnings into errors. ``httpx.AsyncClient`` over ``httpx.ASGITransport``
drives the same ASGI app without a thread.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from donjon.adapters.starlette import SessionMiddleware, session_of
from donjon.errors import ConfigurationError
from donjon.session import Session

from .test_asgi import AppSuite, fresh_engine


class TestStarlette(AppSuite):
    example = "starlette_app"


async def kinds(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "request.session": type(request.session).__name__,
            "same": request.session is session_of(request),
        }
    )


async def test_request_session_is_the_donjon_session() -> None:
    app = Starlette(
        routes=[Route("/", kinds)],
        middleware=[Middleware(SessionMiddleware, engine=fresh_engine())],
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        response = await client.get("/")
    assert response.json() == {"request.session": Session.__name__, "same": True}


async def test_session_of_without_the_middleware() -> None:
    async def index(request: Request) -> JSONResponse:
        return JSONResponse({"verdict": session_of(request).verdict.value})

    app = Starlette(routes=[Route("/", index)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        with pytest.raises(ConfigurationError, match="no Donjon session"):
            await client.get("/", headers={"cookie": "donjon=x"})


def test_missing_starlette_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None\n"
        "from donjon.errors import MissingDependency\n"
        "try:\n"
        "    import donjon.adapters.starlette\n"
        "except MissingDependency as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'donjon[starlette]'" in out.stdout


# -- session.clear() is a logout ----------------------------------------------


async def _login(request: Request) -> JSONResponse:
    session_of(request).login("alice")
    request.session["n"] = 1
    return JSONResponse({})


async def _clear(request: Request) -> JSONResponse:
    request.session.clear()
    if "flash" in request.query_params:
        request.session["flash"] = "logged out"
    return JSONResponse({})


async def _who(request: Request) -> JSONResponse:
    session = session_of(request)
    return JSONResponse(
        {"user": session.user_id, "verdict": session.verdict.value, "data": dict(session)}
    )


def _clear_app() -> Starlette:
    routes = [
        Route("/login", _login, methods=["POST"]),
        Route("/clear", _clear, methods=["POST"]),
        Route("/who", _who),
    ]
    middleware = [Middleware(SessionMiddleware, engine=fresh_engine())]
    return Starlette(routes=routes, middleware=middleware)


async def test_session_clear_logs_out() -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_clear_app()), base_url="http://testserver"
    ) as client:
        await client.post("/login")
        token = client.cookies["donjon"]
        response = await client.post("/clear")
        [cleared] = response.headers.get_list("set-cookie")
        assert cleared.startswith("donjon=;") and "Max-Age=0" in cleared
        assert (await client.get("/who")).json() == {"user": None, "verdict": "absent", "data": {}}
        client.cookies.clear()
        replay = await client.get("/who", headers={"cookie": f"donjon={token}"})
        assert replay.json() == {"user": None, "verdict": "unknown", "data": {}}


async def test_keys_set_after_clear_start_a_new_session() -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_clear_app()), base_url="http://testserver"
    ) as client:
        await client.post("/login")
        old = client.cookies["donjon"]
        await client.post("/clear?flash=1")
        assert client.cookies["donjon"] != old
        assert (await client.get("/who")).json() == {
            "user": None, "verdict": "valid", "data": {"flash": "logged out"},
        }
