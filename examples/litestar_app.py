"""Donjon with Litestar: ``uvicorn examples.litestar_app:app``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Litestar, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body

from donjon.adapters.litestar import session_middleware, session_of
from donjon.engine import AsyncEngine
from examples._config import async_engine


@dataclass
class LoginForm:
    user: str = ""


@get("/count")
async def count(request: Request[Any, Any, Any]) -> dict[str, int]:
    request.session["n"] = n = request.session.get("n", 0) + 1  # the Donjon session
    return {"n": n}


@post("/login", status_code=200)
async def login(
    request: Request[Any, Any, Any],
    data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[dict[str, str]]:
    user = data.user.strip()
    if not user:
        return Response({"error": "form field 'user' is required"}, status_code=400)
    # A real app checks a password first.
    session_of(request).login(user)  # a new id: no session fixation
    return Response({"user": user})


@post("/logout", status_code=200)
async def logout(request: Request[Any, Any, Any]) -> dict[str, None]:
    session_of(request).destroy()
    return {"user": None}


@get("/whoami")
async def whoami(request: Request[Any, Any, Any]) -> dict[str, str | None]:
    session = session_of(request)
    return {"user": session.user_id, "verdict": session.verdict.value}


def create_app(engine: AsyncEngine) -> Litestar:
    """Build the app around a Donjon engine."""
    return Litestar(
        route_handlers=[count, login, logout, whoami],
        middleware=[session_middleware(engine=engine)],
        on_shutdown=[engine.close],
    )


app = create_app(async_engine())
