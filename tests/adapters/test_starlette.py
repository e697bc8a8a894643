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
