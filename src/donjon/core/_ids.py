from __future__ import annotations

import functools
import hashlib
from typing import Final

__all__ = ["record_key"]

_LABEL: Final = b"donjon/v1/record\x00"


@functools.lru_cache(maxsize=4096)  # one request asks up to four times; ids are signed
def record_key(session_id: str) -> str:
    """Return the store key of a session: a SHA-256 hash of its id, in hex.

    Stores are keyed by this hash, never by the id or the cookie, so a dump of
    a store yields no usable cookie (a cookie also needs the id's MAC).
    """
    return hashlib.sha256(_LABEL + session_id.encode("utf-8")).hexdigest()
