"""A WSGI middleware for any WSGI app, and the session view Flask and Django share.

The middleware mirrors :class:`donjon.adapters.asgi.SessionMiddleware`: the
same cookie lookup, client resolution, commit point and edge answers, for
the synchronous :class:`~donjon.engine.Engine`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, Final, cast, final

from ..core import Verdict
from ..engine import AsyncEngine
from ..engine._logic import NO_SEALED_BINDING
from ..errors import ConfigurationError, StoreUnavailable
from ..session import Session
from ._common import (
    ERROR_BODIES,
    LOGIN_REQUIRED,
    REFRESH_REQUIRED,
    ClientResolver,
    Proxy,
    as_bytes,
    refresh_location,
    response_headers,
    safe_next,
    store_unavailable,
)
from ._common import (
    retry_after as retry_after_value,
)
from ._cookies import find_cookie

if TYPE_CHECKING:
    from types import TracebackType
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from ..engine import Engine, Outcome

    _ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]

__all__ = ["ENVIRON_KEY", "SessionMiddleware", "get_session"]

log = logging.getLogger("donjon.adapters")

ENVIRON_KEY: Final = "donjon.session"
"""The WSGI environ key under which the middleware puts the request's :class:`Session`."""


def get_session(environ: WSGIEnvironment) -> Session:
    """Return the session the middleware loaded for this request.

    Raises:
        LookupError: :class:`SessionMiddleware` does not wrap this app.
    """
    session = environ.get(ENVIRON_KEY)
    if isinstance(session, Session):
        return session
    raise LookupError(
        "no donjon session in the WSGI environ: wrap the app in "
        "donjon.adapters.wsgi.SessionMiddleware"
    )


def check_sync_engine(engine: Engine) -> None:
    """Fail at start-up when handed an ``AsyncEngine`` (an easy mix-up)."""
    if isinstance(cast(object, engine), AsyncEngine):
        raise TypeError(
            "WSGI adapters need the sync donjon.engine.Engine; AsyncEngine is for "
            "ASGI (donjon.adapters.asgi)"
        )


def _server_error(status: str) -> bool:
    """Whether a WSGI status line is a 5xx."""
    return status[:1] == "5"


def error_headers(status: int, retry_after: float | None = None) -> list[tuple[str, str]]:
    """Return the headers of an answer the adapters give themselves (429 or 503)."""
    headers = [
        ("Content-Type", "application/json"),
        ("Cache-Control", "no-store"),
        ("Content-Length", str(len(ERROR_BODIES[status]))),
    ]
    if retry_after is not None:
        headers.append(("Retry-After", retry_after_value(retry_after)))
    return headers


_STATUS_LINES: Final = {429: "429 Too Many Requests", 503: "503 Service Unavailable"}


def _answer(
    start_response: StartResponse, status: int, retry_after: float | None = None
) -> list[bytes]:
    start_response(_STATUS_LINES[status], error_headers(status, retry_after))
    return [ERROR_BODIES[status]]


def _raw(
    start_response: StartResponse, status: str, body: bytes, headers: list[tuple[str, str]]
) -> list[bytes]:
    base = [
        ("Content-Type", "application/json"),
        ("Cache-Control", "no-store"),
        ("Content-Length", str(len(body))),
    ]
    base.extend((k, v) for k, v in headers if k.lower() != "cache-control")
    start_response(status, base)
    return [body]


def client_of(resolver: ClientResolver, environ: WSGIEnvironment) -> str | None:
    """Return the guard's client key: ``REMOTE_ADDR``, or via trusted proxies only.

    A missing or empty ``REMOTE_ADDR`` (a server on a Unix socket) is no
    address: the resolver warns once, unless
    :attr:`Proxy.trust_unix_socket <donjon.adapters.Proxy.trust_unix_socket>`
    says to read ``X-Forwarded-For`` then.
    """
    addr = environ.get("REMOTE_ADDR") or None
    if not resolver.trusts_proxies:
        if addr is None:
            resolver.unknown_peer()
        return addr
    xff = environ.get("HTTP_X_FORWARDED_FOR")
    return resolver.client(addr, [xff] if xff else [])


