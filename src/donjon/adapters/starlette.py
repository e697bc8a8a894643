"""Starlette and FastAPI: ``request.session`` is the Donjon session.

Install the pure ASGI :class:`~donjon.adapters.asgi.SessionMiddleware` (re-
exported here) and read the session as usual::

    app = Starlette(routes=..., middleware=[Middleware(SessionMiddleware, engine=engine)])

    async def whoami(request: Request) -> JSONResponse:
        session = session_of(request)          # typed: donjon.session.Session
        return JSONResponse({"user": session.user_id, "verdict": session.verdict})

``request.session`` works too (it is the same object), but Starlette types it
as ``dict[str, Any]``; :func:`session_of` gives the real type, with
``.verdict``, ``.login()`` and ``.destroy()``. In FastAPI, declare a
parameter of type :data:`SessionDep`::

    @app.get("/whoami")
    async def whoami(session: SessionDep) -> dict[str, str | None]: ...

:data:`SessionDep` needs FastAPI; everything else needs only Starlette.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, MissingDependency
from ..session import Session
from .asgi import SessionMiddleware

try:
    from starlette.requests import HTTPConnection
except ImportError as exc:  # pragma: no cover - the tests run with Starlette
    raise MissingDependency("starlette", "starlette") from exc

if TYPE_CHECKING:
    from typing import TypeAlias

    SessionDep: TypeAlias = Session
    """``Annotated[Session, Depends(get_session)]``, built on first use."""

__all__ = ["SessionDep", "SessionMiddleware", "get_session", "session_of"]


def session_of(conn: HTTPConnection) -> Session:
    """Return the Donjon session of a request or WebSocket.

    Guaranteed: the result is the very object the middleware loaded and will
    commit; its ``verdict`` says what the presented cookie was.

    Raises:
        ConfigurationError: The Donjon middleware is not installed (or another
            session middleware replaced the session): raised rather than
            serving a session Donjon does not protect.
    """
    session = conn.scope.get("session")
    if not isinstance(session, Session):
        # A missing middleware is a configuration error, not a bad argument.
        raise ConfigurationError(
            "no Donjon session in scope: add "
            "Middleware(donjon.adapters.starlette.SessionMiddleware, engine=...) to the app"
        )
    return session


def get_session(request: HTTPConnection) -> Session:
    """FastAPI dependency returning the Donjon session; see :func:`session_of`."""
    return session_of(request)


_session_dep: Any = None

if not TYPE_CHECKING:
    # Hidden from type checkers, which see the alias above and still catch typos.

    def __getattr__(name: str) -> Any:
        # SessionDep is built lazily so that Starlette users need not install FastAPI.
        global _session_dep
        if name != "SessionDep":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        if _session_dep is None:
            try:
                from fastapi import Depends
            except ImportError as exc:
                raise MissingDependency("fastapi", "fastapi") from exc
            from typing import Annotated

            _session_dep = Annotated[Session, Depends(get_session)]
        return _session_dep
