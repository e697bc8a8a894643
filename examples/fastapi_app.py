"""Donjon with FastAPI: ``uvicorn examples.fastapi_app:app``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Form
from fastapi.responses import JSONResponse

from donjon.adapters.starlette import SessionDep, SessionMiddleware
from donjon.engine import AsyncEngine
from examples._config import async_engine

router = APIRouter()


@router.get("/count")
async def count(session: SessionDep) -> dict[str, int]:
    n = session.get("n")
    session["n"] = n = n + 1 if isinstance(n, int) else 1
    return {"n": n}


@router.post("/login", response_model=None)
async def login(
    session: SessionDep, user: Annotated[str, Form()] = ""
) -> dict[str, str] | JSONResponse:
    user = user.strip()
    if not user:
        return JSONResponse({"error": "form field 'user' is required"}, status_code=400)
    # A real app checks a password first.
    session.login(user)  # a new id: no session fixation
    return {"user": user}


@router.post("/logout")
async def logout(session: SessionDep) -> dict[str, None]:
    session.destroy()
    return {"user": None}


@router.get("/whoami")
async def whoami(session: SessionDep) -> dict[str, str | None]:
    return {"user": session.user_id, "verdict": session.verdict.value}


def create_app(engine: AsyncEngine) -> FastAPI:
    """Build the app around a Donjon engine."""
    app = FastAPI()
    app.include_router(router)
    app.add_middleware(SessionMiddleware, engine=engine)
    return app


app = create_app(async_engine())
