"""What the ASGI and WSGI adapters share: client keys, headers, error answers."""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, final

from ..errors import ConfigurationError

__all__ = [
    "ERROR_BODIES",
    "ClientResolver",
    "OutageLog",
    "Proxy",
    "response_headers",
    "retry_after",
    "store_unavailable",
]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

log = logging.getLogger("donjon.adapters")

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

    A server listening on a Unix socket (``uvicorn --uds``, ``gunicorn
    --bind unix:...``) gives no peer address at all: the guard then cannot
    tell clients apart, and the middleware logs a warning once. When only
    your reverse proxy can reach that socket, set ``trust_unix_socket=True``
    so that the client is read from ``X-Forwarded-For`` there too.

    .. versionchanged:: 0.1.0
       ``trust_unix_socket``; IPv4-mapped peers (``::ffff:10.0.0.1``) match
       IPv4 networks, and ``X-Forwarded-For`` hops may carry a port.
    """

    trusted: Collection[str] = field(default_factory=tuple)
    """Addresses or CIDR networks of trusted proxies, e.g. ``("10.0.0.0/8",)``."""
    trust_unix_socket: bool = False
    """Trust a request without a peer address (a Unix-socket server) as coming
    from a proxy. Only safe when nothing but your reverse proxy can connect to
    the socket, and that proxy sets ``X-Forwarded-For``."""

    def networks(self) -> tuple[_Network, ...]:
        """The trusted proxies as networks."""
        out = []
        for item in self.trusted:
            try:
                out.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigurationError(f"trusted proxy {item!r} is not an address") from None
        return tuple(out)


def parse_address(text: str) -> _Address | None:
    """Parse one address as proxies write it, or return ``None``.

    Accepts ``1.2.3.4``, ``1.2.3.4:5555``, ``2001:db8::1``,
    ``[2001:db8::1]`` and ``[2001:db8::1]:443``. An IPv4-mapped IPv6 address
    (``::ffff:10.0.0.1``, what a dual-stack socket reports for an IPv4 peer)
    is returned as the IPv4 address.
    """
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return None
        text = host
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@final
class ClientResolver:
    """Turns a peer address and forwarding headers into the guard's client key.

    One resolver belongs to one middleware instance: the warning about
    requests without a peer address is logged once per resolver.
    """

    __slots__ = ("_guarded", "_nets", "_trust_unix", "_warned")

    def __init__(self, proxy: Proxy | None, *, guarded: bool = True) -> None:
        proxy = proxy or Proxy()
        self._nets = proxy.networks()
        self._trust_unix = proxy.trust_unix_socket
        self._guarded = guarded
        self._warned = False

    @property
    def trusts_proxies(self) -> bool:
        """Whether any proxy is trusted (an address, a network or the Unix socket)."""
        return bool(self._nets) or self._trust_unix

    def _trusted(self, addr: str | None) -> bool:
        if addr is None:
            return self._trust_unix
        ip = parse_address(addr)
        return ip is not None and any(ip in net for net in self._nets)

    def unknown_peer(self) -> None:
        """Note a request without a peer address that no setting vouches for.

        The first call logs a WARNING (when the engine has a guard): without
        a client address the guard counts nothing, so forged cookies never
        lead to a lock-out.
        """
        if self._warned or not self._guarded:
            return
        self._warned = True
        log.warning(
            "donjon: a request came without a client address (a server on a Unix "
            "socket?): the guard cannot tell clients apart and locks nobody out. "
            "If only your reverse proxy reaches this server, pass "
            "proxy=Proxy(trust_unix_socket=True) to read X-Forwarded-For."
        )

    def client(self, peer: str | None, forwarded_for: Iterable[str]) -> str | None:
        """Return the client address for a request.

        Headers are consulted only when the peer itself is a trusted proxy
        (or, with ``trust_unix_socket``, when there is no peer address);
        otherwise a forged ``X-Forwarded-For`` changes nothing. The
        right-most hop that is not a trusted proxy is the client; a hop that
        is no address gives the peer.
        """
        if not self.trusts_proxies or not self._trusted(peer):
            if peer is None:
                self.unknown_peer()
            return peer
        hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
        for hop in reversed(hops):
            ip = parse_address(hop)
            if ip is None:
                return peer
            if not any(ip in net for net in self._nets):
                return str(ip)
        if hops:
            first = parse_address(hops[0])
            return str(first) if first is not None else peer
        return peer

    def is_secure(self, scheme: str, peer: str | None, forwarded_proto: str | None) -> bool:
        """Whether the client's connection is HTTPS (directly or via a trusted proxy)."""
        if scheme in ("https", "wss"):
            return True
        if forwarded_proto and self.trusts_proxies and self._trusted(peer):
            return forwarded_proto.split(",")[0].strip().lower() == "https"
        return False


