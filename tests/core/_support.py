"""Shared material for the core tests: fixed secrets, a fixed start time, leak checks."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

from donjon.core import KeyRing, Secret

T0 = 1_800_000_000.0
"""The start time of every test clock (FrozenClock's default)."""

LEAKY = "TOPSECRET-never-print-me-0123456789abcdef"
"""A recognisable secret: if it shows up in any text, something leaked."""


def fixed_secret(label: str) -> bytes:
    """Return 32 fixed bytes for a label, so tests are reproducible."""
    return hashlib.sha256(f"donjon test secret {label}".encode()).digest()


def b64(raw: bytes | str) -> str:
    """Return the base64url text form of a secret, as key files and env vars hold it."""
    data = raw.encode() if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_ring() -> KeyRing:
    """Return a ring with two classes, ``user`` (k1) and ``admin`` (a1), fixed secrets."""
    return (
        KeyRing()
        .add_class("user", keys={"k1": Secret(fixed_secret("user/k1"))})
        .add_class("admin", keys={"a1": fixed_secret("admin/a1")})
    )


def leak_forms(secret: bytes | str) -> list[str]:
    """Return the text forms a leaked secret could take."""
    raw = secret.encode() if isinstance(secret, str) else secret
    forms = [raw.hex(), b64(raw), base64.b64encode(raw).decode(), repr(raw)]
    if isinstance(secret, str):
        forms.append(secret)
    return forms


def assert_no_leak(texts: Iterable[str], secret: bytes | str) -> None:
    """Assert that no text contains the secret in any usual encoding."""
    for text in texts:
        for form in leak_forms(secret):
            assert form not in text, f"secret leaked into {text!r}"


def exception_texts(exc: BaseException) -> list[str]:
    """Return str() and repr() of an exception and of the chain a traceback would show."""
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), *map(str, current.args)]
        if current.__cause__ is not None:
            current = current.__cause__
        elif not current.__suppress_context__:
            current = current.__context__
        else:
            current = None
    return texts
