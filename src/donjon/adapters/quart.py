"""Quart: the pure ASGI middleware around ``app.asgi_app``, and typed access.

Wrap the app's ASGI callable (Quart's own middlewares go there too) and read
the session with :func:`session_of`::

    app = Quart(__name__)
    app.asgi_app = SessionMiddleware(app.asgi_app, engine=engine)

    @app.get("/whoami")
    async def whoami():
        session = session_of()                 # typed: donjon.session.Session
        return {"user": session.user_id, "verdict": session.verdict.value}

Quart's own ``quart.session`` (a signed cookie, Flask-style) is another
object, which Donjon leaves alone: Donjon's session lives in the ASGI scope,
and Quart writes no cookie of its own as long as its session is unused.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError, MissingDependency
from ..session import Session
from .asgi import SessionMiddleware

try:
    import quart
except ImportError as exc:  # pragma: no cover - the tests run with Quart
    raise MissingDependency("quart", "quart") from exc

__all__ = ["SessionMiddleware", "session_of"]


def session_of(conn: Any = None) -> Session:
    """Return the Donjon session of the current request (or of ``conn``).

    Args:
        conn: A Quart request or websocket; by default ``quart.request`` of
            the current request context (pass ``quart.websocket`` in a
            websocket handler).

    Guaranteed: the result is the very object the middleware loaded and will
    commit; its ``verdict`` says what the presented cookie was.

    Raises:
        ConfigurationError: The Donjon middleware does not wrap ``app.asgi_app``.
    """
    target = conn if conn is not None else quart.request
    session = target.scope.get("session")
    if not isinstance(session, Session):
        raise ConfigurationError(
            "no Donjon session in scope: wrap the app with "
            "app.asgi_app = donjon.adapters.quart.SessionMiddleware(app.asgi_app, engine=...)"
        )
    return session
