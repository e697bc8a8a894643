"""Interoperability with Node's express-session and connect-redis.

A Python service and an Express service can share one login during a
migration: both read the same ``connect.sid`` cookie, signed with the same
secret list, and the same ``sess:<id>`` records in one Redis.

* :class:`ExpressSigner` reads and writes the cookie value exactly as
  express-session does (``s:<id>.<base64 HMAC-SHA256 without padding>``,
  URL-encoded; the first secret signs, every secret verifies). It is pure
  code: no I/O, and it never raises on client input.
* :class:`ExpressEngine` / :class:`AsyncExpressEngine` load a donjon
  :class:`~donjon.session.Session` from that cookie and a connect-redis
  record, and save it back in the format connect-redis writes, with the TTL it
  would compute.
* :class:`ExpressSessionMiddleware` is the ASGI middleware; it can also
  *upgrade* each valid Express session to a native donjon token on first use.

What is shared and what is not: an express-session id is a random string
signed with a static HMAC; it carries no issue time, expiry, key id or
binding. The layers of donjon that need those — the epoch kill switch, signed
absolute expiry, key rotation with retired key ids, binding — apply only to
native donjon tokens. Lifetime comes from the Redis TTL alone, as in
connect-redis. See ``docs/express-migration.md`` and ``docs/threat-model.md``.

Needs the ``redis`` extra for the engines (the signer needs nothing).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Literal, final

from ..adapters._common import (
    ERROR_BODIES,
    ClientResolver,
    Proxy,
    response_headers,
    store_unavailable,
)
from ..adapters._common import retry_after as retry_after_value
from ..adapters._cookies import find_cookie
from ..adapters.asgi import SessionMiddleware
from ..core import Secret, SystemClock, Verdict, VerifyResult
from ..core._ids import record_key
from ..engine._options import DEFAULT_GUARD
from ..errors import ConfigurationError, MissingDependency, StoreUnavailable
from ..events import EventHook, Events, VerdictEvent
from ..guard import Guard
from ..session import Session

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

    from ..engine import AsyncEngine
    from ..typing import Clock

__all__ = [
    "AsyncExpressEngine",
    "DEFAULT_COOKIE_NAME",
    "DEFAULT_PREFIX",
    "DEFAULT_TTL",
    "EXPRESS_CLASS",
    "ExpressContext",
    "ExpressCookie",
    "ExpressEngine",
    "ExpressOutcome",
    "ExpressSessionMiddleware",
    "ExpressSigner",
    "MAX_COOKIE_LENGTH",
    "decode_uri_component",
    "encode_uri_component",
    "new_express_id",
]

log = logging.getLogger("donjon.compat.express")

DEFAULT_COOKIE_NAME: Final = "connect.sid"
"""express-session's default cookie name."""
DEFAULT_PREFIX: Final = "sess:"
"""connect-redis's default key prefix."""
DEFAULT_TTL: Final = 86400
"""connect-redis's TTL (seconds) for records whose cookie has no expiry."""
EXPRESS_CLASS: Final = "express"
"""The ``session_class`` of sessions loaded from express-session cookies."""
MAX_COOKIE_LENGTH: Final = 512
"""Longest cookie value :meth:`ExpressSigner.verify` looks at, by default.

A default express-session cookie is 80 characters (``s%3A``, a 32-character
id, a dot and 43 characters of MAC).
"""

_MAC_LEN: Final = 43  # base64 of 32 bytes, without the "=" padding
_MAC_RE: Final = re.compile(r"[A-Za-z0-9+/]{43}")
_PCT_RUN: Final = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
# encodeURIComponent leaves exactly these (plus letters and digits) alone.
_URI_SAFE: Final = "-_.!~*'()"
# The `cookie` package's checks (cookie 0.7.2, used by express-session).
_COOKIE_NAME_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DOMAIN_RE: Final = re.compile(
    r"([.]?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)([.][a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*",
    re.IGNORECASE,
)
_PATH_RE: Final = re.compile(r"[\x20-\x3a\x3d-\x7e]*")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MS: Final = 253402300799999  # 9999-12-31T23:59:59.999Z
_MAX_ID_LENGTH: Final = 256
_MAX_AGE_LIMIT: Final = 400 * 24 * 3600.0


# --------------------------------------------------------------------------
# encodeURIComponent / decodeURIComponent
# --------------------------------------------------------------------------


def encode_uri_component(text: str) -> str:
    """Return ``text`` encoded as JavaScript's ``encodeURIComponent`` does.

    Raises:
        ValueError: ``text`` holds a lone surrogate (JavaScript throws
            ``URIError`` there too).
    """
    try:
        return urllib.parse.quote(text, safe=_URI_SAFE, encoding="utf-8", errors="strict")
    except UnicodeEncodeError:
        raise ValueError("text holds a lone surrogate: it has no UTF-8 form") from None


def decode_uri_component(text: str) -> str | None:
    """Return ``text`` decoded as JavaScript's ``decodeURIComponent`` does, or ``None``.

    ``None`` stands for JavaScript's ``URIError``: a ``%`` not followed by two
    hex digits, or escapes that are not well-formed UTF-8 (overlong forms,
    surrogates and truncated sequences included). Never raises.
    """
    if "%" not in text:
        return text
    out: list[str] = []
    pos = 0
    for match in _PCT_RUN.finditer(text):
        plain = text[pos : match.start()]
        if "%" in plain:
            return None
        out.append(plain)
        try:
            out.append(bytes.fromhex(match.group().replace("%", "")).decode("utf-8"))
        except UnicodeDecodeError:
            return None
        pos = match.end()
    rest = text[pos:]
    if "%" in rest:
        return None
    out.append(rest)
    return "".join(out)


# --------------------------------------------------------------------------
# The cookie codec
# --------------------------------------------------------------------------


def _malformed(reason: str) -> VerifyResult:
    return VerifyResult(Verdict.MALFORMED, reason=reason)


_TOO_LONG: Final = _malformed("too_long")
_NOT_TEXT: Final = _malformed("not_text")
_NOT_ASCII: Final = _malformed("not_ascii")
_EMPTY: Final = _malformed("empty")
_BAD_ENCODING: Final = _malformed("bad_encoding")
_UNSIGNED: Final = _malformed("unsigned")
_NO_DOT: Final = _malformed("no_signature")
_MAC_SHAPE: Final = _malformed("mac_shape")
_EMPTY_ID: Final = _malformed("empty_id")
_LONG_ID: Final = _malformed("id_too_long")
_BAD_MAC: Final = VerifyResult(Verdict.FORGED, reason="bad_mac")


