"""The pure core: tokens, key ring and verdicts. No I/O, no framework.

You probably want an adapter (:mod:`donjon.adapters`) or the engine; this
layer is for building those, for tools and for tests.
"""

from __future__ import annotations

from ._clock import SystemClock as SystemClock
from ._keyring import ClassKeys as ClassKeys
from ._keyring import KeyRing as KeyRing
from ._secret import MIN_SECRET_BYTES as MIN_SECRET_BYTES
from ._secret import Secret as Secret
from ._token import MAX_TOKEN_LENGTH as MAX_TOKEN_LENGTH
from ._token import MAX_TTL as MAX_TTL
from ._token import SESSION_ID_RE as SESSION_ID_RE
from ._token import TOKEN_VERSION as TOKEN_VERSION
from ._token import TokenCodec as TokenCodec
from ._token import VerifyResult as VerifyResult
from ._token import new_session_id as new_session_id
from ._verdict import ATTACK_VERDICTS as ATTACK_VERDICTS
from ._verdict import Verdict as Verdict

__all__ = [
    "ATTACK_VERDICTS",
    "ClassKeys",
    "KeyRing",
    "MAX_TOKEN_LENGTH",
    "MAX_TTL",
    "MIN_SECRET_BYTES",
    "SESSION_ID_RE",
    "Secret",
    "SystemClock",
    "TOKEN_VERSION",
    "TokenCodec",
    "Verdict",
    "VerifyResult",
    "new_session_id",
]
