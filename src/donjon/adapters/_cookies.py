"""Reading the session cookie out of request headers, with defined edge cases."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, NamedTuple

__all__ = ["MAX_COOKIE_HEADER", "CookieLookup", "find_cookie"]

MAX_COOKIE_HEADER: Final = 16 * 1024
"""Cookie headers longer than this (all joined) are not split into cookies:
only the session cookie is looked for, by a bounded scan."""


class CookieLookup(NamedTuple):
    """The session cookie found in a request, or why none was usable."""

    value: str | None
    """The first value of the cookie, or ``None`` when absent or unusable."""
    problem: str | None = None
    """``"header_too_large"``, ``"not_latin1"``, ``"empty"`` or ``"duplicate"`` (value kept)."""

    @property
    def presented(self) -> bool:
        """Whether the client sent something under the cookie's name."""
        return self.value is not None or self.problem not in (None, "duplicate")


ABSENT: Final = CookieLookup(None)
OVERSIZE: Final = "\x00" * 512
"""Stands for a value that was not parsed: longer than any token, so MALFORMED at once."""


def find_cookie(headers: Iterable[str | bytes], name: str) -> CookieLookup:
    """Return the value of cookie ``name`` from raw ``Cookie`` header values.

    Defined behaviour for hostile input:

    * several ``Cookie`` headers (HTTP/2) are joined with ``"; "``;
    * a joined header over :data:`MAX_COOKIE_HEADER` bytes is not split into
      cookies: only ``name=`` is looked for at a cookie boundary (a bounded
      scan), so a session cookie sent along with many other cookies is still
      found; the value itself is capped by the engine (over-long: MALFORMED);
    * an empty value (a deleted cookie some clients still send), or ``""``
      (the same, quoted, as Django writes it), counts as no cookie — not an
      attack — and is cleared again;
    * pairs without ``=`` and empty names are skipped; whitespace around a
      name or value is trimmed; the value is taken as is (no unquoting, no
      percent-decoding: a token never needs either);
    * when the name appears several times, the **first** value wins (RFC 6265
      §5.4 has browsers send the most specific path first) and
      ``problem="duplicate"`` is set.
    """
    if headers.__class__ is list and len(headers) == 1:
        # The common case, one Cookie header: no joining.
        (raw,) = headers
        text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
        if len(text) > MAX_COOKIE_HEADER:
            return _scan(text, name)
        return _pick(text, name)
    parts: list[str] = []
    total = 0
    for raw in headers:
        if isinstance(raw, bytes):
            try:
                text = raw.decode("latin-1")
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
                return CookieLookup(OVERSIZE, "not_latin1")
        else:
            text = raw
        total += len(text)
        parts.append(text)
    if not parts:
        return ABSENT
    joined = "; ".join(parts) if len(parts) > 1 else parts[0]
    if total > MAX_COOKIE_HEADER:
        return _scan(joined, name)
    return _pick(joined, name)


def _scan(text: str, name: str) -> CookieLookup:
    """The session cookie of an over-size header, without splitting it.

    Many other cookies (analytics, preferences) can make a header huge: that
    says nothing about the session cookie, so it is still found — by a scan
    for ``name=`` at a cookie boundary that stops after two hits (the first
    wins, a second marks a duplicate), never by splitting the whole header.
    """
    needle = name + "="
    found: list[str] = []
    at = text.find(needle)
    while at >= 0 and len(found) < 2:
        j = at - 1
        while j >= 0 and text[j] in " \t":
            j -= 1
        if j < 0 or text[j] == ";":
            end = text.find(";", at)
            found.append(text[at : end if end >= 0 else len(text)])
        at = text.find(needle, at + len(needle))
    if not found:
        return ABSENT
    return _pick("; ".join(found), name)


def _pick(joined: str, name: str) -> CookieLookup:
    if name not in joined:
        return ABSENT
    if ";" not in joined:
        # One cookie in the header (an API client, a load tester): no split.
        key, sep, value = joined.partition("=")
        if not sep or key.strip() != name:
            return ABSENT
        value = value.strip()
        return CookieLookup(value) if value and value != '""' else CookieLookup(None, "empty")
    found: str | None = None
    duplicate = False
    for pair in joined.split(";"):
        key, sep, value = pair.partition("=")
        if not sep or key.strip() != name:
            continue
        if found is None:
            found = value.strip()
        else:
            duplicate = True
            break
    if found is None:
        return ABSENT
    if not found or found == '""':
        # An empty value is a deleted cookie some clients keep sending: not an
        # attack. It is treated as absent, and cleared again. '""' is the
        # same, quoted (Django writes a deleted cookie so).
        return CookieLookup(None, "empty")
    return CookieLookup(found, "duplicate" if duplicate else None)
