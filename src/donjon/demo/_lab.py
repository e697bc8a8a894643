"""The attack lab: hostile cookies crafted with the real codec, judged by the real engine.

Each attack builds a cookie server-side, the way an attacker (or a mistake)
would produce it, and hands it to :meth:`AsyncEngine.load` as if it came from
the attacker's address. The verdict, the reason and the number of store
round trips are what the engine really did: nothing here is simulated.

Attacks that need a revoked or retired key act on a throwaway session class,
``lab``, that exists only in the demo's memory, so they never touch the
keys or sessions of real users.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

from ..core import TOKEN_VERSION, KeyRing, Secret, TokenCodec, Verdict, new_session_id
from ._store import counting

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..engine import AsyncEngine

__all__ = [
    "ATTACKER",
    "ATTACKS",
    "GUESSER",
    "LAB_CLASS",
    "Attack",
    "AttackResult",
    "CampaignResult",
    "Lab",
    "abbreviate",
    "guess",
]

ATTACKER: Final = "203.0.113.66"
"""The address single attacks come from (TEST-NET-3, RFC 5737: nobody's address)."""
GUESSER: Final = "198.51.100.23"
"""The address of the guessing campaign (TEST-NET-2), apart so it locks out on its own."""
LAB_CLASS: Final = "lab"
_MAX_LAB_RETIRED: Final = 8
"""The throwaway session class that the revoke and retire attacks kill and rotate."""
MAX_GUESSES: Final = 200
"""The guessing campaign stops here even if the guard never fires."""


@final
@dataclass(frozen=True, slots=True)
class Attack:
    """One kind of hostile cookie and the layer expected to stop it."""

    name: str
    """Stable identifier, used in forms and in ``data-attack`` attributes."""
    title: str
    story: str
    """What the attacker does, in one sentence."""
    layer: str
    """The pipeline step that stops it (see the design notes)."""
    expect: Verdict


ATTACKS: Final[tuple[Attack, ...]] = (
    Attack(
        "malformed",
        "Malformed",
        "Sends garbage instead of a token: an SQL injection attempt in the cookie.",
        "1 · shape",
        Verdict.MALFORMED,
    ),
    Attack(
        "retired",
        "Retired key",
        "Replays a genuine cookie signed with a key that was rotated out and retired since.",
        "2 · key",
        Verdict.RETIRED,
    ),
    Attack(
        "forged",
        "Forged",
        "Mints a well-formed token and signs it with a key of its own invention.",
        "3 · MAC",
        Verdict.FORGED,
    ),
    Attack(
        "tampered",
        "Tampered",
        "Takes its own genuine user cookie and edits the class to admin.",
        "3 · MAC",
        Verdict.FORGED,
    ),
    Attack(
        "guessed",
        "Guessed",
        "Guesses a random 256-bit session id in a well-formed token with a random MAC.",
        "3 · MAC",
        Verdict.FORGED,
    ),
    Attack(
        "future",
        "Future-dated",
        "Presents a genuinely signed token dated an hour ahead (skew allowed: 5 s).",
        "4 · time",
        Verdict.FORGED,
    ),
    Attack(
        "expired",
        "Expired",
        "Replays a cookie stolen 13 hours ago; the expiry signed inside it has passed.",
        "4 · time",
        Verdict.EXPIRED,
    ),
    Attack(
        "revoked",
        "Revoked",
        "Replays a genuine cookie issued a second before its class was killed.",
        "5 · epoch",
        Verdict.REVOKED,
    ),
    Attack(
        "wrong-binding",
        "Wrong binding",
        "Replays a cookie bound to alice's laptop from another device.",
        "6 · binding",
        Verdict.BINDING_MISMATCH,
    ),
    Attack(
        "replayed",
        "Replayed",
        "Replays a genuinely signed cookie whose session no longer exists (logged out).",
        "7 · store",
        Verdict.UNKNOWN,
    ),
)
"""Every attack, in pipeline order."""

_BY_NAME: Final = {a.name: a for a in ATTACKS}


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class AttackResult:
    """What the engine made of one crafted cookie."""

    attack: str
    verdict: Verdict
    reason: str
    """The engine's internal reason (shown here because this is a lab; never sent to clients)."""
    cookie: str
    """The crafted cookie, abbreviated for display."""
    store_calls: int
    """Store round trips the engine made for it."""
    retry_after: float | None = None
    """For LOCKED_OUT: seconds until the attacker may try again."""

    @property
    def status(self) -> int:
        """The HTTP status the middleware answers with for this cookie."""
        return 429 if self.verdict is Verdict.LOCKED_OUT else 200

    def as_json(self) -> dict[str, str | int | float | None]:
        """Return the result as session-storable JSON."""
        return {
            "verdict": self.verdict.value,
            "reason": self.reason,
            "cookie": self.cookie,
            "store_calls": self.store_calls,
            "retry_after": self.retry_after,
        }


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignResult:
    """The outcome of a guessing campaign."""

    attempts: int
    counts: dict[str, int]
    """Verdict value -> how many guesses got it."""
    locked_after: int | None
    """How many guesses went through before the first LOCKED_OUT, if it came."""
    retry_after: float | None
    store_calls: int

    def as_json(self) -> dict[str, object]:
        """Return the result as session-storable JSON."""
        return {
            "attempts": self.attempts,
            "counts": dict(self.counts),
            "locked_after": self.locked_after,
            "retry_after": self.retry_after,
            "store_calls": self.store_calls,
        }


def abbreviate(cookie: str) -> str:
    """Shorten a cookie for display: the id and the MAC are cut, the rest kept."""
    parts = cookie.split(".")
    if len(parts) == 8 and parts[0] == TOKEN_VERSION:
        parts[3] = parts[3][:6] + "…"
        parts[7] = parts[7][:10] + "…"
        if len(parts[6]) > 8:
            parts[6] = parts[6][:8] + "…"
        return ".".join(parts)
    return cookie if len(cookie) <= 48 else cookie[:47] + "…"


@final
class Lab:
    """Runs the attacks against an engine.

    Args:
        engine: The demo's real engine (the same one that guards its pages).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.keyring = engine.keyring
        if self.keyring.get(LAB_CLASS) is None:
            self.keyring.add_class(LAB_CLASS, keys={"k1": Secret.generate()})
        self._crafters: dict[str, Callable[[], Awaitable[tuple[str, str | None]]]] = {
            "malformed": self._malformed,
            "retired": self._retired,
            "forged": self._forged,
            "tampered": self._tampered,
            "guessed": self._guessed,
            "future": self._future,
            "expired": self._expired,
            "revoked": self._revoked,
            "wrong-binding": self._wrong_binding,
            "replayed": self._replayed,
        }

    @property
    def codec(self) -> TokenCodec:
        """The engine's own codec: what signs real cookies."""
        return self.engine.core.codec

    def _now(self) -> float:
        return self.engine.core.now()

    # -- crafting: each returns (cookie, binding presented with it) ------
    async def _malformed(self) -> tuple[str, str | None]:
        return "1' OR '1'='1", None

    async def _forged(self) -> tuple[str, str | None]:
        ring = KeyRing().add_class(
            "user", keys={self.keyring.current_key_id("user"): Secret.generate()}
        )
        return TokenCodec(ring).issue(ttl=3600, now=self._now()), None

    async def _tampered(self) -> tuple[str, str | None]:
        genuine = self.codec.issue(session_class="user", ttl=3600)
        version, _cls, rest = genuine.split(".", 2)
        return f"{version}.admin.{rest}", None

    async def _guessed(self) -> tuple[str, str | None]:
        return guess(self.keyring.current_key_id("user"), self._now()), None

    async def _future(self) -> tuple[str, str | None]:
        return self.codec.issue(session_class="user", ttl=3600, now=self._now() + 3600), None

    async def _expired(self) -> tuple[str, str | None]:
        stolen_at = self._now() - 13 * 3600
        return self.codec.issue(session_class="user", ttl=12 * 3600, now=stolen_at), None

    async def _revoked(self) -> tuple[str, str | None]:
        now = self._now()
        cookie = self.codec.issue(session_class=LAB_CLASS, ttl=3600, now=now - 1)
        await self.engine.kill(LAB_CLASS, at=now)
        return cookie, None

    async def _retired(self) -> tuple[str, str | None]:
        old = self.keyring.current_key_id(LAB_CLASS)
        cookie = self.codec.issue(session_class=LAB_CLASS, ttl=3600)
        ck = self.keyring.get(LAB_CLASS)
        if ck is not None and len(ck.retired) >= _MAX_LAB_RETIRED:
            # Keep the throwaway class small however often the attack runs:
            # start it afresh, remembering only the key just retired.
            self.keyring.add_class(
                LAB_CLASS, keys={"k1": Secret.generate()}, retired=[old], epoch=ck.epoch
            )
            return cookie, None
        self.keyring.rotate(LAB_CLASS)
        self.keyring.retire(LAB_CLASS, old)
        return cookie, None

    async def _wrong_binding(self) -> tuple[str, str | None]:
        cookie = self.codec.issue(session_class="user", ttl=3600, binding="device:alice-laptop")
        return cookie, "device:attacker-phone"

    async def _replayed(self) -> tuple[str, str | None]:
        return self.codec.issue(session_class="user", ttl=3600, session_id=new_session_id()), None

    # -- running --------------------------------------------------------
    async def run(self, name: str) -> AttackResult:
        """Craft the named attack's cookie and load it from the attacker's address.

        Raises:
            KeyError: No attack has that name.
        """
        crafter = self._crafters[_BY_NAME[name].name]
        cookie, binding = await crafter()
        with counting() as calls:
            session = await self.engine.load(cookie, binding=binding, client=ATTACKER, path="/lab")
        return AttackResult(
            attack=name,
            verdict=session.verdict,
            reason=session.reason,
            cookie=abbreviate(cookie),
            store_calls=calls[0],
            retry_after=session.retry_after,
        )

    async def campaign(self, limit: int = MAX_GUESSES) -> CampaignResult:
        """Send guessed cookies from :data:`GUESSER` until the guard locks it out."""
        counts: Counter[str] = Counter()
        retry_after: float | None = None
        locked_after: int | None = None
        attempts = 0
        kid = self.keyring.current_key_id("user")
        with counting() as calls:
            while attempts < limit:
                attempts += 1
                session = await self.engine.load(
                    guess(kid, self._now()), client=GUESSER, path="/lab"
                )
                counts[session.verdict.value] += 1
                if session.verdict is Verdict.LOCKED_OUT:
                    retry_after = session.retry_after
                    locked_after = attempts - 1
                    break
        return CampaignResult(
            attempts=attempts,
            counts=dict(counts),
            locked_after=locked_after,
            retry_after=retry_after,
            store_calls=calls[0],
        )

    def locked(self) -> dict[str, float]:
        """The lab's addresses that the guard has locked out, with seconds left."""
        guard = self.engine.core.guard
        if guard is None:
            return {}
        now = self._now()
        out = {}
        for address in (ATTACKER, GUESSER):
            wait = guard.retry_after(guard.key_of(address), now)
            if wait is not None:
                out[address] = wait
        return out

    def unlock(self) -> None:
        """Lift the lock-outs of the lab's addresses."""
        guard = self.engine.core.guard
        if guard is None:
            return
        for address in (ATTACKER, GUESSER):
            key = guard.key_of(address)
            if key is not None:
                guard.unlock(key)


def guess(key_id: str, now: float) -> str:
    """Return a well-formed, unsigned token for a random id: what a guesser sends."""
    iat = round(now * 1000)
    sid = new_session_id()
    return f"{TOKEN_VERSION}.user.{key_id}.{sid}.{iat}.{iat + 3_600_000}._.{secrets.token_hex(32)}"