def _close(iterable: object) -> None:
    close = getattr(iterable, "close", None)
    if close is not None:
        close()


def _discard(data: bytes) -> None:
    """The ``write`` callable handed to an app whose response was replaced by a 503."""


@final
class _Commit:
    """One request's response start: commits the session, adds the cookie headers."""

    __slots__ = (
        "_binding",
        "_engine",
        "_extra",
        "_presented",
        "_session",
        "_start",
        "failed",
        "started",
    )

    def __init__(
        self,
        engine: Engine,
        start_response: StartResponse,
        session: Session,
        presented: bool,
        binding: str | bytes | None,
    ) -> None:
        self._engine = engine
        self._start = start_response
        self._session = session
        self._presented = presented
        self._binding = binding
        self._extra: list[tuple[str, str]] | None = None
        self.started = False
        self.failed = False

    def __call__(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: _ExcInfo | None = None,
        /,
    ) -> Callable[[bytes], object]:
        if self.failed:
            return _discard
        if self._extra is None:
            # The first start commits. A second one (PEP 3333 allows it, with
            # exc_info, to replace an error page) re-sends the same cookie.
            try:
                outcome: Outcome = (
                    # A server error saves nothing but a logout (an app or
                    # framework that turned an exception into a 500).
                    self._engine.abandon(self._session, presented=self._presented)
                    if _server_error(status)
                    else self._engine.commit(
                        self._session, presented=self._presented, binding=self._binding
                    )
                )
            except StoreUnavailable:
                store_unavailable(log, "session store unavailable while saving")
                self.failed = True
                self.started = True
                _answer(self._start, 503)
                return _discard
            self._extra = response_headers(self._engine.cookie_headers(outcome))
        self.started = True
        if self._extra:
            headers = [(k, v) for k, v in headers if k.lower() != "cache-control"]
            headers.extend(self._extra)
        if exc_info is None:
            return self._start(status, headers)
        return self._start(status, headers, exc_info)


@final
class _Body:
    """The app's body, for an app that starts its response lazily (a generator).

    When the commit fails at that late start, the app's chunks are dropped,
    its iterable is closed, and the 503 body is sent instead.
    """

    __slots__ = ("_commit", "_inner", "_it")

    def __init__(self, inner: Iterable[bytes], commit: _Commit) -> None:
        self._inner = inner
        self._commit = commit
        self._it: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        if self._it is None:
            self._it = iter(self._inner)
        for chunk in self._it:
            if self._commit.failed:
                yield ERROR_BODIES[503]
                return
            yield chunk
        if self._commit.failed:
            # The app started its response (and failed to commit) without
            # yielding anything after it.
            yield ERROR_BODIES[503]

    def close(self) -> None:
        _close(self._inner)


