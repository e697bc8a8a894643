"""Donjon with Starlette: ``uvicorn examples.starlette_app:app``."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from donjon.adapters.starlette import SessionMiddleware, session_of
from donjon.engine import AsyncEngine
from examples._config import async_engine


async def count(request: Request) -> JSONResponse:
    request.session["n"] = n = request.session.get("n", 0) + 1  # the Donjon session
    return JSONResponse({"n": n})


async def login(request: Request) -> JSONResponse:
    user = (await request.form()).get("user")
    user = user.strip() if isinstance(user, str) else ""
    if not user:
        return JSONResponse({"error": "form field 'user' is required"}, status_code=400)
    # A real app checks a password first.
    session_of(request).login(user)  # a new id: no session fixation
    return JSONResponse({"user": user})


async def logout(request: Request) -> JSONResponse:
    session_of(request).destroy()
    return JSONResponse({"user": None})


async def whoami(request: Request) -> JSONResponse:
    session = session_of(request)
    return JSONResponse({"user": session.user_id, "verdict": session.verdict.value})


def create_app(engine: AsyncEngine) -> Starlette:
    """Build the app around a Donjon engine."""
    routes = [
        Route("/count", count),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/whoami", whoami),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SessionMiddleware, engine=engine)])


app = create_app(async_engine())
