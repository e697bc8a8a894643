"""Client-side sessions: the whole session sealed into the cookie (AES-256-GCM).

You probably want a server-side store: a sealed cookie cannot be revoked one
by one (only by class, with the kill switch, or by key retirement) and is
limited to about 4 KB. Use it where no store is wanted, or for the short-lived
access credential of the two-credential mode.

Format ``s1``::

    s1.<class>.<key id>.<issued ms>.<expires ms>.<base64url(nonce | ciphertext | tag)>

The header (everything before the last dot) is the AES-GCM associated data,
so the class, key id and both times are authenticated; the JSON payload is
encrypted and authenticated. The AES key is derived per class key with HKDF
and a purpose label.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

from ..core import MAX_TTL, KeyRing, Secret, SystemClock, Verdict
from ..errors import ConfigurationError, MissingDependency

if TYPE_CHECKING:
    from ..typing import Clock

__all__ = ["MAX_COOKIE_BYTES", "CookieStore", "SealTooLarge", "Sealed", "SealedCodec"]

MAX_COOKIE_BYTES: Final = 4096
"""Browsers keep about 4096 bytes of name plus value per cookie (ASVS 5 3.3.5)."""
SEAL_VERSION: Final = "s1"
_MAX_INPUT: Final = 8192
_NONCE: Final = 12
_LABEL: Final = b"donjon/v1/cookie-aead"
_CACHE_SIZE: Final = 64


class SealTooLarge(ConfigurationError):  # noqa: N818 - named for the condition
    """The sealed session would not fit in a cookie; raised at save time."""


@final
@dataclass(frozen=True, slots=True)
class Sealed:
    """What :meth:`SealedCodec.unseal` found."""

    verdict: Verdict
    payload: Mapping[str, Any] | None = None
    session_class: str | None = None
    key_id: str | None = None
    issued_at: float | None = None
    expires_at: float | None = None
    reason: str = ""


def _aead(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency("cryptography", "crypto") from exc
    return AESGCM(key)


def _derive(secret: bytes, session_class: str) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=_LABEL + b"\x00" + session_class.encode("ascii"),
    ).derive(secret)


@final
class SealedCodec:
    """Seal and unseal session payloads with AES-256-GCM under the key ring.

    Guarantees: confidentiality and integrity of the payload; the class, key
    id, issue and expiry times are authenticated; expired, future-dated,
    epoch-revoked, retired-key and tampered seals get their verdicts without
    raising; input is bounded before any work; nonces are 96 random bits.
    Not guaranteed: revocation of one seal before it expires (there is no
    server state); keep TTLs short and rotate keys — with random nonces one
    key should seal fewer than 2**32 cookies (NIST SP 800-38D).

    Args:
        keyring: Class keys; each class secret derives its own AES key.
        clock: Time source.
        skew: Seconds of tolerated clock skew, between 0 and 3600.
        cookie_name_length: Length of the cookie name, counted into the
            4096-byte limit.

    Raises:
        ConfigurationError: ``skew`` is not a finite number of seconds in
            0..3600.
    """

    __slots__ = ("_cache", "_clock", "_name_len", "_ring", "_skew")

    def __init__(
        self,
        keyring: KeyRing,
        *,
        clock: Clock | None = None,
        skew: float = 5.0,
        cookie_name_length: int = 16,
    ) -> None:
        if (
            isinstance(skew, bool)
            or not isinstance(skew, (int, float))
            or not math.isfinite(skew)
            or not 0 <= skew <= 3600
        ):
            raise ConfigurationError("skew must be between 0 and 3600 seconds")
        self._ring = keyring
        self._clock: Clock = clock or SystemClock()
        self._skew = skew
        self._name_len = cookie_name_length
        self._cache: dict[tuple[str, str, int], tuple[Secret, Any]] = {}

    def _cipher(self, session_class: str, key_id: str, secret: Secret) -> Any:
        # Cached per Secret object, not per key id: a ring may give an existing key id
        # a new secret (a compromised key replaced), and the old one must then be dead.
        # The entry holds the object, so its id() cannot be reused while cached; and
        # no secret bytes are ever compared or kept here.
        cache = self._cache
        key = (session_class, key_id, id(secret))
        entry = cache.get(key)
        if entry is None or entry[0] is not secret:
            entry = (secret, _aead(_derive(secret.reveal(), session_class)))
            if len(cache) >= _CACHE_SIZE:
                cache.clear()  # only new secrets add entries: rare, and bounded
            cache[key] = entry
        return entry[1]

    def seal(
        self,
        payload: Mapping[str, Any],
        *,
        session_class: str = "user",
        ttl: float,
        now: float | None = None,
    ) -> str:
        """Return the sealed cookie value for ``payload`` (JSON-serializable).

        Raises:
            SealTooLarge: The cookie would exceed 4096 bytes with its name.
            ConfigurationError: Unknown class, or ``ttl`` not in
                ``0 < ttl <= MAX_TTL`` (400 days).
            TypeError: The payload is not JSON-serializable.
            ValueError: The payload holds NaN or infinity.
        """
        ck = self._ring.snapshot(session_class)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_TTL:
            raise ConfigurationError(f"ttl must be > 0 and <= {MAX_TTL:.0f} seconds")
        t = self._clock.time() if now is None else now
        iat = int(t * 1000)
        exp = iat + max(1, int(ttl * 1000))
        header = f"{SEAL_VERSION}.{ck.name}.{ck.current}.{iat}.{exp}"
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        try:
            plain = body.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (json.loads makes them from "\ud800") has no UTF-8 form;
            # escaped, it is ASCII JSON that unseal reads back to the same string.
            plain = json.dumps(
                payload, separators=(",", ":"), ensure_ascii=True, allow_nan=False
            ).encode("ascii")
        nonce = os.urandom(_NONCE)
        cipher = self._cipher(ck.name, ck.current, ck.secrets[ck.current])
        blob = nonce + cipher.encrypt(nonce, plain, header.encode("ascii"))
        value = f"{header}.{base64.urlsafe_b64encode(blob).rstrip(b'=').decode('ascii')}"
        size = len(value) + self._name_len + 1
        if size > MAX_COOKIE_BYTES:
            raise SealTooLarge(
                f"sealed session is {size} bytes with its cookie name; browsers keep at most "
                f"{MAX_COOKIE_BYTES}: store less in the session or use a server-side store"
            )
        return value

    def unseal(self, value: object, *, now: float | None = None) -> Sealed:
        """Return the verdict and payload of a presented seal. Never raises on client input."""
        if isinstance(value, (bytes, bytearray)):
            if len(value) > _MAX_INPUT or not value.isascii():
                return Sealed(Verdict.MALFORMED, reason="shape")
            value = value.decode("ascii")
        if not isinstance(value, str) or len(value) > _MAX_INPUT or not value.isascii():
            return Sealed(Verdict.MALFORMED, reason="shape")
        parts = value.split(".")
        if len(parts) != 6 or parts[0] != SEAL_VERSION:
            return Sealed(Verdict.MALFORMED, reason="shape")
        _, cls, kid, iat_s, exp_s, blob_s = parts
        if not (iat_s.isdigit() and exp_s.isdigit()) or len(iat_s) > 15 or len(exp_s) > 15:
            return Sealed(Verdict.MALFORMED, reason="times")
        ck = self._ring.get(cls)
        if ck is None:
            return Sealed(Verdict.FORGED, reason="unknown_class")
        secret = ck.secrets.get(kid)
        if secret is None:
            verdict = Verdict.RETIRED if kid in ck.retired else Verdict.FORGED
            return Sealed(verdict, session_class=cls, reason="key")
        if "=" in blob_s:
            return Sealed(Verdict.MALFORMED, session_class=cls, reason="encoding")
        try:
            blob = base64.urlsafe_b64decode(blob_s + "=" * (-len(blob_s) % 4))
        except (binascii.Error, ValueError):
            return Sealed(Verdict.MALFORMED, session_class=cls, reason="encoding")
        if base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii") != blob_s:
            # Non-canonical base64 (stray low bits) would decode to the same bytes.
            return Sealed(Verdict.MALFORMED, session_class=cls, reason="encoding")
        if len(blob) < _NONCE + 16:
            return Sealed(Verdict.MALFORMED, session_class=cls, reason="short")
        header = value[: value.rindex(".")]
        try:
            from cryptography.exceptions import InvalidTag

            plain = self._cipher(cls, kid, secret).decrypt(
                blob[:_NONCE], blob[_NONCE:], header.encode("ascii")
            )
        except InvalidTag:
            return Sealed(Verdict.FORGED, session_class=cls, key_id=kid, reason="bad_tag")
        iat, exp = int(iat_s), int(exp_s)
        t_ms = (self._clock.time() if now is None else now) * 1000

        def result(verdict: Verdict, reason: str, payload: Any = None) -> Sealed:
            return Sealed(verdict, payload, cls, kid, iat / 1000, exp / 1000, reason)

        if iat > t_ms + self._skew * 1000:
            return result(Verdict.FORGED, "issued_in_future")
        if t_ms >= exp:
            return result(Verdict.EXPIRED, "expired")
        if kid in ck.not_after and t_ms > ck.not_after[kid] * 1000:
            return result(Verdict.RETIRED, "grace_over")
        if iat < ck.epoch_ms:
            return result(Verdict.REVOKED, "class_epoch")
        try:
            payload = json.loads(plain)
        except ValueError:  # pragma: no cover - we sealed it
            return result(Verdict.MALFORMED, "payload")
        if not isinstance(payload, dict):
            return result(Verdict.MALFORMED, "payload")
        return result(Verdict.VALID, "", payload)

    def __repr__(self) -> str:
        return f"SealedCodec(keyring={self._ring!r})"


@final
class CookieStore:
    """Marker store: keep the whole session in a sealed cookie, no server state.

    Pass it as the engine's ``store``. Guarantees and limits are those of
    :class:`SealedCodec`; in addition ``revoke_user`` and ``sessions_of`` are
    unavailable (there is nothing server-side to list), and the idle timeout
    is enforced from a last-seen time inside the seal, refreshed by
    re-sealing the cookie at most every ``Timeouts.touch_every`` seconds.
    """

    blocking = False

    def __init__(self) -> None:
        self._epochs: dict[str, float] = {}

    def epochs(self) -> dict[str, float]:
        """Class epochs raised in this process (share them through configuration)."""
        return dict(self._epochs)

    def raise_epoch(self, session_class: str, epoch: float) -> float:
        """Move a class epoch forward in this process; return it.

        Raises:
            ConfigurationError: ``epoch`` cannot be an epoch (see
                :meth:`KeyRing.check_epoch`).
        """
        epoch = KeyRing.check_epoch(epoch)
        self._epochs[session_class] = max(self._epochs.get(session_class, 0.0), epoch)
        return self._epochs[session_class]

    def sessions_of(self, user_id: str) -> list[Any]:
        """Unavailable: nothing server-side lists a user's cookies.

        Raises:
            ConfigurationError: Always.
        """
        raise ConfigurationError(_NO_SERVER_STATE.format(what="sessions_of"))

    def revoke_user(self, user_id: str) -> int:
        """Unavailable: a sealed cookie cannot be revoked one user at a time.

        Raises:
            ConfigurationError: Always (use ``kill(session_class)``, or a
                server-side store for per-user logout).
        """
        raise ConfigurationError(_NO_SERVER_STATE.format(what="revoke_user"))

    def delete(self, key: str) -> bool:
        """Unavailable: see :meth:`revoke_user`.

        Raises:
            ConfigurationError: Always.
        """
        raise ConfigurationError(_NO_SERVER_STATE.format(what="revoke"))

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return "CookieStore()"


_NO_SERVER_STATE: Final = (
    "{what}() needs server-side sessions; a CookieStore keeps each session in its"
    " cookie, so a copied cookie stays valid until it expires or its class is"
    " killed (kill(session_class)). Use a server-side store (SQLite, Redis,"
    " PostgreSQL) for per-user logout."
)