@final
class OutageLog:
    """Logs a store outage without flooding the log: one record (with its
    traceback) per ``every`` seconds; the next record counts the ones held back.

    During an outage every request fails the same way: thousands of
    identical tracebacks a second would bury everything else.
    """

    __slots__ = ("_every", "_lock", "_state")

    def __init__(self, every: float = 10.0) -> None:
        self._every = every
        self._state: dict[tuple[str, str], list[float]] = {}  # -> [last, held]
        self._lock = threading.Lock()

    def __call__(self, logger: logging.Logger, message: str) -> None:
        """Log ``message`` with the current exception, or count it (call in ``except``).

        Each message of each logger has its own period: one outage never
        hides the first record of another.
        """
        now = time.monotonic()
        with self._lock:
            state = self._state.setdefault((logger.name, message), [float("-inf"), 0])
            if now - state[0] < self._every:
                state[1] += 1
                return
            held = int(state[1])
            state[0], state[1] = now, 0
        if held:
            message += f" ({held} more like it in the last {self._every:g} s)"
        logger.error(message, exc_info=True)


store_unavailable: Final = OutageLog()
"""The adapters' shared outage log."""


def retry_after(seconds: float | None) -> str:
    """The ``Retry-After`` value for a lock-out: whole seconds, at least 1.

    Never raises: a value that is not a finite number (corrupt shared data)
    reads as one hour.
    """
    if seconds is None or not math.isfinite(seconds):
        return "3600"
    return str(max(1, min(math.ceil(seconds), 86_400)))


def response_headers(set_cookie: str | Sequence[str] | None) -> list[tuple[str, str]]:
    """Headers to add to a response whose session cookie(s) are set or cleared.

    ``Cache-Control: no-store`` keeps shared caches from storing a response
    that carries a session token (OWASP session cheat sheet).
    """
    if not set_cookie:
        return []
    values = [set_cookie] if isinstance(set_cookie, str) else list(set_cookie)
    return [*(("set-cookie", v) for v in values), ("cache-control", "no-store")]


_NEXT_MAX: Final = 2048
"""Longest ``next`` target followed, in bytes."""
_QUERY_MAX: Final = 16 * 1024
"""Longest query string searched for ``next``."""
_LOCATION_SAFE: Final = "/?&=%#:@!$'()*+,;[]~"
"""What stays as is in a redirect target; everything else is percent-encoded."""
_PATH_SAFE: Final = "/:@!$&'()*+,;=~"
"""What stays as is when a decoded path is encoded again (``?``, ``#`` and ``%`` do not)."""


def as_bytes(text: str | bytes, encoding: str = "latin-1") -> bytes:
    """The bytes behind a header or environ string, never raising.

    WSGI strings carry bytes as Latin-1 (PEP 3333); ASGI paths are UTF-8
    text. A string that is not what it should be is encoded as UTF-8, with
    what cannot be encoded replaced.
    """
    if isinstance(text, bytes):
        return text
    try:
        return text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def safe_next(query: str | bytes) -> str | None:
    """The ``next`` parameter of a query string when it is a local path, else ``None``.

    Only paths on this site are followed (``/x``, never ``//host``,
    ``/\\host`` or ``https://host``): the refresh path is no open redirect.
    The result is pure ASCII, ready for a ``Location`` header: the target's
    bytes are kept, and any byte outside printable ASCII is percent-encoded
    (``/%C4%80``). Never raises, whatever the query holds (bad escapes,
    invalid UTF-8, thousands of fields): anything odd is no target.
    """
    raw = as_bytes(query)
    if len(raw) > _QUERY_MAX:
        return None
    for field_ in raw.split(b"&"):
        name, sep, value = field_.partition(b"=")
        if not sep or urllib.parse.unquote_to_bytes(name.replace(b"+", b" ")) != b"next":
            continue
        target = urllib.parse.unquote_to_bytes(value.replace(b"+", b" "))
        if (
            target.startswith(b"/")
            and not target.startswith(b"//")
            and b"\\" not in target
            and not any(c < 0x21 or c == 0x7F for c in target)
            and len(target) <= _NEXT_MAX
        ):
            return urllib.parse.quote_from_bytes(target, safe=_LOCATION_SAFE)
        return None
    return None


def refresh_location(refresh_path: str, path: bytes, query: bytes) -> str:
    """Where to send a browser whose access credential has expired (pure ASCII).

    Args:
        refresh_path: The refresh path of the engine's
            :class:`~donjon.config.TwoCredentials`.
        path: The request's path, percent-decoded, as bytes (WSGI:
            ``PATH_INFO`` as Latin-1; ASGI: ``path`` as UTF-8).
        query: The raw query string.
    """
    target = urllib.parse.quote_from_bytes(path, safe=_PATH_SAFE)
    if query:
        target += "?" + urllib.parse.quote_from_bytes(query, safe=_LOCATION_SAFE)
    return f"{refresh_path}?next={urllib.parse.quote(target, safe='')}"


REFRESH_REQUIRED: Final = b'{"error":"refresh required"}'
"""Body of the 401 an unsafe request gets when its access credential expired."""
LOGIN_REQUIRED: Final = b'{"error":"login required"}'
"""Body of the 401 a failed refresh gets."""


BindingFn = Callable[..., "str | bytes | None"]