@final
class SessionMiddleware:
    """Load the session before the app runs and commit it when the response starts.

    The session is put in ``environ["donjon.session"]`` (see
    :func:`get_session`); its ``.verdict`` tells what the presented cookie
    was. Guarantees, identical to the ASGI middleware's:

    * the client key is ``REMOTE_ADDR``; ``X-Forwarded-For`` is read only
      when ``REMOTE_ADDR`` is a trusted proxy (or missing, with
      ``Proxy(trust_unix_socket=True)``; missing otherwise, a WARNING says
      once that the guard cannot tell clients apart);
    * a locked-out client gets ``429`` with ``Retry-After`` and the app is
      not called;
    * a store that is down while loading gives ``503`` and the app is not
      called; down while saving, the app's response is replaced by ``503``,
      its body discarded and its iterable closed — nothing half-written is
      acknowledged to the client;
    * any other bad cookie starts a fresh anonymous session and the bad
      cookie is cleared: never a 500;
    * in the two-credential mode, the refresh path is answered here as in
      the ASGI middleware (``429`` with no cookie touched when locked out;
      a ``Location`` always pure ASCII);
    * a response that sets or clears the cookie carries
      ``Cache-Control: no-store`` (replacing the app's own); an untouched new
      session sets no cookie at all.

    The session is committed when the app calls ``start_response``: changes
    made while the body is being produced are not saved. A server error
    (a 5xx status, e.g. a framework's answer to an exception) saves nothing
    but a logout (a bad cookie is still cleared), and an app that raises
    before starting its response commits nothing.

    Args:
        app: The WSGI app to wrap.
        engine: The built :class:`~donjon.engine.Engine`.
        proxy: Trusted reverse proxies (none by default: the client is the
            TCP peer and forwarding headers are ignored).
        binding: Optional function of the environ returning the context the
            session is bound to (see the binding layer).
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        engine: Engine,
        proxy: Proxy | None = None,
        binding: Callable[[WSGIEnvironment], str | bytes | None] | None = None,
    ) -> None:
        check_sync_engine(engine)
        self.app = app
        self.engine = engine
        self._resolver = ClientResolver(proxy, guarded=engine.core.guard is not None)
        if binding is not None and engine.core.sealed is not None:
            raise ConfigurationError(NO_SEALED_BINDING)
        self._binding = binding
        self._cookie_name = engine.cookie.cookie_name

    def client_of(self, environ: WSGIEnvironment) -> str | None:
        """The guard's client key for a request: the peer, or via trusted proxies."""
        return client_of(self._resolver, environ)

    def _refresh(
        self, environ: WSGIEnvironment, start_response: StartResponse, raw: str | None
    ) -> list[bytes]:
        """Answer the refresh path: one store call, new access and refresh cookies.

        Everything that depends on the request (the cookie, the client, the
        ``next`` target) is worked out before the refresh credential is
        rotated: once it is, nothing may keep the new cookies from the client.
        """
        refresh = self.engine.refresh_cookie
        assert refresh is not None  # noqa: S101 - only called in the two-credential mode
        token = find_cookie([raw] if raw else [], refresh.cookie_name).value
        target = safe_next(environ.get("QUERY_STRING", ""))
        client = self.client_of(environ)
        try:
            outcome = self.engine.refresh(token, client=client, path=environ.get("PATH_INFO"))
        except StoreUnavailable:
            store_unavailable(log, "session store unavailable while refreshing")
            return _answer(start_response, 503)
        if outcome.retry_after is not None:
            # Locked out: no cookie is touched, or a client sharing the
            # address (a NAT) could wipe other users' cookies.
            return _answer(start_response, 429, outcome.retry_after)
        headers = response_headers(self.engine.cookie_headers(outcome))
        if outcome.token is None:
            return _raw(start_response, "401 Unauthorized", LOGIN_REQUIRED, headers)
        if target is None:
            return _raw(start_response, "204 No Content", b"", headers)
        return _raw(start_response, "303 See Other", b"", [*headers, ("Location", target)])

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        raw = environ.get("HTTP_COOKIE")
        two = self.engine.core.two
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        if two is not None and path == two.refresh_path:
            return self._refresh(environ, start_response, raw)
        lookup = find_cookie([raw] if raw else [], self._cookie_name)
        binding = self._binding(environ) if self._binding is not None else None
        try:
            session = self.engine.load(
                lookup.value,
                binding=binding,
                client=self.client_of(environ),
                path=environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
                device=environ.get("HTTP_USER_AGENT"),
            )
        except StoreUnavailable:
            store_unavailable(log, "session store unavailable while loading")
            return _answer(start_response, 503)
        if session.verdict is Verdict.LOCKED_OUT:
            return _answer(start_response, 429, session.retry_after)
        if two is not None and session.reason == "access_expired":
            if environ.get("REQUEST_METHOD", "GET") in ("GET", "HEAD"):
                where = refresh_location(
                    two.refresh_path, as_bytes(path), as_bytes(environ.get("QUERY_STRING", ""))
                )
                return _raw(start_response, "307 Temporary Redirect", b"", [("Location", where)])
            return _raw(
                start_response,
                "401 Unauthorized",
                REFRESH_REQUIRED,
                [("Donjon-Refresh", two.refresh_path)],
            )
        environ[ENVIRON_KEY] = session
        commit = _Commit(self.engine, start_response, session, lookup.presented, binding)
        result = self.app(environ, commit)
        if commit.failed:
            _close(result)
            return [ERROR_BODIES[503]]
        if commit.started:
            # The usual case: hand the app's iterable over untouched (keeps
            # wsgi.file_wrapper and len() optimisations).
            return result
        return _Body(result, commit)