def _secret_bytes(value: Secret | str | bytes, index: int, allow_weak: bool) -> bytes:
    name = f"express-session secret #{index}"
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, str):
        raw = value.encode("utf-8")  # Node's crypto.createHmac reads a string key as UTF-8
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    else:
        raise ConfigurationError(f"{name} must be str, bytes or Secret, not {type(value).__name__}")
    if not raw:
        # express-session treats an empty secret as none at all.
        raise ConfigurationError(f"{name} is empty")
    if allow_weak:
        return raw
    return Secret(raw, name=name).reveal()  # raises WeakSecret below 32 bytes


@final
class ExpressSigner:
    """Sign and verify express-session cookie values (cookie-signature rules).

    A signed value is ``s:<id>.<mac>`` where ``<mac>`` is the base64 (standard
    alphabet, ``=`` padding removed) HMAC-SHA256 of the UTF-8 id under a
    secret; in the cookie it is URL-encoded with ``encodeURIComponent``
    (``s%3A...``), as express-session sets it. The first secret signs; every
    secret verifies, tried in order, as express-session's ``unsigncookie``.

    Guarantees of :meth:`verify`: it never raises on client input (any
    ``str``, ``bytes`` or other object); input longer than ``max_length`` is
    MALFORMED before any other work; the signature is checked as
    cookie-signature's ``unsign`` does — the value is re-signed and the whole
    text compared, here with :func:`hmac.compare_digest` — so a value is
    VALID exactly when express-session would accept it, except for the
    differences below. It never touches a store.

    Not guaranteed, and deliberately different from express-session (each is
    MALFORMED here, while express-session may accept it):

    * a value over ``max_length`` characters;
    * raw non-ASCII characters in the cookie (express-session never writes
      them: ``encodeURIComponent`` output is ASCII);
    * invalid percent-encoding (the ``cookie`` package then falls back to the
      raw text; express-session never writes such a value);
    * a validly signed empty id (express-session treats it as no cookie);
    * an id longer than 256 characters, which :meth:`sign` would refuse (so a
      session that must be re-signed could not be saved).

    Not provided at all: an expiry or issue time. An express-session id is
    valid for as long as its record lives; see the module docstring.

    Args:
        secrets: One secret or a list; the first signs. ``str`` secrets are
            used as UTF-8, as Node does.
        allow_weak_secrets: Accept secrets shorter than 32 bytes (Express
            apps often have ``"keyboard cat"``). Use it only to read an
            existing app's cookies, and rotate: put a strong secret first.
        max_length: Longest cookie value (as sent, URL-encoded) looked at.

    Raises:
        ConfigurationError: No secret, an empty one, or a bad ``max_length``.
        WeakSecret: A secret under 32 bytes without ``allow_weak_secrets``.
    """

    __slots__ = ("_keys", "_max_length")

    def __init__(
        self,
        secrets: Sequence[Secret | str | bytes] | Secret | str | bytes,
        *,
        allow_weak_secrets: bool = False,
        max_length: int = MAX_COOKIE_LENGTH,
    ) -> None:
        if isinstance(secrets, (Secret, str, bytes, bytearray, memoryview)):
            items: list[Secret | str | bytes] = [
                bytes(secrets) if isinstance(secrets, memoryview) else secrets
            ]
        else:
            items = list(secrets)
        if not items:
            raise ConfigurationError("express-session needs at least one secret; the first signs")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 80:
            raise ConfigurationError("max_length must be an int >= 80 (a default cookie's size)")
        self._keys = tuple(
            hmac.new(_secret_bytes(s, i, allow_weak_secrets), digestmod=hashlib.sha256)
            for i, s in enumerate(items)
        )
        self._max_length = max_length

    @property
    def secret_count(self) -> int:
        """How many secrets verify (the first one also signs)."""
        return len(self._keys)

    @property
    def max_length(self) -> int:
        """The longest cookie value :meth:`verify` looks at."""
        return self._max_length

    def _mac(self, index: int, value: str) -> str:
        h = self._keys[index].copy()
        h.update(value.encode("utf-8"))
        return base64.b64encode(h.digest()).decode("ascii").rstrip("=")

    def sign(self, session_id: str) -> str:
        """Return ``s:<id>.<mac>`` (not URL-encoded), signed with the first secret.

        This is ``"s:" + cookieSignature.sign(id, secrets[0])``.

        Raises:
            ValueError: ``session_id`` is not a non-empty ``str`` with a UTF-8
                form (no lone surrogates) of at most 256 characters.
        """
        _check_id(session_id)
        return f"s:{session_id}.{self._mac(0, session_id)}"

    def cookie_value(self, session_id: str) -> str:
        """Return the cookie value express-session would set for ``session_id``.

        That is :meth:`sign`, URL-encoded (``s%3A<id>.<mac>``, ``/`` and ``+``
        of the MAC as ``%2F`` and ``%2B``).
        """
        return encode_uri_component(self.sign(session_id))

    def verify(self, value: object) -> VerifyResult:
        """Return the verdict for a presented cookie value. Never raises on client input.

        Args:
            value: The cookie's value as sent (URL-encoded, possibly quoted).

        Returns:
            A :class:`~donjon.VerifyResult`: VALID with ``session_id`` and
            ``key_id`` (the index, as text, of the secret that verified it:
            ``"0"`` is the signing one); MALFORMED (not ``s:`` prefixed, bad
            encoding, too long, no 43-character MAC, an id over 256
            characters); or FORGED (no secret gives that MAC). UNKNOWN comes
            later, from the store.
        """
        if isinstance(value, str):
            text = value
        elif isinstance(value, (bytes, bytearray)):
            if len(value) > self._max_length:
                return _TOO_LONG
            if not value.isascii():
                return _NOT_ASCII
            text = bytes(value).decode("ascii")
        else:
            return _NOT_TEXT
        if len(text) > self._max_length:
            return _TOO_LONG
        if not text:
            return _EMPTY
        if not text.isascii():
            return _NOT_ASCII
        # The `cookie` package strips one pair of surrounding double quotes.
        if text[0] == '"' and text[-1] == '"':
            text = text[1:-1]
        decoded = decode_uri_component(text)
        if decoded is None:
            return _BAD_ENCODING
        if not decoded.startswith("s:"):
            return _UNSIGNED
        signed = decoded[2:]
        dot = signed.rfind(".")
        if dot < 0:
            return _NO_DOT
        if not _MAC_RE.fullmatch(signed, dot + 1):
            return _MAC_SHAPE
        tentative = signed[:dot]
        if len(tentative) > _MAX_ID_LENGTH:
            return _LONG_ID  # sign() refuses it: one limit for reading and writing
        # Decoded text is valid Unicode (ASCII input, strict UTF-8 escapes): encodable.
        given = signed.encode("utf-8")
        for index in range(len(self._keys)):
            expected = f"{tentative}.{self._mac(index, tentative)}".encode()
            if hmac.compare_digest(expected, given):
                if not tentative:
                    return _EMPTY_ID
                return VerifyResult(
                    Verdict.VALID,
                    session_id=tentative,
                    session_class=EXPRESS_CLASS,
                    key_id=str(index),
                )
        return _BAD_MAC

    def __repr__(self) -> str:
        return f"ExpressSigner(secrets={len(self._keys)}, max_length={self._max_length})"


