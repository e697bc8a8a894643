"""Verdict events: one structured event per presented credential.

Events go to the ``donjon.security`` logger at a level that fits the verdict
(forged → WARNING, expired → INFO …) and to any hooks the application
registers. Nothing secret is ever in an event: no token, no key, no session
id — only a salted hash of the id for correlation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, final

from .core import Verdict

__all__ = ["LEVELS", "EventHook", "Events", "VerdictEvent"]

log = logging.getLogger("donjon.security")

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

    A hook that raises is logged and skipped; it never breaks a request.
    Hooks may also define ``store_error(operation: str)`` to hear of store
    failures (as :class:`~donjon.metrics.PrometheusMetrics` does).
    """

    __slots__ = ("_hooks", "log_valid")

    def __init__(self, hooks: Iterable[EventHook] = (), *, log_valid: bool = False) -> None:
        self._hooks: list[EventHook] = list(hooks)
        self.log_valid = log_valid

    def add(self, hook: EventHook) -> None:
        """Register a hook."""
        self._hooks.append(hook)

    def remove(self, hook: EventHook) -> None:
        """Unregister a hook."""
        self._hooks.remove(hook)

    def store_error(self, operation: str) -> None:
        """Tell the hooks that care that the store failed during ``operation``."""
        for hook in self._hooks:
            handler = getattr(hook, "store_error", None)
            if handler is not None:
                try:
                    handler(operation)
                except Exception:
                    log.exception("donjon store-error hook %r failed", hook)

    def emit(self, event: VerdictEvent) -> None:
        """Deliver one event."""
        level = LEVELS.get(event.verdict, logging.INFO)
        if (event.verdict is not Verdict.VALID or self.log_valid) and log.isEnabledFor(level):
            log.log(
                level,
                "session verdict=%s reason=%s class=%s key=%s client=%s path=%s ref=%s",
                event.verdict.value,
                event.reason,
                event.session_class,
                event.key_id,
                event.client,
                event.path,
                event.session_ref,
                # The event itself, not a copy: as_dict() would cost more than the MAC check.
                extra={"donjon_event": event},
            )
        for hook in self._hooks:
            try:
                hook(event)
            except Exception:
                log.exception("donjon event hook %r failed", hook)
