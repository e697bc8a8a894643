"""Verdict events: one structured event per presented credential.

Events go to the ``donjon.security`` logger at a level that fits the verdict
(forged → WARNING, expired → INFO …) and to any hooks the application
registers. Nothing secret is ever in an event: no token, no key, no session
id — only a short prefix of its record key (a SHA-256 of the id) for
correlation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, final

from .core import Verdict

__all__ = ["LEVELS", "EventHook", "Events", "VerdictEvent"]

log = logging.getLogger("donjon.security")

_SOURCE: Final = __file__
_MAX_HELD: Final = 1000
"""Clients with held-back records tracked per window; the rest are summed together."""
_OTHERS: Final = "\x00others"
_MESSAGE: Final = "session verdict=%s reason=%s class=%s key=%s client=%s path=%s ref=%s"

_MAX_LOGGED: Final = 200
"""Longest client-supplied text (a path) written into a log line."""


def printable(text: str | None) -> str | None:
    """Client-supplied text made safe for a log line: no forged lines, bounded.

    A percent-decoded path can hold a newline; written as is, it would start
    a fake record. Control characters are escaped (``\\n``, ``\\x1b``) and
    the text is cut at :data:`_MAX_LOGGED` characters.
    """
    if text is None or (text.isprintable() and len(text) <= _MAX_LOGGED):
        return text
    cut = text[:_MAX_LOGGED]
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return safe + ("..." if len(text) > _MAX_LOGGED else "")


LEVELS: Final[dict[Verdict, int]] = {
    Verdict.VALID: logging.DEBUG,
    Verdict.ABSENT: logging.DEBUG,
    Verdict.EXPIRED: logging.INFO,
    Verdict.IDLE_EXPIRED: logging.INFO,
    Verdict.RETIRED: logging.INFO,
    Verdict.REVOKED: logging.INFO,
    Verdict.UNKNOWN: logging.INFO,
    Verdict.MALFORMED: logging.WARNING,
    Verdict.FORGED: logging.WARNING,
    Verdict.BINDING_MISMATCH: logging.WARNING,
    # The lock-out itself is logged once, at WARNING, by the guard; each
    # refused request after it is routine.
    Verdict.LOCKED_OUT: logging.INFO,
}
"""The logging level of each verdict's event."""


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class VerdictEvent:
    """What happened to one presented credential. Holds nothing secret."""

    verdict: Verdict
    reason: str
    session_class: str | None
    key_id: str | None
    client: str | None
    """The guard's client key (an address by default)."""
    path: str | None
    session_ref: str | None
    """A short hash of the record key, to correlate events of one session."""
    time: float
    duration: float | None = None
    """Seconds the engine spent on this load (verification and store)."""

    def as_dict(self) -> dict[str, Any]:
        """Return the event as a JSON-ready dict."""
        return {
            "verdict": self.verdict.value,
            "reason": self.reason,
            "session_class": self.session_class,
            "key_id": self.key_id,
            "client": self.client,
            "path": self.path,
            "session_ref": self.session_ref,
            "time": self.time,
            "duration": self.duration,
        }


EventHook = Callable[[VerdictEvent], None]
"""A callable that receives every :class:`VerdictEvent`."""