def _check_id(session_id: object) -> str:
    if (
        not isinstance(session_id, str)
        or not session_id
        or len(session_id) > _MAX_ID_LENGTH
        or not _encodable(session_id)
    ):
        raise ValueError(
            f"an express-session id must be a non-empty str of at most {_MAX_ID_LENGTH}"
            " characters with a UTF-8 form"
        )
    return session_id


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def new_express_id() -> str:
    """Return a new id as express-session's default ``genid`` (``uid-safe``, 24 bytes) makes."""
    return secrets.token_urlsafe(24)


# --------------------------------------------------------------------------
# The cookie object of a connect-redis record
# --------------------------------------------------------------------------


def _ms(now: float) -> int:
    return round(now * 1000)


def _iso(ms: int) -> str:
    """JavaScript's ``Date.prototype.toISOString`` (what ``JSON.stringify`` writes).

    Times outside 1970-9999 (only a corrupt record's ``originalMaxAge`` gets
    there) are clamped: JavaScript would write a six-digit year or throw.
    """
    ms = min(max(ms, 0), _MAX_MS)
    dt = _EPOCH + timedelta(milliseconds=ms)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _parse_date(value: object) -> int | None:
    """Unix milliseconds of a stored ``expires`` (ISO text), or ``None``."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def _utc_string(ms: int) -> str:
    """JavaScript's ``Date.prototype.toUTCString`` (``Expires`` attributes)."""
    return format_datetime(_EPOCH + timedelta(milliseconds=ms), usegmt=True)


def _truthy(value: object) -> bool:
    # JavaScript truthiness of a JSON value.
    if isinstance(value, float) and math.isnan(value):
        return False
    return value not in (None, False, 0, "")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


SameSite = Literal["lax", "strict", "none"]


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ExpressCookie:
    """express-session's ``name`` and ``cookie`` options, for sessions donjon creates.

    Use the values the Express app has: a session created on either side then
    carries the same ``cookie`` object. The defaults are express-session's
    (so ``max_age=None`` is a browser-session cookie and its record lives
    :data:`DEFAULT_TTL` seconds), except that nothing insecure is implied:
    ``same_site="none"`` needs ``secure``.

    A session loaded from a record keeps that record's ``cookie`` object, as
    express-session does: these options shape only new sessions (and the
    clearing of cookies).
    """

    name: str = DEFAULT_COOKIE_NAME
    """The cookie name (express-session's ``name``)."""
    max_age: float | None = None
    """Seconds (express-session's ``cookie.maxAge`` is in milliseconds); ``None``: no expiry."""
    path: str = "/"
    domain: str | None = None
    http_only: bool = True
    secure: bool | Literal["auto"] | None = None
    """``True``, ``False``, ``"auto"`` (secure when the request is), or ``None`` (unset)."""
    same_site: SameSite | None = None
    partitioned: bool | None = None
    priority: Literal["low", "medium", "high"] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _COOKIE_NAME_RE.fullmatch(self.name):
            raise ConfigurationError(f"cookie name {self.name!r} is not a valid cookie name")
        if self.max_age is not None:
            age = _number(self.max_age)
            if age is None or not 0 < age <= _MAX_AGE_LIMIT:
                raise ConfigurationError("max_age must be > 0 and at most 400 days, in seconds")
        if not self.path.startswith("/") or not _PATH_RE.fullmatch(self.path):
            raise ConfigurationError("path must start with '/' and hold no ';' or control chars")
        if self.domain is not None and not _DOMAIN_RE.fullmatch(self.domain):
            raise ConfigurationError(f"domain {self.domain!r} is not a plain host name")
        if self.secure not in (True, False, "auto", None):
            raise ConfigurationError("secure must be True, False, 'auto' or None")
        if self.same_site not in ("lax", "strict", "none", None):
            raise ConfigurationError("same_site must be 'lax', 'strict', 'none' or None")
        if self.same_site == "none" and self.secure not in (True, "auto"):
            raise ConfigurationError("same_site='none' requires secure=True or 'auto'")
        if self.priority not in ("low", "medium", "high", None):
            raise ConfigurationError("priority must be 'low', 'medium', 'high' or None")

    def new_cookie(self, now_ms: int, *, secure: bool) -> dict[str, Any]:
        """Return the ``cookie`` object express-session would store for a new session.

        The keys and their order are those of express-session's
        ``Cookie#toJSON``; ``expires`` is already reset to ``now + maxAge``,
        as express-session's ``touch()`` does before saving.
        """
        oma = None if self.max_age is None else round(self.max_age * 1000)
        cookie: dict[str, Any] = {"originalMaxAge": oma}
        if self.partitioned is not None:
            cookie["partitioned"] = self.partitioned
        if self.priority is not None:
            cookie["priority"] = self.priority
        cookie["expires"] = None if oma is None else _iso(now_ms + oma)
        flag = secure if self.secure == "auto" else self.secure
        if flag is not None:
            cookie["secure"] = flag
        cookie["httpOnly"] = self.http_only
        if self.domain is not None:
            cookie["domain"] = self.domain
        cookie["path"] = self.path
        if self.same_site is not None:
            cookie["sameSite"] = self.same_site
        return cookie


def _touch(cookie: dict[str, Any], now_ms: int) -> None:
    # express-session's Session#touch: maxAge = originalMaxAge, i.e. expires = now + it.
    oma = _number(cookie.get("originalMaxAge"))
    if oma is None:
        cookie["originalMaxAge"] = None
        cookie["expires"] = None
    else:
        cookie["expires"] = _iso(now_ms + round(oma))


# --------------------------------------------------------------------------
# Results and per-request state
# --------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ExpressOutcome:
    """What the response must carry after a commit."""

    set_cookie: str | None = None
    """A ``Set-Cookie`` header value (the cookie, or its deletion), or ``None``."""
    interrupted: bool = False
    """The record vanished during the request (logged out elsewhere); the cookie is cleared."""


_NOTHING: Final = ExpressOutcome()


