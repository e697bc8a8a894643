from __future__ import annotations

import base64
import binascii
import secrets
from typing import Final, final

from ..errors import ConfigurationError, WeakSecret

__all__ = ["MIN_SECRET_BYTES", "Secret", "decode_secret", "encode_secret"]

MIN_SECRET_BYTES: Final = 32
"""RFC 2104 discourages HMAC keys shorter than the hash output (32 bytes)."""

_HOWTO: Final = "run `donjon keygen` or use secrets.token_bytes(32)"


@final
class Secret:
    """A secret value that never shows itself in ``repr``, ``str`` or logs.

    Guarantees: the secret is at least 32 bytes long. ``repr`` and ``str`` are
    constant. Not guaranteed: the bytes are not wiped from memory.
    """

    __slots__ = ("_value",)

    def __init__(self, value: bytes | str, *, name: str = "secret") -> None:
        if isinstance(value, str):
            raw = value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
        else:
            # bytes(64) would quietly make 64 zero bytes: a secret everyone knows.
            raise ConfigurationError(f"{name} must be bytes or str, not {type(value).__name__}")
        if len(raw) < MIN_SECRET_BYTES:
            raise WeakSecret(
                f"{name} is {len(raw)} bytes; donjon needs >= {MIN_SECRET_BYTES}: {_HOWTO}"
            )
        self._value = raw

    @classmethod
    def generate(cls, nbytes: int = MIN_SECRET_BYTES) -> Secret:
        """Return a fresh random secret of ``nbytes`` bytes from :mod:`secrets`."""
        return cls(secrets.token_bytes(max(nbytes, MIN_SECRET_BYTES)))

    def reveal(self) -> bytes:
        """Return the raw secret bytes. Handle with care."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(Secret)

    def __reduce__(self) -> str:
        raise TypeError("a Secret cannot be pickled")


def encode_secret(secret: Secret) -> str:
    """Return the text form of a secret used in env files and key files."""
    return base64.urlsafe_b64encode(secret.reveal()).rstrip(b"=").decode("ascii")


def decode_secret(text: str, *, name: str) -> Secret:
    """Parse the base64url text form of a secret (as ``donjon keygen`` writes it)."""
    cleaned = text.strip()
    try:
        raw = base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{name} is not base64url text: {_HOWTO}") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != cleaned.rstrip("="):
        raise ConfigurationError(f"{name} is not canonical base64url text: {_HOWTO}")
    return Secret(raw, name=name)
