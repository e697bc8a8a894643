"""Flask integration: ``flask.session`` is the donjon session.

::

    from flask import Flask, session
    from donjon.adapters.flask import init_app

    app = Flask(__name__)
    init_app(app, engine)  # engine: a built donjon.engine.Engine

    @app.post("/login")
    def login():
        session.login(user.id)  # regenerates the id, against fixation
        ...

``flask.session`` is a :class:`FlaskSession`: a Flask ``SessionMixin`` over
the donjon :class:`~donjon.session.Session`, with its ``verdict``,
``user_id``, ``login()``, ``destroy()`` ... For typed code,
:func:`current_session` returns the donjon session itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, final

from ..core import Verdict
from ..errors import ConfigurationError, MissingDependency, StoreUnavailable
from ..session import Session
from ._common import ERROR_BODIES, ClientResolver, Proxy, response_headers, store_unavailable
from ._cookies import find_cookie
from .wsgi import ENVIRON_KEY, SessionView, check_sync_engine, client_of, error_headers

try:
    import flask
    from flask.sessions import SessionInterface as _FlaskSessionInterface
    from flask.sessions import SessionMixin
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependency("flask", "flask") from exc

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["EXTENSION_KEY", "FlaskSession", "SessionInterface", "current_session", "init_app"]

log = logging.getLogger("donjon.adapters")

EXTENSION_KEY: Final = "donjon"
"""The key of the :class:`SessionInterface` in ``app.extensions``."""

_EDGE_KEY: Final = "donjon.edge"


class FlaskSession(SessionView, SessionMixin):
    """What ``flask.session`` is: Flask's session interface over a donjon session.

    Flask's attributes keep their meaning: ``modified`` (setting it to
    ``True`` rewrites every key), ``accessed`` (adds ``Vary: Cookie``) and
    ``new``. ``permanent`` reflects the engine's
    :attr:`~donjon.config.CookiePolicy.persistent`; setting it is accepted
    (extensions such as Flask-Login do) and ignored, because the lifetime is
    the engine's :class:`~donjon.config.Timeouts`, signed into the token.
    """

    def __init__(
        self,
        session: Session,
        *,
        persistent: bool = True,
        presented: bool = False,
        binding: str | bytes | None = None,
        edge: tuple[int, float | None] | None = None,
    ) -> None:
        super().__init__(session)
        self._persistent = persistent
        self._presented = presented
        self._binding = binding
        self._committed = False
        self.edge = edge
        """``(status, retry_after)`` when the request is answered at the edge (429/503)."""

    @property
    def new(self) -> bool:  # type: ignore[override]
        """Whether no record exists for this session yet."""
        return self.donjon.is_new

    @property
    def permanent(self) -> bool:
        """Whether the cookie outlives the browser session (the engine's policy)."""
        return self._persistent

    @permanent.setter
    def permanent(self, value: bool) -> None:
        pass


def current_session() -> Session:
    """Return the donjon session of the current Flask request (typed, unlike ``flask.session``).

    Raises:
        RuntimeError: Outside a request, or the app's session interface is
            not donjon's (see :func:`init_app`).
    """
    session = flask.session._get_current_object()  # type: ignore[attr-defined]
    if isinstance(session, FlaskSession):
        return session.donjon
    raise RuntimeError("flask.session is not a donjon session: call donjon.adapters.flask.init_app")


def _edge_response(status: int, retry_after: float | None = None) -> flask.Response:
    return flask.Response(
        ERROR_BODIES[status], status=status, headers=error_headers(status, retry_after)
    )


def _replace(response: flask.Response, status: int, retry_after: float | None = None) -> None:
    """Turn ``response`` into an edge answer in place, closing what it held."""
    held = response.response
    response.response = []
    close = getattr(held, "close", None)
    if close is not None:
        close()
    response.direct_passthrough = False
    response.headers.clear()
    response.status_code = status
    for name, value in error_headers(status, retry_after):
        response.headers[name] = value
    response.set_data(ERROR_BODIES[status])


@final
class SessionInterface(_FlaskSessionInterface):
    """A Flask session interface backed by a donjon :class:`~donjon.engine.Engine`.

    Install it with :func:`init_app`, which also answers at the edge.
    Guarantees (with :func:`init_app`), the same as the WSGI middleware's:

    * the cookie is read from the raw ``Cookie`` header with the rules of
      :func:`~donjon.adapters.find_cookie`; the client key is ``REMOTE_ADDR``,
      or ``X-Forwarded-For`` only via trusted proxies;
    * a locked-out client gets ``429`` with ``Retry-After`` and no view runs;
    * a store that is down gives ``503`` (loading: no view runs; saving: the
      response, whatever it was, is replaced and its body closed);
    * any other bad cookie gives a fresh session and the cookie is cleared;
    * a response that sets or clears the cookie carries
      ``Cache-Control: no-store``; an untouched new session sets no cookie.

    The session is committed in ``save_session`` (after the
    ``after_request`` functions): at most once per request. Flask's
    ``SESSION_COOKIE_*`` settings are not used; the engine's
    :class:`~donjon.config.CookiePolicy` is. ``session.clear()`` logs out
    (as :meth:`~donjon.session.Session.clear`).

    Raises:
        ConfigurationError: The engine uses the two-credential mode, whose
            refresh path only :class:`donjon.adapters.wsgi.SessionMiddleware`
            serves.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        proxy: Proxy | None = None,
        binding: Callable[[flask.Request], str | bytes | None] | None = None,
    ) -> None:
        check_sync_engine(engine)
        if engine.core.two is not None:
            raise ConfigurationError(
                "the Flask session interface does not serve the two-credential refresh "
                "path: wrap the WSGI app instead, app.wsgi_app = donjon.adapters.wsgi."
                "SessionMiddleware(app.wsgi_app, engine=engine), and read the session "
                "with donjon.adapters.wsgi.get_session(flask.request.environ)"
            )
        self.engine = engine
        self._resolver = ClientResolver(proxy, guarded=engine.core.guard is not None)
        self._binding = binding

    def get_cookie_name(self, app: flask.Flask) -> str:
        """The session cookie's name, from the engine's cookie policy."""
        return self.engine.cookie.cookie_name

    def open_session(self, app: flask.Flask, request: flask.Request) -> FlaskSession:
        """Load the request's session; never raises for what the client sent.

        The donjon session is also put in ``request.environ["donjon.session"]``,
        as the WSGI middleware does.
        """
        environ = request.environ
        raw = environ.get("HTTP_COOKIE")
        lookup = find_cookie([raw] if raw else [], self.engine.cookie.cookie_name)
        binding = self._binding(request) if self._binding is not None else None
        persistent = self.engine.cookie.persistent
        try:
            session = self.engine.load(
                lookup.value,
                binding=binding,
                client=client_of(self._resolver, environ),
                path=request.path,
                device=environ.get("HTTP_USER_AGENT"),
            )
        except StoreUnavailable:
            store_unavailable(log, "session store unavailable while loading")
            environ[_EDGE_KEY] = (503, None)
            return FlaskSession(Session(), persistent=persistent, edge=(503, None))
        if session.verdict is Verdict.LOCKED_OUT:
            environ[_EDGE_KEY] = (429, session.retry_after)
            return FlaskSession(session, persistent=persistent, edge=environ[_EDGE_KEY])
        environ[ENVIRON_KEY] = session
        return FlaskSession(
            session, persistent=persistent, presented=lookup.presented, binding=binding
        )

    def save_session(
        self, app: flask.Flask, session: SessionMixin, response: flask.Response
    ) -> None:
        """Commit the session and set or clear the cookie on ``response``."""
        if not isinstance(session, FlaskSession):
            return
        if session.edge is not None:
            # Only reached without init_app's before_request hook (or when a
            # view ran anyway): the edge answer still wins.
            _replace(response, *session.edge)
            return
        if session._committed:
            return
        session._committed = True
        try:
            outcome = (
                # A server error saves nothing but a logout: a half-done change is not kept.
                self.engine.abandon(session.donjon, presented=session._presented)
                if response.status_code >= 500
                else self.engine.commit(
                    session.donjon, presented=session._presented, binding=session._binding
                )
            )
        except StoreUnavailable:
            store_unavailable(log, "session store unavailable while saving")
            _replace(response, 503)
            return
        if session.accessed:
            response.vary.add("Cookie")
        for name, value in response_headers(self.engine.cookie_headers(outcome)):
            if name == "set-cookie":
                response.headers.add("Set-Cookie", value)
            else:
                response.headers[name] = value


def _answer_edge() -> flask.Response | None:
    # Read from the environ, not flask.session: touching the session would
    # mark it accessed (and add Vary: Cookie to every response).
    edge: tuple[int, float | None] | None = flask.request.environ.get(_EDGE_KEY)
    if edge is not None:
        return _edge_response(*edge)
    return None


def _store_unavailable(exc: StoreUnavailable) -> flask.Response:
    log.error("session store unavailable: %s", type(exc).__name__)
    return _edge_response(503)


def init_app(
    app: flask.Flask,
    engine: Engine,
    *,
    proxy: Proxy | None = None,
    binding: Callable[[flask.Request], str | bytes | None] | None = None,
) -> SessionInterface:
    """Make ``flask.session`` a donjon session for ``app``.

    Installs a :class:`SessionInterface`, a first ``before_request`` function
    that answers ``429``/``503`` before any view runs, and an error handler
    turning :class:`~donjon.StoreUnavailable` raised by views into the same
    opaque ``503``. The interface is also ``app.extensions["donjon"]``.

    Args:
        app: The Flask app.
        engine: The built :class:`~donjon.engine.Engine`.
        proxy: Trusted reverse proxies (none by default).
        binding: Optional function of the request returning the context the
            session is bound to.

    Returns:
        The installed interface.

    Raises:
        ConfigurationError: The engine uses the two-credential mode: use
            :class:`donjon.adapters.wsgi.SessionMiddleware`, which serves the
            refresh path.
        TypeError: ``engine`` is an :class:`~donjon.engine.AsyncEngine`.
    """
    interface = SessionInterface(engine, proxy=proxy, binding=binding)
    app.session_interface = interface
    app.extensions[EXTENSION_KEY] = interface
    app.before_request_funcs.setdefault(None, []).insert(0, _answer_edge)
    app.register_error_handler(StoreUnavailable, _store_unavailable)
    return interface