@final
class ExpressContext:
    """One request's express-session state: the session and its record's cookie object.

    :meth:`AsyncExpressEngine.load` returns it; give it back to
    :meth:`~AsyncExpressEngine.commit` at the end of the request.
    """

    __slots__ = ("cookie", "presented", "secure", "session")

    def __init__(
        self,
        session: Session,
        *,
        cookie: dict[str, Any] | None,
        presented: bool,
        secure: bool,
    ) -> None:
        self.session = session
        """The donjon session: the record's data without ``cookie``."""
        self.cookie = cookie
        """The record's ``cookie`` object (``None`` until a new session is saved)."""
        self.presented = presented
        """Whether the request carried the cookie at all."""
        self.secure = secure
        """Whether the request came over HTTPS (directly or via a trusted proxy)."""

    def __repr__(self) -> str:
        return f"ExpressContext({self.session!r}, presented={self.presented})"


@dataclass(frozen=True, slots=True)
class _Set:
    key: str
    value: str
    ttl: int | None
    existing: bool  # SET ... XX: never bring back a record deleted meanwhile


@dataclass(frozen=True, slots=True)
class _Del:
    key: str


@dataclass(frozen=True, slots=True)
class _Expire:
    key: str
    ttl: int


_Op = _Set | _Del | _Expire


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# JSON.parse refuses NaN and Infinity, and _dumps could not write them back.
_RECORD_DECODER: Final = json.JSONDecoder(parse_constant=_no_constant)


