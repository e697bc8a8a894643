"""The guard: notices session-id guessing per client and locks the client out.

Attack verdicts (MALFORMED, FORGED, BINDING_MISMATCH, and UNKNOWN in bursts)
are counted per client key in a sliding window. Past a threshold the client
is locked out (verdict LOCKED_OUT, HTTP 429 with ``Retry-After``) for a time
that doubles with each repeated lock-out. EXPIRED, IDLE_EXPIRED, REVOKED and
RETIRED never count: they are ordinary users.

Memory is bounded: at most ``GuardPolicy.max_clients`` clients are tracked
(least recently seen dropped first), about 310 bytes each — some 31 MB at the
default bound of 100 000 (measured in ``benchmarks/REPORT.md``), however many
addresses an attacker sprays from. A
client that keeps attacking stays recent and so stays tracked.

The lock-out check is one dictionary look-up and runs before any parsing.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, final

from .core import ATTACK_VERDICTS, Verdict
from .errors import ConfigurationError

__all__ = ["Guard", "GuardPolicy", "GuardSync", "client_key"]

log = logging.getLogger("donjon.guard")


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class GuardPolicy:
    """Thresholds of the guard. The defaults suit a public site.

    An ordinary user sends almost no attack verdicts (a stale or damaged
    cookie at most, then a fresh session replaces it), so 20 in a minute from
    one client is an attack, even behind a large NAT. Lock-outs start at one
    minute and double up to an hour.
    """

    window: float = 60.0
    """Length of the sliding window, in seconds."""
    threshold: int = 20
    """Attack verdicts (MALFORMED, FORGED, BINDING_MISMATCH) per window that lock a client."""
    unknown_threshold: int = 30
    """UNKNOWN verdicts per window that lock a client (a burst of guessed ids)."""
    lockout: float = 60.0
    """First lock-out, in seconds."""
    backoff: float = 2.0
    """Each further lock-out lasts this many times longer."""
    max_lockout: float = 3600.0
    """The longest lock-out, in seconds."""
    forgive_after: float = 24 * 3600.0
    """Seconds without a lock-out after which the back-off starts again."""
    max_clients: int = 100_000
    """The bound on tracked clients (memory)."""

    def __post_init__(self) -> None:
        for name in ("window", "lockout", "max_lockout", "forgive_after"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigurationError(f"GuardPolicy.{name} must be > 0")
        if self.threshold < 1 or self.unknown_threshold < 1 or self.max_clients < 1:
            raise ConfigurationError("GuardPolicy thresholds and max_clients must be >= 1")
        if self.backoff < 1:
            raise ConfigurationError("GuardPolicy.backoff must be >= 1")

    def lock_duration(self, strikes: int) -> float:
        """How long the ``strikes``-th lock-out lasts."""
        return min(self.max_lockout, self.lockout * self.backoff ** max(0, strikes - 1))


@functools.lru_cache(maxsize=8192)  # parsing costs microseconds; most clients come back
def client_key(address: str | None) -> str | None:
    """Normalise a client address into a guard key.

    IPv4 addresses are kept whole; IPv6 addresses are cut to their /64 (one
    subscriber usually holds a whole /64, so counting single addresses would
    let an attacker rotate through 2**64 of them). Anything else is kept.
    """
    if address is None:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:256]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class _State:
    __slots__ = (
        "attack",
        "locked_until",
        "prev_attack",
        "prev_unknown",
        "start",
        "strikes",
        "struck_at",
        "unknown",
    )

    def __init__(self, start: float) -> None:
        self.start = start
        self.attack = 0
        self.unknown = 0
        self.prev_attack = 0
        self.prev_unknown = 0
        self.locked_until = 0.0
        self.strikes = 0
        self.struck_at = 0.0


class GuardSync(Protocol):
    """Shares the guard's counts and lock-outs across processes (e.g. Redis).

    The guard hands over what it counted since the last exchange and gets
    back the fleet-wide lock-outs. Exchanges happen at most once per
    ``interval``, never once per request.
    """

    interval: float

    def exchange(self, deltas: Mapping[str, tuple[int, int]], now: float) -> Mapping[str, float]:
        """Push (attack, unknown) counts per client; return client -> locked-until."""
        ...


_ZERO: Final = 0.0
_SKEW_ALLOWED: Final = 60.0
"""Seconds a fleet lock-out may end beyond ``max_lockout`` (clock skew)."""
_SPARE_LOCKED: Final = 64
"""Locked-out clients passed over per eviction before one of them may go."""


@final
class Guard:
    """Counts attack verdicts per client and locks out guessers.

    Thread-safe. Use one guard per process, shared by all its engines.

    Args:
        policy: Thresholds and bounds.
        key: Turns the adapter's client address into a guard key; by
            default :func:`client_key` (IPv6 cut to its /64).
        sync: Optional fleet-wide sharing (see :mod:`donjon.guard_redis`).
    """

    __slots__ = (
        "_deltas",
        "_key",
        "_last_sync",
        "_lock",
        "_remote",
        "_states",
        "lockouts",
        "policy",
        "sync",
    )

    def __init__(
        self,
        policy: GuardPolicy | None = None,
        *,
        key: Callable[[str | None], str | None] = client_key,
        sync: GuardSync | None = None,
    ) -> None:
        self.policy = policy or GuardPolicy()
        self._key = key
        self._lock = threading.Lock()
        self._states: OrderedDict[str, _State] = OrderedDict()
        self._remote: dict[str, float] = {}
        self._deltas: dict[str, list[int]] = {}
        self._last_sync = float("-inf")
        self.sync = sync
        self.lockouts = 0
        """How many lock-outs this guard has started (for metrics)."""

    def __len__(self) -> int:
        return len(self._states)

    def key_of(self, address: str | None) -> str | None:
        """The guard key of a client address."""
        return self._key(address)

    def retry_after(self, client: str | None, now: float) -> float | None:
        """Seconds the client must wait, or ``None`` when it is not locked out.

        This runs before any parsing: one dictionary look-up.
        """
        if client is None:
            return None
        state = self._states.get(client)
        until = state.locked_until if state is not None else _ZERO
        if self._remote:
            until = max(until, self._remote.get(client, _ZERO))
        if until <= now:
            return None
        if state is not None:
            # A locked client that keeps knocking stays recent: it must not
            # drift out of the table (and out of its lock-out) while other
            # keys are counted.
            with self._lock:
                if client in self._states:
                    self._states.move_to_end(client)
        return until - now

    def _evict(self, now: float) -> None:
        """Drop the least recent clients over ``max_clients`` (lock held).

        A client still locked out is passed over (moved to the recent end) a
        few times before anything else goes, so a flood of new addresses
        cannot push a lock-out out of memory; the table stays bounded.
        """
        states = self._states
        spared = 0
        while len(states) > self.policy.max_clients:
            key, oldest = next(iter(states.items()))
            if oldest.locked_until > now and spared < _SPARE_LOCKED:
                states.move_to_end(key)
                spared += 1
                continue
            del states[key]

    def record(self, client: str | None, verdict: Verdict, now: float) -> bool:
        """Count one verdict; return whether this locked the client out."""
        if client is None:
            return False
        is_unknown = verdict is Verdict.UNKNOWN
        if not is_unknown and verdict not in ATTACK_VERDICTS:
            return False
        p = self.policy
        with self._lock:
            state = self._states.get(client)
            if state is None:
                state = _State(now)
                self._states[client] = state
                self._evict(now)
            else:
                self._states.move_to_end(client)
            elapsed = now - state.start
            if elapsed >= p.window:
                roll = elapsed < 2 * p.window
                state.prev_attack = state.attack if roll else 0
                state.prev_unknown = state.unknown if roll else 0
                state.attack = state.unknown = 0
                state.start = now if not roll else state.start + p.window
                elapsed = now - state.start
            if is_unknown:
                state.unknown += 1
            else:
                state.attack += 1
            if self.sync is not None:
                d = self._deltas.setdefault(client, [0, 0])
                d[1 if is_unknown else 0] += 1
            weight = max(0.0, 1.0 - elapsed / p.window)
            attack = state.attack + state.prev_attack * weight
            unknown = state.unknown + state.prev_unknown * weight
            if state.locked_until > now:
                return False
            if attack >= p.threshold or unknown >= p.unknown_threshold:
                if now - state.struck_at > p.forgive_after:
                    state.strikes = 0
                state.strikes += 1
                state.struck_at = now
                state.locked_until = now + p.lock_duration(state.strikes)
                state.attack = state.unknown = state.prev_attack = state.prev_unknown = 0
                self.lockouts += 1
                return True
            return False

    def due(self, now: float) -> bool:
        """Whether a fleet exchange is due."""
        return self.sync is not None and now - self._last_sync >= self.sync.interval

    def take_deltas(self, now: float) -> dict[str, tuple[int, int]]:
        """Hand over the counts since the last exchange (for the sync)."""
        with self._lock:
            out = {k: (v[0], v[1]) for k, v in self._deltas.items()}
            self._deltas.clear()
            self._last_sync = now
        return out

    def apply_remote(self, locks: Mapping[str, float], now: float) -> None:
        """Adopt the fleet-wide lock-outs from an exchange.

        Values that cannot be a lock-out of this policy (not finite, or ending
        later than ``max_lockout`` from now, a minute of clock skew allowed)
        are ignored and logged: corrupt shared data must neither crash a
        request nor lock a client out for ever.
        """
        limit = now + self.policy.max_lockout + _SKEW_ALLOWED
        good: dict[str, float] = {}
        bad = 0
        for k, v in locks.items():
            if isinstance(v, (int, float)) and now < v <= limit:
                good[k] = float(v)
            elif not (isinstance(v, (int, float)) and v <= now):
                bad += 1
        if bad:
            log.warning("donjon guard: %d fleet lock-out(s) ignored (impossible end times)", bad)
        self._remote = good

    def exchange(self, now: float) -> None:
        """Run a synchronous fleet exchange now (sync engines call this when due).

        A sync that raises never breaks the request that happened to trigger
        the exchange: the error is logged and the guard goes on alone with
        the fleet-wide lock-outs it last knew.
        """
        if self.sync is None:
            return
        deltas = self.take_deltas(now)
        try:
            locks = self.sync.exchange(deltas, now)
        except Exception:
            log.exception("donjon guard: fleet exchange failed; the local guard goes on alone")
            return
        self.apply_remote(locks, now)

    def unlock(self, client: str) -> None:
        """Lift a client's lock-out (an administrator's action)."""
        with self._lock:
            self._states.pop(client, None)
            self._remote.pop(client, None)

    def locked_clients(self, now: float) -> dict[str, float]:
        """Clients locked out right now, with seconds left."""
        with self._lock:
            out = {k: s.locked_until - now for k, s in self._states.items() if s.locked_until > now}
        for k, v in self._remote.items():
            if v > now:
                out[k] = max(out.get(k, 0.0), v - now)
        return out

    def __repr__(self) -> str:
        return f"Guard({self.policy!r}, tracked={len(self._states)})"