@final
class Events:
    """Delivers verdict events to logging and to registered hooks.

    Every event reaches every hook (metrics count them all). Log records are
    rate-limited **per client** so that a flood of bad cookies cannot flood
    the logs too: within each ``log_window`` seconds a client gets at most
    ``log_burst`` records; beyond that its records are counted, and when the
    window ends one WARNING summary per such client says how many records
    of which verdicts were held back (``extra={"donjon_suppressed": {...}}``).
    ``log_burst=None`` writes every record. Valid sessions (logged only with
    ``log_valid``) are never held back.

    A hook that raises is logged and skipped; it never breaks a request.
    Hooks may also define ``store_error(operation: str)`` to hear of store
    failures (as :class:`~donjon.metrics.PrometheusMetrics` does).

    Args:
        hooks: Callables that receive every event.
        log_valid: Also log VALID verdicts (at DEBUG).
        log_burst: Records per client per window before records are held back.
        log_window: The length of a rate-limit window, in seconds.
    """

    __slots__ = (
        "_held",
        "_hooks",
        "_lock",
        "_logged",
        "_window_start",
        "log_burst",
        "log_valid",
        "log_window",
    )

    def __init__(
        self,
        hooks: Iterable[EventHook] = (),
        *,
        log_valid: bool = False,
        log_burst: int | None = 20,
        log_window: float = 1.0,
    ) -> None:
        if log_burst is not None and log_burst < 1:
            raise ValueError("log_burst must be at least 1 (or None: no limit)")
        if log_window <= 0:
            raise ValueError("log_window must be > 0 seconds")
        self._hooks: list[EventHook] = list(hooks)
        self.log_valid = log_valid
        self.log_burst = log_burst
        self.log_window = log_window
        self._lock = threading.Lock()
        self._window_start = float("-inf")
        self._logged: dict[str | None, int] = {}
        self._held: dict[str | None, dict[Verdict, int]] = {}

    def add(self, hook: EventHook) -> None:
        """Register a hook."""
        self._hooks.append(hook)

    def remove(self, hook: EventHook) -> None:
        """Unregister a hook."""
        self._hooks.remove(hook)

    @property
    def has_hooks(self) -> bool:
        """Whether any hook listens (an event must then be built)."""
        return bool(self._hooks)

    def store_error(self, operation: str) -> None:
        """Tell the hooks that care that the store failed during ``operation``."""
        for hook in self._hooks:
            handler = getattr(hook, "store_error", None)
            if handler is not None:
                try:
                    handler(operation)
                except Exception:
                    log.exception("donjon store-error hook %r failed", hook)

    def should_log(self, verdict: Verdict, client: str | None, now: float) -> bool:
        """Whether a record for this verdict is to be written (counts it if so).

        Called once per event; :meth:`emit` calls it. A record held back is
        counted for the window's summary.
        """
        if verdict is Verdict.VALID:
            return self.log_valid and log.isEnabledFor(logging.DEBUG)
        if not log.isEnabledFor(LEVELS.get(verdict, logging.INFO)):
            return False
        burst = self.log_burst
        if burst is None:
            return True
        with self._lock:
            if now - self._window_start >= self.log_window or now < self._window_start:
                self._roll(now)
            n = self._logged.get(client, 0)
            if n < burst:
                self._logged[client] = n + 1
                return True
            held = self._held.get(client)
            if held is None:
                if len(self._held) >= _MAX_HELD:
                    client = _OTHERS
                held = self._held.setdefault(client, {})
            held[verdict] = held.get(verdict, 0) + 1
            return False

    def _roll(self, now: float) -> None:
        """Start a new window; write the summaries of the one that ended (lock held)."""
        held, self._held = self._held, {}
        self._logged = {}
        span = now - self._window_start
        self._window_start = now
        for client, by_verdict in held.items():
            counts = {v.value: n for v, n in by_verdict.items()}
            log.warning(
                "donjon: %d verdict records held back for client %s within %.1f s: %s",
                sum(counts.values()),
                "(more clients)" if client is _OTHERS else printable(client),
                min(span, self.log_window),
                ", ".join(f"{v}={n}" for v, n in sorted(counts.items())),
                extra={"donjon_suppressed": {"client": client, "counts": counts}},
            )

    def flush(self, now: float) -> None:
        """Write the summaries of held-back records now (e.g. at shutdown)."""
        with self._lock:
            self._roll(now)

    def emit(self, event: VerdictEvent) -> None:
        """Deliver one event: a log record (rate-limited) and every hook."""
        self.deliver(event, log_it=self.should_log(event.verdict, event.client, event.time))

    def deliver(self, event: VerdictEvent, *, log_it: bool) -> None:
        """Deliver an event whose :meth:`should_log` answer is already known."""
        if log_it:
            # The record is made here rather than by log.log(), which would
            # walk the stack for the caller (always this method): a third of
            # the cost of logging, on every forged cookie of a flood.
            record = log.makeRecord(
                log.name,
                LEVELS.get(event.verdict, logging.INFO),
                _SOURCE,
                _emit_line,
                _MESSAGE,
                (
                    event.verdict.value,
                    event.reason,
                    event.session_class,
                    event.key_id,
                    printable(event.client),
                    printable(event.path),
                    event.session_ref,
                ),
                None,
                "deliver",
                # The event itself, not a copy: as_dict() would cost more than the MAC check.
                {"donjon_event": event},
            )
            log.handle(record)
        for hook in self._hooks:
            try:
                hook(event)
            except Exception:
                log.exception("donjon event hook %r failed", hook)


_emit_line: Final = Events.deliver.__code__.co_firstlineno