def _parse_record(raw: bytes | str) -> tuple[dict[str, Any], dict[str, str]] | None:
    """The record's object and each data field as JSON text; ``None`` when unusable.

    Stored data is as untrusted as a cookie: invalid UTF-8 or JSON, NaN, numbers
    too long for Python, or nesting deeper than the recursion limit all end here.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        obj = _RECORD_DECODER.decode(text)
        if not isinstance(obj, dict) or not isinstance(obj.get("cookie"), dict):
            return None
        fields = {k: _dumps(v) for k, v in obj.items() if k != "cookie"}
        _dumps(obj["cookie"])  # written back at commit: it must be writable
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError too
        return None
    return obj, fields


# --------------------------------------------------------------------------
# The engine's logic, sans I/O
# --------------------------------------------------------------------------


@final
class _Core:
    """Everything the two engine faces decide, with no I/O."""

    __slots__ = (
        "cookie",
        "disable_touch",
        "disable_ttl",
        "events",
        "genid",
        "guard",
        "now",
        "prefix",
        "rolling",
        "signer",
        "ttl",
        "user_field",
    )

    def __init__(
        self,
        *,
        signer: ExpressSigner,
        cookie: ExpressCookie | None,
        prefix: str,
        ttl: int,
        disable_ttl: bool,
        disable_touch: bool,
        rolling: bool,
        genid: Callable[[], str] | None,
        user_field: str | None,
        clock: Clock | None,
        guard: Guard | None,
        events: Events | Iterable[EventHook] | None,
    ) -> None:
        if not isinstance(signer, ExpressSigner):
            raise ConfigurationError("signer must be an ExpressSigner")
        if not isinstance(prefix, str):
            raise ConfigurationError("prefix must be a str ('sess:' by default)")
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            raise ConfigurationError("ttl must be a positive int of seconds")
        if user_field is not None and (not isinstance(user_field, str) or user_field == "cookie"):
            raise ConfigurationError("user_field must be a data key other than 'cookie'")
        self.signer = signer
        self.cookie = cookie or ExpressCookie()
        self.prefix = prefix
        self.ttl = ttl
        self.disable_ttl = disable_ttl
        self.disable_touch = disable_touch
        self.rolling = rolling
        self.genid = genid or new_express_id
        self.user_field = user_field
        self.now = (clock or SystemClock()).time
        self.guard = Guard() if guard is DEFAULT_GUARD else guard
        self.events = events if isinstance(events, Events) else Events(events or ())

    def key(self, session_id: str) -> str:
        return self.prefix + session_id

    def new_id(self) -> str:
        sid = self.genid()
        try:
            return _check_id(sid)
        except ValueError:
            raise ConfigurationError(
                f"genid must return a non-empty str of at most {_MAX_ID_LENGTH} characters"
            ) from None

    # -- loading ------------------------------------------------------------
    def client_key(self, client: str | None) -> str | None:
        return self.guard.key_of(client) if self.guard is not None else client

    def fresh(self, result: VerifyResult | None, verdict: Verdict | None = None) -> Session:
        v = verdict if verdict is not None else (result.verdict if result else Verdict.ABSENT)
        return Session(
            session_class=EXPRESS_CLASS,
            verdict=v,
            reason=result.reason if result else "",
            key_id=result.key_id if result else None,
        )

    def locked_out(self, client: str | None, now: float) -> Session | None:
        if self.guard is None:
            return None
        wait = self.guard.retry_after(client, now)
        if wait is None:
            return None
        session = self.fresh(None, Verdict.LOCKED_OUT)
        session.reason = "locked_out"
        session.retry_after = wait
        return session

    def from_record(
        self, result: VerifyResult, token: str, raw: bytes | str | None
    ) -> tuple[Session, dict[str, Any] | None]:
        """Turn a signature-valid cookie and the stored JSON into a session."""
        sid = result.session_id or ""
        if raw is None:
            return self.fresh(result, Verdict.UNKNOWN), None
        parsed = _parse_record(raw)
        if parsed is None:
            log.error(
                "express-session record %s is not a JSON object with a cookie; treated as missing",
                record_key(sid)[:12],
            )
            return self.fresh(result, Verdict.UNKNOWN), None
        obj, raw_fields = parsed
        cookie = obj["cookie"]
        data = {k: v for k, v in obj.items() if k != "cookie"}
        user_id = None
        if self.user_field is not None:
            value = data.get(self.user_field)
            if isinstance(value, str) and value:
                user_id = value
            elif isinstance(value, int) and not isinstance(value, bool):
                user_id = str(value)
        expires = _parse_date(cookie.get("expires"))
        session = Session(
            data=data,
            raw=raw_fields,
            session_id=sid,
            session_class=EXPRESS_CLASS,
            user_id=user_id,
            verdict=Verdict.VALID,
            key_id=result.key_id,
            token=token,
            expires_at=None if expires is None else expires / 1000,
        )
        if result.key_id != "0":
            # Verified by an older secret: re-sign with the first one at commit.
            session.reissue()
        return session, cookie

    def finish(
        self, session: Session, *, client: str | None, path: str | None, now: float, started: float
    ) -> Session:
        if self.guard is not None and self.guard.record(client, session.verdict, now):
            log.warning("donjon guard: client %s locked out", client)
        self.events.emit(
            VerdictEvent(
                verdict=session.verdict,
                reason=session.reason,
                session_class=EXPRESS_CLASS if session.verdict is Verdict.VALID else None,
                key_id=session.key_id,
                client=client,
                path=path,
                session_ref=record_key(session.id)[:12] if session.id else None,
                time=now,
                duration=time.perf_counter() - started,
            )
        )
        return session

    # -- committing -----------------------------------------------------------
    def ttl_of(self, cookie: Mapping[str, Any], now_ms: int) -> int:
        """The record's TTL in seconds, as connect-redis's ``getTTL`` computes it."""
        if _truthy(cookie.get("expires")):
            expires = _parse_date(cookie.get("expires"))
            if expires is None:
                return 0  # Node: NaN, which no `ttl > 0` check passes
            return -((now_ms - expires) // 1000)  # Math.ceil(ms / 1000)
        return self.ttl

    def dump(self, cookie: Mapping[str, Any], session: Session) -> str:
        """The record as connect-redis stores it: ``cookie`` first, then the data."""
        data = session.data()
        if "cookie" in data:
            log.warning("session key 'cookie' is reserved by express-session; not saved")
            del data["cookie"]
        if self.user_field is not None and session.user_changed and session.user_id is not None:
            data[self.user_field] = session.user_id
        return _dumps({"cookie": cookie, **data})

    def header(self, session_id: str, cookie: Mapping[str, Any]) -> str:
        """The ``Set-Cookie`` value express-session sends for this cookie object."""
        parts = [f"{self.cookie.name}={self.signer.cookie_value(session_id)}"]
        domain = cookie.get("domain")
        if isinstance(domain, str) and domain and _DOMAIN_RE.fullmatch(domain):
            parts.append(f"Domain={domain}")
        path = cookie.get("path")
        if not (isinstance(path, str) and path and _PATH_RE.fullmatch(path)):
            path = self.cookie.path
        parts.append(f"Path={path}")
        expires = _parse_date(cookie.get("expires"))
        if expires is not None:
            parts.append(f"Expires={_utc_string(expires)}")
        if _truthy(cookie.get("httpOnly")):
            parts.append("HttpOnly")
        if _truthy(cookie.get("secure")):
            parts.append("Secure")
        if _truthy(cookie.get("partitioned")):
            parts.append("Partitioned")
        priority = cookie.get("priority")
        if isinstance(priority, str) and priority.lower() in ("low", "medium", "high"):
            parts.append(f"Priority={priority.lower().capitalize()}")
        same_site = cookie.get("sameSite")
        if same_site is True:
            parts.append("SameSite=Strict")
        elif isinstance(same_site, str) and same_site.lower() in ("lax", "strict", "none"):
            parts.append(f"SameSite={same_site.lower().capitalize()}")
        return "; ".join(parts)

    def clear_header(self, cookie: Mapping[str, Any] | None = None) -> str:
        """A ``Set-Cookie`` value deleting the cookie (the record's path and domain)."""
        c = cookie or {}
        parts = [f"{self.cookie.name}="]
        domain = c.get("domain", self.cookie.domain)
        if isinstance(domain, str) and domain and _DOMAIN_RE.fullmatch(domain):
            parts.append(f"Domain={domain}")
        path = c.get("path")
        if not (isinstance(path, str) and path and _PATH_RE.fullmatch(path)):
            path = self.cookie.path
        parts.append(f"Path={path}")
        parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        if self.cookie.http_only:
            parts.append("HttpOnly")
        if _truthy(c.get("secure", self.cookie.secure is True)):
            parts.append("Secure")
        return "; ".join(parts)

    def _send(
        self, ctx: ExpressContext, session_id: str, cookie: Mapping[str, Any]
    ) -> ExpressOutcome:
        if _truthy(cookie.get("secure")) and not ctx.secure:
            # express-session: "only send secure cookies via https".
            return _NOTHING
        return ExpressOutcome(set_cookie=self.header(session_id, cookie))

    def plan(self, ctx: ExpressContext, now: float) -> tuple[list[_Op], ExpressOutcome]:
        """List the Redis operations and the cookie outcome that end a request.

        Mirrors express-session with ``resave: false`` and
        ``saveUninitialized: false``: a new session is saved only once
        changed; an unchanged one is only touched (``EXPIRE``); a changed one
        is written whole (``SET ... EX``), as connect-redis does.
        """
        s = ctx.session
        ops: list[_Op] = []
        now_ms = _ms(now)
        if s.destroyed:
            if s.id is not None:
                ops.append(_Del(self.key(s.id)))
            if s.previous_id is not None and s.previous_id != s.id:
                ops.append(_Del(self.key(s.previous_id)))
            if ctx.presented or s.id is not None:
                return ops, ExpressOutcome(set_cookie=self.clear_header(ctx.cookie))
            return ops, _NOTHING

        if s.is_new:
            if not s.modified and not s.regenerated:
                # Like saveUninitialized: false, and a flood of bad cookies writes nothing.
                if ctx.presented:
                    return ops, ExpressOutcome(set_cookie=self.clear_header(ctx.cookie))
                return ops, _NOTHING
            if s.previous_id is not None:
                ops.append(_Del(self.key(s.previous_id)))
            sid = self.new_id()
            cookie = self.cookie.new_cookie(now_ms, secure=ctx.secure)
            ttl = self.ttl_of(cookie, now_ms)
            ops.append(
                _Set(self.key(sid), self.dump(cookie, s), None if self.disable_ttl else ttl, False)
            )
            s.id = sid
            s.token = self.signer.cookie_value(sid)
            ctx.cookie = cookie
            return ops, self._send(ctx, sid, cookie)

        if s.id is None:  # pragma: no cover - is_new covers it
            raise RuntimeError("an existing session without an id")
        cookie = dict(ctx.cookie or {})
        _touch(cookie, now_ms)
        ctx.cookie = cookie
        ttl = self.ttl_of(cookie, now_ms)
        key = self.key(s.id)
        if s.modified:
            if ttl <= 0 and not self.disable_ttl:
                # connect-redis destroys a record whose TTL is not positive.
                ops.append(_Del(key))
                return ops, ExpressOutcome(set_cookie=self.clear_header(cookie))
            ops.append(_Set(key, self.dump(cookie, s), None if self.disable_ttl else ttl, True))
            send = self.rolling or s.wants_reissue or cookie.get("expires") is not None
        else:
            if not self.disable_touch and not self.disable_ttl:
                ops.append(_Expire(key, ttl))
            send = self.rolling or s.wants_reissue
        if send:
            s.token = self.signer.cookie_value(s.id)
            return ops, self._send(ctx, s.id, cookie)
        return ops, _NOTHING


# --------------------------------------------------------------------------
# The two faces
# --------------------------------------------------------------------------


def _import_redis() -> ModuleType:
    try:
        import redis
        import redis.asyncio
        import redis.exceptions
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency("redis", "redis") from exc
    return redis


def _down_errors(r: ModuleType) -> tuple[type[BaseException], ...]:
    ex = r.exceptions
    return (ex.RedisError, ex.RedisClusterException, OSError)


@final
class AsyncExpressEngine:
    """Load and save express-session sessions in connect-redis format (asyncio).

    ``load`` reads the cookie, verifies it with the :class:`ExpressSigner`
    (MALFORMED and FORGED cookies feed the guard and cost zero Redis
    commands), then ``GET``\\ s ``<prefix><id>`` and returns a donjon
    :class:`~donjon.session.Session` holding the record minus its ``cookie``
    (UNKNOWN when there is no record). ``commit`` writes the record back as
    connect-redis does — ``SET <prefix><id> <json> EX <ttl>`` with the TTL
    ``getTTL`` computes from the cookie's ``expires`` — or ``EXPIRE``\\ s an
    unchanged one, and returns the ``Set-Cookie`` to send.

    Guarantees: an Express app configured with the same secrets, cookie name,
    prefix and store options reads every session this engine writes, and the
    other way round; a forged or malformed cookie never reaches Redis; an
    update never brings back a record deleted meanwhile (``SET ... XX``: a
    logout on either side ends the session on both); an untouched new session
    is never written; ``session.login()`` and ``regenerate()`` give a new id
    and delete the old record; any Redis failure raises
    :class:`~donjon.StoreUnavailable`.

    Not guaranteed: anything that needs a donjon token. An express-session
    cookie has no signed expiry, epoch, key id or binding: lifetime is the
    Redis TTL only (as in connect-redis), the kill switch does not reach
    these sessions (delete their records instead), and an id is valid for as
    long as its record lives. Two concurrent writes of one session keep the
    last one whole (connect-redis writes whole records too). Not supported:
    ``resave: true`` and ``saveUninitialized: true`` (donjon behaves as if
    both were ``false``).

    Args:
        client: A ``redis.asyncio.Redis`` (or cluster) client; see :meth:`from_url`.
        signer: The secrets (same list, same order as the Express app).
        cookie: The Express app's ``name`` and ``cookie`` options.
        prefix: connect-redis's ``prefix``.
        ttl: connect-redis's ``ttl``: seconds for records whose cookie has no expiry.
        disable_ttl: connect-redis's ``disableTTL``: records never expire.
        disable_touch: connect-redis's ``disableTouch``: no ``EXPIRE`` on
            unchanged sessions.
        rolling: express-session's ``rolling``: send the cookie on every response.
        genid: express-session's ``genid`` (no argument here); ids must be
            non-empty ``str`` of at most 256 characters.
        user_field: A data key (e.g. ``"user"``) mapped to ``session.user_id``
            on load, and written from it after ``session.login()``.
        clock: Time source.
        guard: The brute-force guard; share the native engine's guard
            (``engine.core.guard``) when both run. ``None`` disables it.
        events: Event hooks (or an :class:`~donjon.events.Events`).
        close_client: Close ``client`` in :meth:`close` (``from_url`` sets it).

    Raises:
        MissingDependency: The ``redis`` package is not installed.
        ConfigurationError: A bad option.
    """

    __slots__ = ("_close_client", "_down", "client", "core")

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster,
        *,
        signer: ExpressSigner,
        cookie: ExpressCookie | None = None,
        prefix: str = DEFAULT_PREFIX,
        ttl: int = DEFAULT_TTL,
        disable_ttl: bool = False,
        disable_touch: bool = False,
        rolling: bool = False,
        genid: Callable[[], str] | None = None,
        user_field: str | None = None,
        clock: Clock | None = None,
        guard: Guard | None = DEFAULT_GUARD,
        events: Events | Iterable[EventHook] | None = None,
        close_client: bool = False,
    ) -> None:
        r = _import_redis()
        self.core = _Core(
            signer=signer,
            cookie=cookie,
            prefix=prefix,
            ttl=ttl,
            disable_ttl=disable_ttl,
            disable_touch=disable_touch,
            rolling=rolling,
            genid=genid,
            user_field=user_field,
            clock=clock,
            guard=guard,
            events=events,
        )
        self.client: Any = client
        self._down = _down_errors(r)
        self._close_client = close_client

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        signer: ExpressSigner,
        socket_timeout: float = 1.0,
        socket_connect_timeout: float = 1.0,
        **options: Any,
    ) -> AsyncExpressEngine:
        """Connect to ``url`` with fail-fast timeouts; other options as for the constructor."""
        r = _import_redis()
        client = r.asyncio.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout
        )
        return cls(client, signer=signer, close_client=True, **options)

    @property
    def cookie(self) -> ExpressCookie:
        """The cookie options."""
        return self.core.cookie

    @property
    def signer(self) -> ExpressSigner:
        """The cookie signer."""
        return self.core.signer

    @property
    def guard(self) -> Guard | None:
        """The brute-force guard."""
        return self.core.guard

    async def load(
        self,
        cookie: str | bytes | None,
        *,
        client: str | None = None,
        path: str | None = None,
        secure: bool = False,
        presented: bool | None = None,
    ) -> ExpressContext:
        """Return the request's session state for a presented cookie value.

        Never raises for anything the client sent.

        Args:
            cookie: The ``connect.sid`` value as sent, or ``None`` when absent.
            client: The client address (the guard's key).
            path: The request path (for events).
            secure: Whether the request came over HTTPS.
            presented: Whether the request carried the cookie name at all
                (e.g. with an empty value); by default, ``cookie is not None``.

        Raises:
            StoreUnavailable: Redis is down.
        """
        started = time.perf_counter()
        core = self.core
        now = core.now()
        client = core.client_key(client)
        guard = core.guard
        if guard is not None and guard.due(now):
            await asyncio.to_thread(guard.exchange, now)
        record_cookie = None
        locked = core.locked_out(client, now)
        if locked is not None:
            session = locked
        elif cookie is None:
            session = core.fresh(None)
        else:
            result = core.signer.verify(cookie)
            if result.verdict is not Verdict.VALID:
                session = core.fresh(result)
            else:
                text = cookie if isinstance(cookie, str) else cookie.decode("ascii")
                try:
                    raw = await self.client.get(core.key(result.session_id or ""))
                except self._down as exc:
                    core.events.store_error("load")
                    raise StoreUnavailable(f"Redis unavailable: {type(exc).__name__}") from exc
                session, record_cookie = core.from_record(result, text, raw)
        core.finish(session, client=client, path=path, now=now, started=started)
        if presented is None:
            presented = cookie is not None
        return ExpressContext(session, cookie=record_cookie, presented=presented, secure=secure)

    async def commit(self, ctx: ExpressContext) -> ExpressOutcome:
        """Save what the request changed; return the ``Set-Cookie`` to send.

        Raises:
            StoreUnavailable: Redis is down (nothing is half-written: each
                operation is one command).
        """
        ops, outcome = self.core.plan(ctx, self.core.now())
        try:
            ok = True
            for op in ops:
                if isinstance(op, _Set):
                    done = await self.client.set(op.key, op.value, ex=op.ttl, xx=op.existing)
                elif isinstance(op, _Del):
                    done = await self.client.delete(op.key) or True
                else:
                    done = await self.client.expire(op.key, op.ttl)
                ok = bool(done) and ok
        except self._down as exc:
            self.core.events.store_error("commit")
            raise StoreUnavailable(f"Redis unavailable: {type(exc).__name__}") from exc
        if not ok:
            return ExpressOutcome(set_cookie=self.core.clear_header(ctx.cookie), interrupted=True)
        return outcome

    async def revoke(self, session_id: str) -> None:
        """End one express-session session by its id (``DEL <prefix><id>``)."""
        try:
            await self.client.delete(self.core.key(_check_id(session_id)))
        except self._down as exc:
            raise StoreUnavailable(f"Redis unavailable: {type(exc).__name__}") from exc

    def clear_header(self) -> str:
        """A ``Set-Cookie`` value deleting the express-session cookie."""
        return self.core.clear_header()

    async def close(self) -> None:
        """Close the client if this engine opened it."""
        if self._close_client:
            await self.client.aclose()

    def __repr__(self) -> str:
        return f"AsyncExpressEngine(prefix={self.core.prefix!r}, cookie={self.core.cookie.name!r})"


