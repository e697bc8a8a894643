"""Reference floor: the least a server-side, signed-id session middleware can do.

Not a session library: a measuring stick. Per request it finds the cookie,
checks an HMAC-SHA256 over the token in constant time, checks the signed
expiry, looks the id up in a dict of JSON fields, and at the response writes
the changed fields back (a new session: a random id and a ``Set-Cookie``; a
bad cookie: a clearing ``Set-Cookie``). Everything else Donjon does per
request is left out on purpose: no guard, no verdict events or logs, no
idle timeout, no kill-switch epochs, no key ring, no cookie policy, no
``Cache-Control``. Its throughput is therefore a ceiling for any session layer
of Donjon's design (a signed id, data in a store) in pure Python on the same
stack.

The cookie is named ``donjon`` and its token ends in ``.<64 hex MAC>``, so the
flood script's forged cookies reach the MAC check here as they do in Donjon.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware

from ._routes import routes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TTL = 12 * 3600
PREFIX = b"donjon="
CLEAR = (b"set-cookie", b"donjon=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")


class MinimalSessions:
    """A pure ASGI middleware: ``scope["session"]`` is a dict, saved field by field."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        self.mac = hmac.new(secrets.token_bytes(32), digestmod="sha256")
        self.records: dict[str, dict[str, str]] = {}

    def _sign(self, body: str) -> str:
        h = self.mac.copy()
        h.update(body.encode())
        return h.hexdigest()

    def _open(self, value: bytes) -> str | None:
        """The session id of a genuine, unexpired token; ``None`` otherwise."""
        try:
            token = value[len(PREFIX) :].decode("ascii")
        except UnicodeDecodeError:
            return None
        body, _, mac = token.rpartition(".")
        sid, _, expires = body.partition(".")
        if not hmac.compare_digest(self._sign(body), mac):
            return None
        if not expires.isdigit() or int(expires) <= time.time() * 1000:
            return None
        return sid

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        presented = None
        for k, v in scope["headers"]:
            if k == b"cookie" and v.startswith(PREFIX):
                presented = v
        sid = self._open(presented) if presented is not None else None
        stored = self.records.get(sid) if sid is not None else None
        if stored is None:
            sid = None
            stored = {}
        data = {k: json.loads(v) for k, v in stored.items()}
        scope["session"] = data
        records = self.records
        known = sid

        async def save_then_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                fields = {k: json.dumps(v) for k, v in data.items()}
                extra = None
                if fields != stored:
                    if known is None:
                        new = secrets.token_urlsafe(32)
                        records[new] = fields
                        expires = int((time.time() + TTL) * 1000)
                        body = f"{new}.{expires}"
                        cookie = f"donjon={body}.{self._sign(body)}; Path=/; Max-Age={TTL}"
                        extra = (b"set-cookie", cookie.encode() + b"; HttpOnly; SameSite=Lax")
                    else:
                        records[known] = fields
                elif presented is not None and known is None:
                    extra = CLEAR
                if extra is not None:
                    message = {**message, "headers": [*message.get("headers", ()), extra]}
            await send(message)

        await self.app(scope, receive, save_then_send)


def build() -> Starlette:
    return Starlette(routes=routes(), middleware=[Middleware(MinimalSessions)])


def create_app() -> Starlette:
    return build()
