"""The routes every bench app serves; only the session layer differs."""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

__all__ = ["quiet_donjon_logs", "routes"]

SessionOf = Callable[[Request], MutableMapping[str, Any]]


def _session(request: Request) -> MutableMapping[str, Any]:
    return request.session


def routes(session_of: SessionOf = _session) -> list[Route]:
    """``/count``, ``/peek`` and ``/health`` over the session ``session_of`` returns."""

    async def count(request: Request) -> Response:
        session = session_of(request)
        n = session.get("n", 0) + 1
        session["n"] = n
        return JSONResponse({"n": n})

    async def peek(request: Request) -> Response:
        return JSONResponse({"n": session_of(request).get("n")})

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return [Route("/count", count), Route("/peek", peek), Route("/health", health)]


def quiet_donjon_logs() -> None:
    """Drop Donjon's verdict log records (built, not written): no log I/O in the numbers."""
    logger = logging.getLogger("donjon")
    logger.handlers = [logging.NullHandler()]
    logger.propagate = False
