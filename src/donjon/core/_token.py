from __future__ import annotations

import binascii
import hmac
import math
import re
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, NamedTuple, final

from ..errors import ConfigurationError, InvalidToken
from ._clock import SystemClock
from ._verdict import Verdict

if TYPE_CHECKING:
    from ..typing import Clock
    from ._keyring import KeyRing

__all__ = [
    "MAX_TOKEN_LENGTH",
    "MAX_TTL",
    "SESSION_ID_RE",
    "TOKEN_VERSION",
    "TokenCodec",
    "VerifyResult",
    "new_session_id",
]

TOKEN_VERSION: Final = "v1"  # noqa: S105 - a format tag, not a password
"""The token-format version, documented apart from the package version."""
MAX_TOKEN_LENGTH: Final = 400
"""Longest text :meth:`TokenCodec.verify` looks at; longer input is MALFORMED unread."""
MAX_TTL: Final = 400 * 24 * 3600.0
"""Browsers cap cookie lifetime at 400 days (rfc6265bis); so do we."""
SESSION_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""What a session id (ours or an application's ``genid``) may look like."""

_SEP: Final = "."
_UNBOUND: Final = "_"
_FIELDS: Final = 8
_MAC_HEX: Final = 64
_BIND_HEX: Final = 32
_MS_DIGITS: Final = 15


_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
# Every field within its alphabet and size. Only the failure paths use it: a token
# that passes its MAC is text this server wrote, so the valid path never pays for it.
# Hex is matched in either case: an upper-case MAC or binding is a re-encoding of
# ours, which the MAC (not the shape) refuses, as it refuses padding or leading zeros.
_SHAPE: Final = re.compile(
    rf"{TOKEN_VERSION}\.[a-z][a-z0-9_]{{0,31}}\.[A-Za-z0-9_-]{{1,16}}\.[A-Za-z0-9_-]{{1,128}}"
    rf"\.[0-9]{{1,{_MS_DIGITS}}}\.[0-9]{{1,{_MS_DIGITS}}}\.(?:{_UNBOUND}|[0-9a-fA-F]{{{_BIND_HEX}}})"
    rf"\.[0-9a-fA-F]{{{_MAC_HEX}}}"
)


def new_session_id() -> str:
    """Return a fresh session id: 32 bytes (256 bits) from :mod:`secrets`, base64url."""
    # Same result as secrets.token_urlsafe(32), without its Python-level overhead.
    return (
        binascii.b2a_base64(secrets.token_bytes(32), newline=False)[:43]
        .translate(_URLSAFE)
        .decode("ascii")
    )


class VerifyResult(NamedTuple):
    """What :meth:`TokenCodec.verify` found out about one token.

    Fields other than ``verdict`` and ``reason`` are ``None`` when the token
    did not get far enough to know them. For anything but ``VALID``, they are
    informational only and must not be trusted: they come from unauthenticated
    text when the MAC failed.
    """

    verdict: Verdict
    """The verdict; check it, or call :meth:`check`."""
    session_id: str | None = None
    session_class: str | None = None
    key_id: str | None = None
    issued_at: float | None = None
    """Unix time (seconds, millisecond precision)."""
    expires_at: float | None = None
    """Unix time (seconds, millisecond precision)."""
    bound: bool = False
    """Whether the token is bound to a request context."""
    reason: str = ""
    """A short machine-readable reason for logs; never send it to a client."""

    @property
    def ok(self) -> bool:
        """Whether the verdict is ``VALID``."""
        return self.verdict is Verdict.VALID

    def check(self) -> VerifyResult:
        """Return ``self`` when valid; raise :class:`~donjon.InvalidToken` otherwise."""
        if self.verdict is not Verdict.VALID:
            raise InvalidToken(self.verdict, self.reason)
        return self


_new_result: Final = tuple.__new__
_VALID: Final = Verdict.VALID


def _malformed(reason: str) -> VerifyResult:
    return VerifyResult(Verdict.MALFORMED, reason=reason)


_TOO_LONG: Final = _malformed("too_long")
_NOT_TEXT: Final = _malformed("not_text")
_NOT_ASCII: Final = _malformed("not_ascii")
_BAD_FIELDS: Final = _malformed("field_count")
_BAD_VERSION: Final = _malformed("version")
_BAD_MAC_SHAPE: Final = _malformed("mac_shape")
_EMPTY: Final = _malformed("empty")
_BAD_ALPHABET: Final = _malformed("bad_alphabet")


def _binding_bytes(binding: bytes | str) -> bytes:
    return binding.encode("utf-8", "surrogatepass") if isinstance(binding, str) else binding


@final
class TokenCodec:
    """Issue and verify Donjon session tokens (format ``v1``).

    You probably want an adapter or the engine; this is the low-level layer.

    A token is ASCII text, safe in a cookie without quoting::

        v1.<class>.<key id>.<session id>.<issued ms>.<expires ms>.<binding>.<mac>

    where ``<binding>`` is ``_`` or 32 hex digits of a keyed hash of the bound
    context, and ``<mac>`` is the lowercase hex HMAC-SHA256, under the class
    key's derived MAC key, of everything before the last dot.

    Guarantees of :meth:`verify`: it never raises on client input (any
    ``str`` or ``bytes``, any length); input longer than
    :data:`MAX_TOKEN_LENGTH` is rejected before any other work; the MAC is
    compared in constant time and checked before any field is trusted; a
    token is ``VALID`` only if it is exactly the text :meth:`issue` made
    (no re-encoding, padding or whitespace is accepted); a token with a
    field outside its alphabet or size (say a non-digit time or a space) is
    MALFORMED, never FORGED. It never touches a store. Not guaranteed: that
    the session still exists server-side; that is the engine's job (verdicts
    UNKNOWN, IDLE_EXPIRED).

    Args:
        keyring: The key ring holding class keys and epochs.
        clock: The time source; the system clock by default.
        skew: Seconds a token's issue time may lie in the future (clock skew
            between servers) before it is FORGED.
        genid: Optional session-id generator (express-session's ``genid``).
    """

    __slots__ = ("_classes", "_clock", "_genid", "_now", "_ring", "_skew_ms")

    def __init__(
        self,
        keyring: KeyRing,
        *,
        clock: Clock | None = None,
        skew: float = 5.0,
        genid: Callable[[], str] | None = None,
    ) -> None:
        if not math.isfinite(skew) or not 0 <= skew <= 3600:
            raise ConfigurationError("skew must be between 0 and 3600 seconds")
        self._ring = keyring
        # The ring swaps entries of this dict in place, never the dict itself.
        self._classes = keyring._classes
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._now = self._clock.time
        self._skew_ms = int(skew * 1000)
        self._genid = genid

    @property
    def keyring(self) -> KeyRing:
        """The key ring this codec signs and verifies with."""
        return self._ring

    @property
    def clock(self) -> Clock:
        """The time source."""
        return self._clock

    def new_session_id(self) -> str:
        """Return a new session id from ``genid`` or, by default, from :mod:`secrets`."""
        if self._genid is None:
            return new_session_id()
        sid = self._genid()
        if not isinstance(sid, str) or not SESSION_ID_RE.fullmatch(sid):
            raise ConfigurationError(f"genid must return a str matching {SESSION_ID_RE.pattern}")
        return sid

    def issue(
        self,
        *,
        session_class: str = "user",
        ttl: float,
        session_id: str | None = None,
        binding: bytes | str | None = None,
        now: float | None = None,
    ) -> str:
        """Return a new signed token for a session.

        Args:
            session_class: The class whose current key signs the token.
            ttl: Absolute lifetime in seconds (at most 400 days).
            session_id: The id to sign; a new one (``genid`` or 32 random
                bytes) by default.
            binding: Request context to bind the token to (e.g. a second
                cookie's value); its keyed hash goes inside the MAC.
            now: Issue time (Unix seconds); the codec's clock by default.

        Raises:
            ConfigurationError: Unknown class, bad ttl or bad session id.
        """
        ck = self._ring._classes.get(session_class) or self._ring.snapshot(session_class)
        if not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_TTL:
            raise ConfigurationError(f"ttl must be > 0 and <= {MAX_TTL:.0f} seconds")
        sid = self.new_session_id() if session_id is None else session_id
        if not isinstance(sid, str) or not SESSION_ID_RE.fullmatch(sid):
            raise ConfigurationError(f"session id must match {SESSION_ID_RE.pattern}")
        t = self._now() if now is None else now
        # round(), not int(): x / 1000 * 1000 can land a hair below x, and truncating
        # it would lose a millisecond (e.g. near 2**41 ms, in 2036-2039).
        iat = round(t * 1000)
        exp = iat + max(1, round(ttl * 1000))
        kid = ck.current
        if binding is None:
            bind = _UNBOUND
        else:
            bind = hmac.digest(ck.bind_keys[kid], _binding_bytes(binding), "sha256")[:16].hex()
        body = f"{TOKEN_VERSION}.{ck.name}.{kid}.{sid}.{iat}.{exp}.{bind}"
        h = ck.mac_keys[kid].copy()
        h.update(body.encode("ascii"))
        mac = h.hexdigest()
        return f"{body}.{mac}"

    def verify(
        self,
        token: object,
        *,
        binding: bytes | str | None = None,
        now: float | None = None,
    ) -> VerifyResult:
        """Return the verdict for a presented token. Never raises on client input.

        Runs steps 1-6 of the verdict pipeline: shape (MALFORMED), key
        (FORGED or RETIRED), MAC (FORGED), time (FORGED when issued in the
        future beyond the skew, EXPIRED), epoch (REVOKED) and binding
        (BINDING_MISMATCH, only for bound tokens).

        Args:
            token: What the client sent: ``str`` or ``bytes`` of any content.
            binding: The request's context, for tokens issued with a binding.
            now: Verification time (Unix seconds); the codec's clock by default.
        """
        # 1. shape: bounded before any other work.
        if isinstance(token, str):
            text = token
        elif isinstance(token, (bytes, bytearray)):
            if len(token) > MAX_TOKEN_LENGTH:
                return _TOO_LONG
            if not token.isascii():
                return _NOT_ASCII
            text = token.decode("ascii")
        else:
            return _NOT_TEXT
        if len(text) > MAX_TOKEN_LENGTH:
            return _TOO_LONG
        if not text:
            return _EMPTY
        if not text.isascii():
            return _NOT_ASCII
        parts = text.split(_SEP)
        if len(parts) != _FIELDS:
            return _BAD_FIELDS
        version, cls, kid, sid, iat_s, exp_s, bind, mac = parts
        if version != TOKEN_VERSION:
            return _BAD_VERSION
        if len(mac) != _MAC_HEX:
            return _BAD_MAC_SHAPE
        # 2. key: class and key id must be known.
        # The alphabet of each field is checked only once a check below has failed
        # (_SHAPE): a token that passes its MAC was written by issue() and is in shape.
        ck = self._classes.get(cls)
        if ck is None:
            if not _SHAPE.fullmatch(text):
                return _BAD_ALPHABET
            return VerifyResult(Verdict.FORGED, reason="unknown_class")
        keyed = ck.mac_keys.get(kid)
        if keyed is None:
            if not _SHAPE.fullmatch(text):
                return _BAD_ALPHABET
            if kid in ck.retired:
                return VerifyResult(
                    Verdict.RETIRED, session_class=cls, key_id=kid, reason="retired_key"
                )
            return VerifyResult(Verdict.FORGED, session_class=cls, reason="unknown_key")
        # 3. MAC, constant time, over the exact text (so no re-encoding passes).
        # Copying a pre-keyed state skips the per-call key set-up of hmac.digest.
        h = keyed.copy()
        h.update(text[: -_MAC_HEX - 1].encode("ascii"))
        if not hmac.compare_digest(h.hexdigest(), mac):
            if not _SHAPE.fullmatch(text):
                return _BAD_ALPHABET
            return _new_result(
                VerifyResult, (Verdict.FORGED, None, cls, kid, None, None, False, "bad_mac")
            )
        # Everything below is text this server signed.
        iat = int(iat_s)
        exp = int(exp_s)
        t_ms = round((self._now() if now is None else now) * 1000)
        # 4. time.
        if iat > t_ms + self._skew_ms:
            return _new_result(
                VerifyResult,
                (
                    Verdict.FORGED,
                    sid,
                    cls,
                    kid,
                    iat / 1000,
                    exp / 1000,
                    bind != _UNBOUND,
                    "issued_in_future",
                ),
            )
        if t_ms >= exp:
            return _new_result(
                VerifyResult,
                (
                    Verdict.EXPIRED,
                    sid,
                    cls,
                    kid,
                    iat / 1000,
                    exp / 1000,
                    bind != _UNBOUND,
                    "expired",
                ),
            )
        if kid in ck.not_after and t_ms > ck.not_after[kid] * 1000:
            return _new_result(
                VerifyResult,
                (
                    Verdict.RETIRED,
                    sid,
                    cls,
                    kid,
                    iat / 1000,
                    exp / 1000,
                    bind != _UNBOUND,
                    "grace_over",
                ),
            )
        # 5. epoch (kill switch).
        if iat < ck.epoch_ms:
            return _new_result(
                VerifyResult,
                (
                    Verdict.REVOKED,
                    sid,
                    cls,
                    kid,
                    iat / 1000,
                    exp / 1000,
                    bind != _UNBOUND,
                    "class_epoch",
                ),
            )
        # 6. binding.
        if bind != _UNBOUND:
            if binding is None:
                return _new_result(
                    VerifyResult,
                    (
                        Verdict.BINDING_MISMATCH,
                        sid,
                        cls,
                        kid,
                        iat / 1000,
                        exp / 1000,
                        True,
                        "binding_missing",
                    ),
                )
            tag = hmac.digest(ck.bind_keys[kid], _binding_bytes(binding), "sha256")[:16].hex()
            if not hmac.compare_digest(tag, bind):
                return _new_result(
                    VerifyResult,
                    (
                        Verdict.BINDING_MISMATCH,
                        sid,
                        cls,
                        kid,
                        iat / 1000,
                        exp / 1000,
                        True,
                        "binding_differs",
                    ),
                )
            return _new_result(
                VerifyResult, (_VALID, sid, cls, kid, iat / 1000, exp / 1000, True, "")
            )
        return _new_result(VerifyResult, (_VALID, sid, cls, kid, iat / 1000, exp / 1000, False, ""))

    def __repr__(self) -> str:
        return f"TokenCodec(keyring={self._ring!r}, skew={self._skew_ms / 1000:g})"