@final
class ExpressEngine:
    """The synchronous twin of :class:`AsyncExpressEngine` (``redis.Redis``); same guarantees.

    For WSGI apps and scripts: call :meth:`load` with the cookie value before
    the request and :meth:`commit` after it, and send the returned
    ``Set-Cookie``.
    """

    __slots__ = ("_close_client", "_down", "client", "core")

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        signer: ExpressSigner,
        cookie: ExpressCookie | None = None,
        prefix: str = DEFAULT_PREFIX,
        ttl: int = DEFAULT_TTL,
        disable_ttl: bool = False,
        disable_touch: bool = False,
        rolling: bool = False,
        genid: Callable[[], str] | None = None,
        user_field: str | None = None,
        clock: Clock | None = None,
        guard: Guard | None = DEFAULT_GUARD,
        events: Events | Iterable[EventHook] | None = None,
        close_client: bool = False,
    ) -> None:
        r = _import_redis()
        self.core = _Core(
            signer=signer,
            cookie=cookie,
            prefix=prefix,
            ttl=ttl,
            disable_ttl=disable_ttl,
            disable_touch=disable_touch,
            rolling=rolling,
            genid=genid,
            user_field=user_field,
            clock=clock,
            guard=guard,
            events=events,
        )
        self.client: Any = client
        self._down = _down_errors(r)
        self._close_client = close_client

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        signer: ExpressSigner,
        socket_timeout: float = 1.0,
        socket_connect_timeout: float = 1.0,
        **options: Any,
    ) -> ExpressEngine:
        """Connect to ``url`` with fail-fast timeouts; other options as for the constructor."""
        r = _import_redis()
        client = r.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout
        )
        return cls(client, signer=signer, close_client=True, **options)

    @property
    def cookie(self) -> ExpressCookie:
        """The cookie options."""
        return self.core.cookie

    @property
    def signer(self) -> ExpressSigner:
        """The cookie signer."""
        return self.core.signer

    @property
    def guard(self) -> Guard | None:
        """The brute-force guard."""
        return self.core.guard

    def load(
        self,
        cookie: str | bytes | None,
        *,
        client: str | None = None,
        path: str | None = None,
        secure: bool = False,
        presented: bool | None = None,
    ) -> ExpressContext:
        """Return the request's session state; see :meth:`AsyncExpressEngine.load`."""
        started = time.perf_counter()
        core = self.core
        now = core.now()
        client = core.client_key(client)
        guard = core.guard
        if guard is not None and guard.due(now):
            guard.exchange(now)
        record_cookie = None
        locked = core.locked_out(client, now)
        if locked is not None:
            session = locked
        elif cookie is None:
            session = core.fresh(None)
        else:
            result = core.signer.verify(cookie)
            if result.verdict is not Verdict.VALID:
                session = core.fresh(result)
            else:
                text = cookie if isinstance(cookie, str) else cookie.decode("ascii")
                try:
                    raw = self.client.get(core.key(result.session_id or ""))
                except self._down as exc:
                    core.events.store_error("load")
                    raise StoreUnavailable(f"Redis unavailable: {type(exc).__name__}") from exc
                session, record_cookie = core.from_record(result, text, raw)
        core.finish(session, client=client, path=path, now=now, started=started)
        if presented is None:
            presented = cookie is not None
        return ExpressContext(session, cookie=record_cookie, presented=presented, secure=secure)

    def commit(self, ctx: ExpressContext) -> ExpressOutcome:
        """Save what the request changed; see :meth:`AsyncExpressEngine.commit`."""
        ops, outcome = self.core.plan(ctx, self.core.now())
        try:
            ok = True
            for op in ops:
                if isinstance(op, _Set):
                    done = self.client.set(op.key, op.value, ex=op.ttl, xx=op.existing)
                elif isinstance(op, _Del):
                    done = self.client.delete(op.key) or True
                else:
                    done = self.client.expire(op.key, op.ttl)
                ok = bool(done) and ok
        except self._down as exc:
            self.core.events.store_error("commit")
            raise StoreUnavailable(f"Redis unavailable: {type(exc).__name__}") from exc
        if not ok:
            return ExpressOutcome(set_cookie=self.core.clear_header(ctx.cookie), interrupted=True)
        return outcome

    def revoke(self, session_id: str) -> None:
        """End one express-session session by its id (``DEL <prefix><id>``)."""
        try:
            self.client.delete(self.core.key(_check_id(session_id)))
        except self._down as exc:
            raise StoreUnavailable(f"Redis unavailable: {type(exc).__name__}") from exc

    def clear_header(self) -> str:
        """A ``Set-Cookie`` value deleting the express-session cookie."""
        return self.core.clear_header()

    def close(self) -> None:
        """Close the client if this engine opened it."""
        if self._close_client:
            self.client.close()

    def __repr__(self) -> str:
        return f"ExpressEngine(prefix={self.core.prefix!r}, cookie={self.core.cookie.name!r})"


