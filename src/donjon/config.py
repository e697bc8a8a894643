"""Frozen policy objects: timeouts and cookie attributes.

Policies are checked when they are built: a bad one raises
:class:`~donjon.ConfigurationError` at start-up, not on the first request.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final, Literal

from .errors import ConfigurationError

__all__ = ["CookiePolicy", "Timeouts", "TwoCredentials"]

_COOKIE_NAME_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")
"""A cookie name: an RFC 7230 token (no separators, no space, no control character)."""
_ATTR_VALUE_RE: Final = re.compile(r"[!-+\--:<>-~]{1,1024}")
"""A ``Path`` or ``Domain`` value: printable ASCII without ``;``, ``,``, ``=`` or
whitespace (RFC 6265 av-value, narrowed; 1024 bytes is the browsers' limit)."""


def _attr_value(value: str) -> bool:
    return _ATTR_VALUE_RE.fullmatch(value) is not None


def _positive(name: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None:
        if allow_none:
            return
        raise ConfigurationError(f"{name} is required")
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """When sessions end.

    The defaults follow NIST SP 800-63B rev 3 for AAL2 (30 minutes idle,
    12 hours absolute); :meth:`aal2_rev4` and :meth:`aal3` give the other
    presets. The absolute timeout is definite: it is signed into the token at
    login and no renewal extends it. Activity resets only the idle timer.
    """

    idle: float | None = 30 * 60
    """Seconds of inactivity after which the session is IDLE_EXPIRED; ``None`` disables."""
    absolute: float = 12 * 3600
    """Seconds from login after which the token is EXPIRED, whatever the activity."""
    touch_interval: float | None = None
    """How stale the store's last-seen time may get before a request refreshes it.

    Refreshing on every request would cost a store write per request; by
    default it is refreshed once ``idle / 10`` (at most 60 s) has passed, so
    the idle timeout is enforced to within that slack.
    """

    def __post_init__(self) -> None:
        _positive("idle", self.idle, allow_none=True)
        _positive("absolute", self.absolute)
        _positive("touch_interval", self.touch_interval, allow_none=True)
        if self.absolute > 400 * 24 * 3600:
            raise ConfigurationError("absolute must be at most 400 days (the browsers' cap)")
        if self.idle is not None and self.idle > self.absolute:
            raise ConfigurationError("idle must not exceed absolute")

    @property
    def touch_every(self) -> float:
        """The effective last-seen refresh interval in seconds."""
        if self.touch_interval is not None:
            return self.touch_interval
        if self.idle is None:
            return 3600.0
        return min(60.0, self.idle / 10)

    @classmethod
    def aal2(cls) -> Timeouts:
        """NIST SP 800-63B rev 3, AAL2: 30 minutes idle, 12 hours absolute."""
        return cls(idle=30 * 60, absolute=12 * 3600)

    @classmethod
    def aal2_rev4(cls) -> Timeouts:
        """NIST SP 800-63B-4, AAL2: 1 hour idle, 24 hours absolute."""
        return cls(idle=3600, absolute=24 * 3600)

    @classmethod
    def aal3(cls) -> Timeouts:
        """NIST SP 800-63B, AAL3: 15 minutes idle, 12 hours absolute."""
        return cls(idle=15 * 60, absolute=12 * 3600)


SameSite = Literal["lax", "strict", "none"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CookiePolicy:
    """The attributes of the session cookie, secure by default.

    With the defaults the cookie is ``__Host-donjon``: ``Secure``,
    ``HttpOnly``, ``SameSite=Lax``, ``Path=/``, no ``Domain``, and a
    ``Max-Age`` equal to the token's remaining life. The ``__Host-`` prefix is
    added only when the rules allow it (secure, path ``/``, no domain).
    """

    name: str = "donjon"
    """Base cookie name; a generic name that does not fingerprint the framework."""
    secure: bool = True
    http_only: bool = True
    same_site: SameSite = "lax"
    path: str = "/"
    domain: str | None = None
    host_prefix: bool = True
    """Add ``__Host-`` to the name when secure, path ``/`` and no domain."""
    persistent: bool = True
    """Send ``Max-Age``; ``False`` makes a browser-session cookie."""

    def __post_init__(self) -> None:
        if not _COOKIE_NAME_RE.fullmatch(self.name) or self.name.startswith("__"):
            raise ConfigurationError(
                f"cookie name {self.name!r} must be a plain token (prefixes are added for you)"
            )
        if self.same_site not in ("lax", "strict", "none"):
            raise ConfigurationError("same_site must be 'lax', 'strict' or 'none'")
        if self.same_site == "none" and not self.secure:
            raise ConfigurationError(
                "same_site='none' requires secure=True (browsers reject it otherwise)"
            )
        if not self.path.startswith("/") or not _attr_value(self.path):
            raise ConfigurationError(
                f"cookie path {self.path!r} must start with '/' and be printable ASCII "
                "without ';', ',', '=' or whitespace (percent-encode anything else)"
            )
        if self.domain is not None and not _attr_value(self.domain):
            raise ConfigurationError(
                f"cookie domain {self.domain!r} must be a plain ASCII host name "
                "(use the IDNA form, e.g. 'xn--fiq228c.example', for a non-ASCII one)"
            )

    @property
    def cookie_name(self) -> str:
        """The name actually used, with ``__Host-`` or ``__Secure-`` when they apply."""
        if self.secure and self.host_prefix and self.path == "/" and self.domain is None:
            return f"__Host-{self.name}"
        if self.secure:
            return f"__Secure-{self.name}"
        return self.name

    def header(self, value: str, *, max_age: int | None) -> str:
        """Return a ``Set-Cookie`` header value for ``value``.

        Args:
            value: The cookie value (a token; cookie-safe by construction).
            max_age: Seconds the browser keeps the cookie; ``0`` deletes it;
                ``None`` makes a browser-session cookie.
        """
        parts = [f"{self.cookie_name}={value}", f"Path={self.path}"]
        if self.domain is not None:
            parts.append(f"Domain={self.domain}")
        if max_age is not None:
            parts.append(f"Max-Age={max(0, int(max_age))}")
            if max_age <= 0:
                parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        if self.secure:
            parts.append("Secure")
        if self.http_only:
            parts.append("HttpOnly")
        parts.append(f"SameSite={self.same_site.capitalize()}")
        return "; ".join(parts)

    def clear_header(self) -> str:
        """Return a ``Set-Cookie`` header value that deletes the cookie."""
        return self.header("", max_age=0)


@dataclass(frozen=True, slots=True, kw_only=True)
class TwoCredentials:
    """The two-credential mode: a short-lived access credential and a refresh credential.

    The **access** credential is a sealed cookie (AES-256-GCM) sent on every
    request and checked without any store call; it expires after
    ``access_ttl``. The **refresh** credential is a signed token whose
    session lives in the store; its cookie is sent only to ``refresh_path``
    (with the session cookie's ``SameSite``, never ``None``). When the access
    credential has expired the middleware sends the browser through the
    refresh path (one store call), which issues a new access credential
    and rotates the refresh credential. A refresh credential used twice
    kills its whole session (reuse detection). Logout deletes the record and
    clears both cookies; the kill switch revokes both at once.

    Not guaranteed: a copied access credential keeps working until it
    expires (at most ``access_ttl``) even after logout — keep it short.
    """

    access_ttl: float = 300.0
    """Seconds an access credential is valid (minutes, not hours)."""
    refresh_path: str = "/_donjon/refresh"
    """The only path the refresh cookie is sent to; the middleware answers it."""
    refresh_name: str = "donjon-refresh"
    """Base name of the refresh cookie (``__Secure-`` is added when secure)."""

    def __post_init__(self) -> None:
        _positive("access_ttl", self.access_ttl)
        if self.access_ttl > 3600:
            raise ConfigurationError("access_ttl must be at most an hour: it cannot be revoked")
        if (
            not self.refresh_path.startswith("/")
            or self.refresh_path == "/"
            or not _attr_value(self.refresh_path)
            or any(c in self.refresh_path for c in "?#%")
        ):
            raise ConfigurationError(
                "refresh_path must be a path of its own in plain ASCII (no query, no "
                "';', ',', '=', '%' or whitespace), e.g. /_donjon/refresh"
            )
        if not _COOKIE_NAME_RE.fullmatch(self.refresh_name) or self.refresh_name.startswith("__"):
            raise ConfigurationError(
                f"refresh cookie name {self.refresh_name!r} must be a plain token "
                "(prefixes are added for you)"
            )

    def refresh_cookie(self, cookie: CookiePolicy) -> CookiePolicy:
        """The policy of the refresh cookie, derived from the session cookie's."""
        return CookiePolicy(
            name=self.refresh_name,
            secure=cookie.secure,
            http_only=True,
            # Lax, not Strict: after a link from another site the browser is sent
            # through the refresh path, and a Strict cookie would not come along.
            same_site="lax" if cookie.same_site == "none" else cookie.same_site,
            path=self.refresh_path,
            domain=cookie.domain,
            host_prefix=False,
            persistent=cookie.persistent,
        )
