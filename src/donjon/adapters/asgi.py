"""A pure ASGI middleware: Starlette, FastAPI, Litestar, Quart and any ASGI app."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast, final

from ..core import Verdict
from ..engine import AsyncEngine, Engine
from ..engine._logic import CLEAR, NO_SEALED_BINDING, NOTHING, Outcome
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

__all__ = ["SessionMiddleware", "cookie_binding", "header_binding"]

log = logging.getLogger("donjon.adapters")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _header(scope: Scope, name: bytes) -> list[bytes]:
    return [v for k, v in scope.get("headers", ()) if k == name]


def cookie_binding(name: str) -> Callable[[Scope], str | None]:
    """Bind sessions to the value of a second cookie (e.g. a display-name cookie).

    Use as ``SessionMiddleware(..., binding=cookie_binding("prefs"))``; at
    login set ``session.bind_to`` to the value the response sets. A request
    whose second cookie differs gets BINDING_MISMATCH (counted by the guard).
    """

    def binding(scope: Scope) -> str | None:
        return find_cookie(_header(scope, b"cookie"), name).value

    return binding


def header_binding(*names: str) -> Callable[[Scope], str]:
    """Bind sessions to request headers (e.g. ``"user-agent"``).

    Binding helps detection more than prevention: headers can be copied.
    """
    wanted = [n.lower().encode("latin-1") for n in names]

    def binding(scope: Scope) -> str:
        return "\x00".join(b",".join(_header(scope, n)).decode("latin-1") for n in wanted)

    return binding


async def _raw(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    base = [
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
        (b"content-length", str(len(body)).encode()),
    ]
    base.extend((k, v) for k, v in headers if k != b"cache-control")
    await send({"type": "http.response.start", "status": status, "headers": base})
    await send({"type": "http.response.body", "body": body})


async def _answer(send: Send, status: int, retry_after: float | None = None) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
        (b"content-length", str(len(ERROR_BODIES[status])).encode()),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after_value(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": ERROR_BODIES[status]})


@final
class SessionMiddleware:
    """Loads the session before the app runs and commits it when the response starts.

    The session is put in ``scope["session"]`` (so ``request.session`` works in
    Starlette, FastAPI and Litestar; :mod:`donjon.adapters.starlette` and
    :mod:`donjon.adapters.litestar` add typed access); its ``.verdict`` tells
    what the presented cookie was. At the edge:

    * a locked-out client gets ``429`` with ``Retry-After``; nothing is parsed;
    * a store that is down gives ``503`` (and nothing half-written);
    * any other bad cookie starts a fresh anonymous session and the bad cookie
      is cleared — never a 500, never a traceback;
    * a server error (a 5xx response start, e.g. a framework's answer to an
      exception) saves nothing but a logout: a half-done login or change is
      not kept, a destroyed session is still deleted, a bad cookie still
      cleared;
    * a response that sets or clears the cookie carries
      ``Cache-Control: no-store`` (replacing the app's), so no shared cache
      keeps a token; an untouched new session sends no cookie at all.

    In the two-credential mode the middleware also answers the refresh
    path: ``204``, or ``303`` to a local ``next`` (its ``Location`` always
    pure ASCII); ``401`` when the refresh credential is bad; ``429`` with no
    cookie touched when the client is locked out. Nothing about the request
    can make that answer fail once the refresh credential is rotated.

    A scope without ``client`` (a server on a Unix socket) gives the guard
    no client to count: a WARNING says so once per middleware, unless
    ``Proxy(trust_unix_socket=True)`` reads the client from
    ``X-Forwarded-For``.

    Cookie header edge cases (duplicates: the first wins; over 16 KiB: only
    the session cookie is looked for, by a bounded scan) are those of
    :func:`~donjon.adapters.find_cookie`.
    WebSocket connections get the session **read-only**: it is loaded and
    checked at the handshake, but nothing the socket handler changes is
    saved, since no HTTP response carries a cookie back.

    Args:
        app: The ASGI app to wrap.
        engine: The built :class:`~donjon.engine.AsyncEngine`.
        proxy: Trusted reverse proxies (none by default: the client is the
            TCP peer and forwarding headers are ignored).
        binding: Optional function of the scope returning the context the
            session is bound to (see the binding layer).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        engine: AsyncEngine,
        proxy: Proxy | None = None,
        binding: Callable[[Scope], str | bytes | None] | None = None,
    ) -> None:
        if isinstance(cast(object, engine), Engine):  # an easy mix-up; fail at start-up
            raise TypeError(
                "SessionMiddleware needs an AsyncEngine; the sync Engine is for WSGI "
                "(donjon.adapters.wsgi)"
            )
        self.app = app
        self.engine = engine
        self._resolver = ClientResolver(proxy, guarded=engine.core.guard is not None)
        if binding is not None and engine.core.sealed is not None:
            raise ConfigurationError(NO_SEALED_BINDING)
        self._binding = binding
        self._cookie_name = engine.cookie.cookie_name
        self._proxied = self._resolver.trusts_proxies
        # The commonest answers, built once: nothing to send, or clear a bad cookie.
        self._clear_headers = self._encode(CLEAR)

    def _encode(self, outcome: Outcome) -> list[tuple[bytes, bytes]]:
        return [
            (k.encode(), v.encode("latin-1"))
            for k, v in response_headers(self.engine.cookie_headers(outcome))
        ]

    def client_of(self, scope: Scope) -> str | None:
        """The guard's client key for a request: the peer, or via trusted proxies."""
        peer = scope.get("client")
        addr = peer[0] if peer else None
        if not self._resolver.trusts_proxies:
            if addr is None:
                self._resolver.unknown_peer()
            return addr
        xff = [v.decode("latin-1") for v in _header(scope, b"x-forwarded-for")]
        return self._resolver.client(addr, xff)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        two = self.engine.core.two
        if two is not None and scope["type"] == "http" and scope.get("path") == two.refresh_path:
            await self._refresh(scope, send)
            return
        cookies = []
        agent = None
        for k, v in scope.get("headers", ()):
            if k == b"cookie":
                cookies.append(v)
            elif k == b"user-agent":
                agent = v
        lookup = find_cookie(cookies, self._cookie_name)
        binding = self._binding(scope) if self._binding is not None else None
        if self._proxied:
            client = self.client_of(scope)
        else:
            peer = scope.get("client")
            if peer:
                client = peer[0]
            else:
                client = None
                self._resolver.unknown_peer()
        try:
            session = await self.engine.load(
                lookup.value,
                binding=binding,
                client=client,
                path=scope.get("path"),
                device=agent.decode("latin-1") if agent is not None else None,
            )
        except StoreUnavailable:
            store_unavailable(log, "session store unavailable while loading")
            if scope["type"] == "http":
                await _answer(send, 503)
            else:
                await send({"type": "websocket.close", "code": 1013})
            return
        if session.verdict is Verdict.LOCKED_OUT:
            if scope["type"] == "http":
                await _answer(send, 429, session.retry_after)
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        if two is not None and session.reason == "access_expired":
            if scope["type"] == "http":
                await self._send_to_refresh(scope, send, two.refresh_path)
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        scope["session"] = session
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self._sender(send, session, lookup.presented, binding))

    async def _refresh(self, scope: Scope, send: Send) -> None:
        """Answer the refresh path: one store call, new access and refresh cookies.

        Everything that depends on the request (the cookie, the client, the
        ``next`` target) is worked out before the refresh credential is
        rotated: once it is, nothing may keep the new cookies from the client.
        """
        refresh = self.engine.refresh_cookie
        assert refresh is not None  # noqa: S101 - only called in the two-credential mode
        token = find_cookie(_header(scope, b"cookie"), refresh.cookie_name).value
        target = safe_next(scope.get("query_string", b""))
        client = self.client_of(scope)
        try:
            outcome = await self.engine.refresh(token, client=client, path=scope.get("path"))
        except StoreUnavailable:
            store_unavailable(log, "session store unavailable while refreshing")
            await _answer(send, 503)
            return
        if outcome.retry_after is not None:
            # Locked out: no cookie is touched, or a client sharing the
            # address (a NAT) could wipe other users' cookies.
            await _answer(send, 429, outcome.retry_after)
            return
        headers = self._encode(outcome)
        if outcome.token is None:
            await _raw(send, 401, LOGIN_REQUIRED, headers)
            return
        if target is None:
            await _raw(send, 204, b"", headers)
            return
        headers.append((b"location", target.encode("ascii")))
        await _raw(send, 303, b"", headers)

    async def _send_to_refresh(self, scope: Scope, send: Send, refresh_path: str) -> None:
        """An expired access credential: safe requests are redirected, others get 401."""
        if scope.get("method", "GET") in ("GET", "HEAD"):
            where = refresh_location(
                refresh_path,
                as_bytes(scope.get("path", "/"), "utf-8"),
                as_bytes(scope.get("query_string", b"")),
            )
            await _raw(send, 307, b"", [(b"location", where.encode("ascii"))])
            return
        await _raw(send, 401, REFRESH_REQUIRED, [(b"donjon-refresh", refresh_path.encode())])

    def _sender(
        self, send: Send, session: Session, presented: bool, binding: str | bytes | None
    ) -> Send:
        failed = False

        async def send_wrapper(message: Message) -> None:
            nonlocal failed
            kind = message["type"]
            if kind == "http.response.start":
                try:
                    if message.get("status", 200) >= 500:
                        # A server error saves nothing but a logout (frameworks
                        # that turn an exception into a 500 inside the app land
                        # here): a half-done login or change is not kept.
                        outcome = await self.engine.abandon(session, presented=presented)
                    else:
                        outcome = await self.engine.commit(
                            session, presented=presented, binding=binding
                        )
                except StoreUnavailable:
                    store_unavailable(log, "session store unavailable while saving")
                    failed = True
                    await _answer(send, 503)
                    return
                extra = (
                    None
                    if outcome is NOTHING
                    else self._clear_headers
                    if outcome is CLEAR
                    else self._encode(outcome)
                )
                if extra:
                    headers = [
                        (k, v) for k, v in message.get("headers", ()) if k != b"cache-control"
                    ]
                    headers += extra
                    # A new message, never the app's changed in place: an app
                    # that reuses one message dict must not send a token twice.
                    message = {**message, "headers": headers}
            elif failed:
                return
            await send(message)

        return send_wrapper