# --------------------------------------------------------------------------
# ASGI
# --------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _header(scope: Scope, name: bytes) -> list[bytes]:
    return [v for k, v in scope.get("headers", ()) if k == name]


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


def _with_headers(message: Message, set_cookies: Sequence[str]) -> Message:
    extra: list[tuple[str, str]] = []
    for value in set_cookies:
        extra.extend(response_headers(value))
    if not extra:
        return message
    headers = [(k, v) for k, v in message.get("headers", ()) if k != b"cache-control"]
    seen_cache = False
    for k, v in extra:
        if k == "cache-control":
            if seen_cache:
                continue
            seen_cache = True
        headers.append((k.encode(), v.encode("latin-1")))
    return {**message, "headers": headers}


@final
class ExpressSessionMiddleware:
    """Serve express-session sessions to an ASGI app, optionally upgrading them.

    The session (a donjon :class:`~donjon.session.Session`) is put in
    ``scope["session"]``, so ``request.session`` and
    :func:`donjon.adapters.starlette.session_of` work; its ``.verdict`` says
    what the ``connect.sid`` cookie was. As with the native middleware: a
    locked-out client gets ``429``; Redis down gives ``503``; any bad cookie
    starts a fresh session, is counted by the guard and is cleared.

    With ``upgrade`` (a native :class:`~donjon.engine.AsyncEngine`), the
    migration's last step: requests with a donjon cookie, or with no
    ``connect.sid``, go to the native
    :class:`~donjon.adapters.asgi.SessionMiddleware` unchanged. A request with
    a *valid* express-session cookie gets a new native session holding the
    same data (and, with ``user_field``, logged in as the same user); at the
    response the native token is issued, the connect-redis record is deleted
    and ``connect.sid`` is cleared. From then on every layer of donjon
    applies. Turn it on once the Express app no longer needs those sessions:
    the Express side loses them at upgrade.

    Args:
        app: The ASGI app to wrap.
        engine: The built :class:`AsyncExpressEngine`.
        proxy: Trusted reverse proxies (express-session's ``proxy``): the
            client address and HTTPS come from forwarding headers only when
            the peer is one of them.
        upgrade: A native engine to move valid express sessions to.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        engine: AsyncExpressEngine,
        proxy: Proxy | None = None,
        upgrade: AsyncEngine | None = None,
    ) -> None:
        self.app = app
        self.engine = engine
        self.upgrade = upgrade
        self._resolver = ClientResolver(proxy)
        self._name = engine.cookie.name
        self._native = (
            SessionMiddleware(app, engine=upgrade, proxy=proxy) if upgrade is not None else None
        )

    def client_of(self, scope: Scope) -> str | None:
        """The client address of a request: the peer, or via trusted proxies."""
        peer = scope.get("client")
        addr = peer[0] if peer else None
        if not self._resolver.trusts_proxies:
            return addr
        xff = [v.decode("latin-1") for v in _header(scope, b"x-forwarded-for")]
        return self._resolver.client(addr, xff)

    def is_secure(self, scope: Scope) -> bool:
        """Whether the request came over HTTPS (directly or via a trusted proxy)."""
        peer = scope.get("client")
        proto = _header(scope, b"x-forwarded-proto")
        return self._resolver.is_secure(
            scope.get("scheme", "http"),
            peer[0] if peer else None,
            proto[0].decode("latin-1") if proto else None,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        cookies = _header(scope, b"cookie")
        lookup = find_cookie(cookies, self._name)
        if self._native is not None and self.upgrade is not None:
            native = find_cookie(cookies, self.upgrade.cookie.cookie_name)
            if native.presented or not lookup.presented:
                await self._native(scope, receive, send)
                return
        try:
            ctx = await self.engine.load(
                lookup.value,
                client=self.client_of(scope),
                path=scope.get("path"),
                secure=self.is_secure(scope),
                presented=lookup.presented,
            )
        except StoreUnavailable:
            store_unavailable(log, "express-session store unavailable while loading")
            if scope["type"] == "http":
                await _answer(send, 503)
            else:
                await send({"type": "websocket.close", "code": 1013})
            return
        session = ctx.session
        if session.verdict is Verdict.LOCKED_OUT:
            if scope["type"] == "http":
                await _answer(send, 429, session.retry_after)
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        if self._native is not None:
            await self._upgrade(ctx, scope, receive, send)
            return
        scope["session"] = session
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self._sender(send, ctx))

    def _sender(self, send: Send, ctx: ExpressContext) -> Send:
        failed = False

        async def send_wrapper(message: Message) -> None:
            nonlocal failed
            if message["type"] == "http.response.start" and message.get("status", 200) < 500:
                # (a server error commits nothing)
                try:
                    outcome = await self.engine.commit(ctx)
                except StoreUnavailable:
                    store_unavailable(log, "express-session store unavailable while saving")
                    failed = True
                    await _answer(send, 503)
                    return
                if outcome.set_cookie is not None:
                    message = _with_headers(message, [outcome.set_cookie])
            elif failed:
                return
            await send(message)

        return send_wrapper

    async def _upgrade(
        self, ctx: ExpressContext, scope: Scope, receive: Receive, send: Send
    ) -> None:
        native_mw, engine = self._native, self.upgrade
        if native_mw is None or engine is None:  # pragma: no cover - checked by the caller
            raise RuntimeError("no native engine to upgrade to")
        old = ctx.session
        if old.verdict is not Verdict.VALID or old.id is None or scope["type"] != "http":
            # A bad connect.sid (already counted by the guard): a native visitor, minus the cookie.
            clear = [self.engine.clear_header()] if ctx.presented else []
            await native_mw(scope, receive, self._appender(send, clear))
            return
        session = Session(
            session_class=engine.core.default_class,
            verdict=Verdict.VALID,
            reason="express_upgrade",
        )
        for key, value in old.data().items():
            session[key] = value
        if old.user_id is not None:
            session.login(old.user_id)
        scope["session"] = session
        failed = False

        async def send_wrapper(message: Message) -> None:
            nonlocal failed
            if message["type"] == "http.response.start" and message.get("status", 200) < 500:
                # (a server error upgrades nothing: the express session stays)
                try:
                    outcome = await engine.commit(session, presented=False)
                    await self.engine.revoke(old.id or "")
                except StoreUnavailable:
                    store_unavailable(log, "store unavailable while upgrading an express session")
                    failed = True
                    await _answer(send, 503)
                    return
                cookies = [
                    c
                    for c in (outcome.set_cookie_header(engine.cookie), self.engine.clear_header())
                    if c is not None
                ]
                message = _with_headers(message, cookies)
            elif failed:
                return
            await send(message)

        await self.app(scope, receive, send_wrapper)

    @staticmethod
    def _appender(send: Send, set_cookies: Sequence[str]) -> Send:
        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = _with_headers(message, set_cookies)
            await send(message)

        return send_wrapper
