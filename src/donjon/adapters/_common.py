"""What the ASGI and WSGI adapters share: client keys, headers, error answers."""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, final

from ..errors import ConfigurationError

__all__ = [
    "ERROR_BODIES",
    "ClientResolver",
    "Proxy",
    "response_headers",
]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ERROR_BODIES: Final[dict[int, bytes]] = {
    429: b'{"error":"too many requests"}',
    503: b'{"error":"service unavailable"}',
}
"""Opaque bodies for the answers the middleware gives itself: no detail leaks."""


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Proxy:
    """Which reverse proxies are trusted to report the client and the scheme.

    By default none is: the client is the TCP peer, whatever the request's
    headers say. List your proxies' addresses (or networks) to take the
    client from ``X-Forwarded-For`` (the right-most address not itself a
    trusted proxy) and the scheme from ``X-Forwarded-Proto`` — like
    express-session's ``proxy``/``trust proxy`` settings.
    """

    trusted: Collection[str] = field(default_factory=tuple)
    """Addresses or CIDR networks of trusted proxies, e.g. ``("10.0.0.0/8",)``."""

    def networks(self) -> tuple[_Network, ...]:
        """The trusted proxies as networks."""
        out = []
        for item in self.trusted:
            try:
                out.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigurationError(f"trusted proxy {item!r} is not an address") from None
        return tuple(out)


@final
class ClientResolver:
    """Turns a peer address and forwarding headers into the guard's client key."""

    __slots__ = ("_nets",)

    def __init__(self, proxy: Proxy | None) -> None:
        self._nets = (proxy or Proxy()).networks()

    @property
    def trusts_proxies(self) -> bool:
        """Whether any proxy is trusted."""
        return bool(self._nets)

    def _trusted(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in self._nets)

    def client(self, peer: str | None, forwarded_for: Iterable[str]) -> str | None:
        """Return the client address for a request.

        Headers are consulted only when the peer itself is a trusted proxy;
        otherwise a forged ``X-Forwarded-For`` changes nothing.
        """
        if not self._nets or peer is None or not self._trusted(peer):
            return peer
        hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer
        return hops[0] if hops else peer

    def is_secure(self, scheme: str, peer: str | None, forwarded_proto: str | None) -> bool:
        """Whether the client's connection is HTTPS (directly or via a trusted proxy)."""
        if scheme in ("https", "wss"):
            return True
        if forwarded_proto and peer is not None and self._nets and self._trusted(peer):
            return forwarded_proto.split(",")[0].strip().lower() == "https"
        return False


def response_headers(set_cookie: str | Sequence[str] | None) -> list[tuple[str, str]]:
    """Headers to add to a response whose session cookie(s) are set or cleared.

    ``Cache-Control: no-store`` keeps shared caches from storing a response
    that carries a session token (OWASP session cheat sheet).
    """
    if not set_cookie:
        return []
    values = [set_cookie] if isinstance(set_cookie, str) else list(set_cookie)
    return [*(("set-cookie", v) for v in values), ("cache-control", "no-store")]


def safe_next(query: str) -> str | None:
    """The ``next`` parameter of a query string when it is a local path, else ``None``.

    Only paths on this site are followed (``/x``, never ``//host`` or
    ``https://host``): the refresh path is no open redirect.
    """
    for value in urllib.parse.parse_qs(query, max_num_fields=20).get("next", [])[:1]:
        if (
            value.startswith("/")
            and not value.startswith("//")
            and "\\" not in value
            and not any(ord(c) < 0x21 or c == "\x7f" for c in value)
            and len(value) <= 2048
        ):
            return value
    return None


def refresh_location(refresh_path: str, path: str, query: str) -> str:
    """Where to send a browser whose access credential has expired."""
    target = path + (f"?{query}" if query else "")
    return f"{refresh_path}?next={urllib.parse.quote(target, safe='')}"


REFRESH_REQUIRED: Final = b'{"error":"refresh required"}'
"""Body of the 401 an unsafe request gets when its access credential expired."""
LOGIN_REQUIRED: Final = b'{"error":"login required"}'
"""Body of the 401 a failed refresh gets."""


BindingFn = Callable[..., "str | bytes | None"]