class SessionView(MutableMapping[str, Any]):
    """A framework's session object over a donjon :class:`Session`.

    Every mapping operation goes to the donjon session (so only the keys a
    request changed are written), and marks the session :attr:`accessed`.
    The donjon session itself is :attr:`donjon`; the common parts of it are
    repeated here (``verdict``, ``user_id``, ``login()``, ``destroy()`` ...).
    Flask's and Django's adapters subclass it with their framework's names.
    """

    def __init__(self, session: Session) -> None:
        self.donjon: Session = session
        """The donjon session this view delegates to."""
        self.accessed: bool = False
        """Whether the request read or wrote the session (drives ``Vary: Cookie``)."""

    # -- mapping --------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        self.accessed = True
        return self.donjon[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.accessed = True
        self.donjon[key] = value

    def __delitem__(self, key: str) -> None:
        self.accessed = True
        del self.donjon[key]

    def __iter__(self) -> Iterator[str]:
        self.accessed = True
        return iter(self.donjon)

    def __len__(self) -> int:
        self.accessed = True
        return len(self.donjon)

    def __contains__(self, key: object) -> bool:
        self.accessed = True
        return key in self.donjon

    def clear(self) -> None:
        """End the session, as :meth:`Session.clear <donjon.session.Session.clear>` does.

        The framework idiom for logging out (``session.clear()``) logs out:
        the record is deleted at commit and the user dropped, not just the
        keys. Keys set afterwards in the same request start a new session.
        """
        self.accessed = True
        self.donjon.clear()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.donjon!r}>"

    # -- what the cookie was --------------------------------------------
    @property
    def verdict(self) -> Verdict:
        """The verdict of the cookie that came with the request."""
        return self.donjon.verdict

    @property
    def user_id(self) -> str | None:
        """The logged-in user, if any (set it with :meth:`login`)."""
        return self.donjon.user_id

    @property
    def session_class(self) -> str:
        """The session class (e.g. ``"user"`` or ``"admin"``)."""
        return self.donjon.session_class

    @property
    def is_new(self) -> bool:
        """Whether no record exists for this session yet."""
        return self.donjon.is_new

    @property
    def destroyed(self) -> bool:
        """Whether :meth:`destroy` was called."""
        return self.donjon.destroyed

    @property
    def regenerated(self) -> bool:
        """Whether the id will be regenerated at commit."""
        return self.donjon.regenerated

    @property
    def modified(self) -> bool:
        """Whether this request changed anything that must be saved.

        Setting it to ``True`` (the usual idiom after changing a nested
        value) forces every key to be written; donjon notices in-place
        changes of lists and dicts read from the session anyway.
        """
        return self.donjon.modified

    @modified.setter
    def modified(self, value: bool) -> None:
        if value:
            for key in list(self.donjon):
                self.donjon.mark_changed(key)

    # -- life cycle -----------------------------------------------------
    def login(self, user_id: str, *, session_class: str | None = None) -> None:
        """Authenticate the session as ``user_id``; the id is regenerated at commit."""
        self.accessed = True
        self.donjon.login(user_id, session_class=session_class)

    def logout(self) -> None:
        """End the session: same as :meth:`destroy`."""
        self.destroy()

    def destroy(self) -> None:
        """Delete the session's record at commit and clear the cookie."""
        self.accessed = True
        self.donjon.destroy()

    def regenerate(self) -> None:
        """Give the session a new id at commit, keeping its data (against fixation)."""
        self.accessed = True
        self.donjon.regenerate()

    def mark_changed(self, key: str) -> None:
        """Force ``key`` to be written at commit."""
        self.donjon.mark_changed(key)
