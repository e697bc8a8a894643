"""Donjon with Quart: ``uvicorn examples.quart_app:app`` (or hypercorn)."""

from __future__ import annotations

from typing import Any

from quart import Quart, jsonify, request

from donjon.adapters.quart import SessionMiddleware, session_of
from donjon.engine import AsyncEngine
from examples._config import async_engine


def create_app(engine: AsyncEngine) -> Quart:
    """Build the app around a Donjon engine."""
    app = Quart(__name__)

    @app.get("/count")
    async def count() -> Any:
        session = session_of()
        session["n"] = n = session.get("n", 0) + 1
        return jsonify({"n": n})

    @app.post("/login")
    async def login() -> Any:
        user = (await request.form).get("user", "").strip()
        if not user:
            return jsonify({"error": "form field 'user' is required"}), 400
        # A real app checks a password first.
        session_of().login(user)  # a new id: no session fixation
        return jsonify({"user": user})

    @app.post("/logout")
    async def logout() -> Any:
        session_of().destroy()
        return jsonify({"user": None})

    @app.get("/whoami")
    async def whoami() -> Any:
        session = session_of()
        return jsonify({"user": session.user_id, "verdict": session.verdict.value})

    app.asgi_app = SessionMiddleware(app.asgi_app, engine=engine)  # type: ignore[method-assign]
    return app


app = create_app(async_engine())
