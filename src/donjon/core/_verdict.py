from __future__ import annotations

import enum
from typing import Final

__all__ = ["ATTACK_VERDICTS", "Verdict"]


@enum.unique
class Verdict(enum.StrEnum):
    """What Donjon concluded about one presented credential.

    Every credential ends in exactly one verdict. They are told apart because
    they mean different things: EXPIRED is an ordinary user, FORGED an
    attacker.
    """

    VALID = "valid"
    """Signature, time, epoch and (when checked) the store all agree."""
    MALFORMED = "malformed"
    """Not shaped like a token: wrong size, alphabet, field count or version."""
    FORGED = "forged"
    """Unknown class or key id, a bad MAC, or issued in the future."""
    EXPIRED = "expired"
    """Signed by us but past its absolute expiry."""
    REVOKED = "revoked"
    """Issued before its class epoch (the kill switch) or explicitly revoked."""
    RETIRED = "retired"
    """Signed with a key id we used to have and have retired."""
    UNKNOWN = "unknown"
    """Signature-valid, but no session record exists for it."""
    IDLE_EXPIRED = "idle_expired"
    """The record exists but has not been used within the idle timeout."""
    BINDING_MISMATCH = "binding_mismatch"
    """The token is bound to a context the request does not carry."""
    LOCKED_OUT = "locked_out"
    """The client is locked out by the guard; nothing was parsed."""
    ABSENT = "absent"
    """No credential was presented at all."""

    @property
    def is_attack(self) -> bool:
        """Whether this verdict counts towards the brute-force guard."""
        return self in ATTACK_VERDICTS


ATTACK_VERDICTS: Final = frozenset({Verdict.MALFORMED, Verdict.FORGED, Verdict.BINDING_MISMATCH})
"""Verdicts that always count as an attack attempt (UNKNOWN counts in bursts)."""
