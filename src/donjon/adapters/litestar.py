"""Litestar: ``request.session`` is the Donjon session.

::

    app = Litestar(route_handlers=[...], middleware=[session_middleware(engine=engine)])

    @get("/whoami")
    async def whoami(request: Request) -> dict[str, str | None]:
        session = session_of(request)          # typed: donjon.session.Session
        return {"user": session.user_id, "verdict": session.verdict}

Litestar types ``request.session`` as ``dict[str, Any]``; at run time it is
the Donjon :class:`~donjon.session.Session` (a mutable mapping, not a
``dict`` subclass — Litestar itself only stores and returns the object).
:func:`session_of` gives the real type. To inject it instead, register
``dependencies={"session": Provide(provide_session)}`` and declare
``session: NamedDependency[Session]`` (Litestar 2.23+; ``session: Session``
before).

Litestar's own session calls keep their meaning, applied when the response
starts:

* ``request.clear_session()`` destroys the session (record deleted, cookie
  cleared) — as :meth:`Session.destroy` does;
* ``request.set_session(mapping)`` replaces the session's data with the
  mapping's (JSON values only); the session keeps its id, so call
  ``session_of(request).login(...)`` on a login. Anything but a mapping
  (a pydantic model, say) is a programmer error: ``TypeError`` is raised
  as the response starts.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast, final

from ..engine import AsyncEngine
from ..errors import MissingDependency
from ..session import Session
from . import asgi
from ._common import Proxy

try:
    from litestar import Request
    from litestar.connection import ASGIConnection
    from litestar.exceptions import ImproperlyConfiguredException
    from litestar.middleware import DefineMiddleware
    from litestar.types import Empty
except ImportError as exc:  # pragma: no cover - the tests run with Litestar
    raise MissingDependency("litestar", "litestar") from exc

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = ["SessionMiddleware", "provide_session", "session_middleware", "session_of"]


def _adopt(session: Session, current: object) -> None:
    """Apply what ``set_session``/``clear_session`` left in the scope to ``session``."""
    if current is session:
        return
    if current is Empty or current is None:
        session.destroy()
        return
    if not isinstance(current, Mapping):
        raise TypeError(
            "Donjon sessions hold a mapping of JSON values; "
            f"request.set_session() got {type(current).__name__}"
        )
    for key in [k for k in session if k not in current]:
        del session[key]
    for key, value in current.items():
        if key not in session or session.get(key) != value:
            session[key] = value


@final
class SessionMiddleware:
    """Donjon's ASGI middleware, aware of Litestar's session calls.

    Everything :class:`donjon.adapters.asgi.SessionMiddleware` guarantees
    holds (a verdict on every request, bad cookies never adopted and cleared,
    429 when locked out, 503 when the store is down). In addition, what the
    app left in ``scope["session"]`` through ``set_session()`` or
    ``clear_session()`` is applied before the commit. WebSocket sessions are
    read-only, as in the ASGI middleware.

    Args:
        app: The next ASGI app (given by Litestar).
        engine: The built :class:`~donjon.engine.AsyncEngine`.
        proxy: Trusted reverse proxies; see :class:`~donjon.adapters.Proxy`.
        binding: Optional function of the scope returning the bound context.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        engine: AsyncEngine,
        proxy: Proxy | None = None,
        binding: Callable[[asgi.Scope], str | bytes | None] | None = None,
    ) -> None:
        self.app = app
        self._inner = asgi.SessionMiddleware(
            self._adopting, engine=engine, proxy=proxy, binding=binding
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Litestar's ASGI types are TypedDicts; the generic middleware's are mappings.
        await self._inner(
            cast("asgi.Scope", scope), cast("asgi.Receive", receive), cast("asgi.Send", send)
        )

    async def _adopting(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        app = cast("asgi.ASGIApp", self.app)
        session = scope.get("session")
        if scope["type"] != "http" or not isinstance(session, Session):
            await app(scope, receive, send)
            return

        async def send_wrapper(message: asgi.Message) -> None:
            if message["type"] == "http.response.start":
                _adopt(session, scope.get("session"))
            await send(message)

        await app(scope, receive, send_wrapper)


def session_middleware(
    *,
    engine: AsyncEngine,
    proxy: Proxy | None = None,
    binding: Callable[[asgi.Scope], str | bytes | None] | None = None,
) -> DefineMiddleware:
    """Return the middleware entry for ``Litestar(middleware=[...])``.

    Put it first in the list so that every other middleware (authentication
    included) sees the session.
    """
    return DefineMiddleware(SessionMiddleware, engine=engine, proxy=proxy, binding=binding)


def session_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Session:
    """Return the Donjon session of a request or WebSocket.

    Guaranteed: the result is the object the middleware loaded and will
    commit; its ``verdict`` says what the presented cookie was.

    Raises:
        ImproperlyConfiguredException: The Donjon middleware is not installed,
            or the session was replaced (``set_session``/``clear_session``)
            earlier in this request: read it before replacing it.
    """
    session = connection.scope.get("session")
    if not isinstance(session, Session):
        raise ImproperlyConfiguredException(
            "no Donjon session in scope: add session_middleware(engine=...) to "
            "Litestar(middleware=[...]), and read the session before set_session()"
        )
    return session


async def provide_session(request: Request[Any, Any, Any]) -> Session:
    """Litestar dependency returning the Donjon session; see :func:`session_of`."""
    return session_of(request)
