"""Binding a session to a second cookie or to request headers (ASGI)."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from donjon import KeyRing
from donjon.adapters.asgi import SessionMiddleware, cookie_binding, header_binding
from donjon.adapters.starlette import session_of
from donjon.config import CookiePolicy
from donjon.engine import AsyncEngine
from donjon.stores import MemoryStore


async def login(request: Request) -> JSONResponse:
    session = session_of(request)
    session.login("uma")
    session.bind_to = "dark"
    response = JSONResponse({"ok": True})
    response.set_cookie("prefs", "dark")
    return response


async def whoami(request: Request) -> JSONResponse:
    session = session_of(request)
    return JSONResponse({"user": session.user_id, "verdict": session.verdict.value})


def app(binding: object) -> Starlette:
    engine = AsyncEngine(
        keyring=KeyRing.generate(), store=MemoryStore(), cookie=CookiePolicy(secure=False)
    )
    return Starlette(
        routes=[Route("/login", login, methods=["POST"]), Route("/whoami", whoami)],
        middleware=[Middleware(SessionMiddleware, engine=engine, binding=binding)],
    )


async def test_second_cookie_binding() -> None:
    transport = httpx.ASGITransport(app=app(cookie_binding("prefs")))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.post("/login")
        assert (await client.get("/whoami")).json() == {"user": "uma", "verdict": "valid"}
        for cookie in list(client.cookies.jar):
            if cookie.name == "prefs":
                client.cookies.jar.clear(cookie.domain, cookie.path, cookie.name)
        client.cookies.set("prefs", "light")
        r = await client.get("/whoami")
        assert r.json() == {"user": None, "verdict": "binding_mismatch"}


async def test_header_binding() -> None:
    transport = httpx.ASGITransport(app=app(header_binding("user-agent")))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers={"user-agent": "A"}
    ) as client:
        r = await client.post("/login")
        token = r.cookies.get("donjon")
        # bind_to set by the view wins over the header at login; log in again without it
        assert token is not None
        r = await client.get("/whoami", headers={"user-agent": "B"})
        assert r.json()["verdict"] == "binding_mismatch"
