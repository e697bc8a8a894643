"""The dashboard's numbers: an event hook that counts verdicts per second.

Memory is bounded: only the last ``window`` one-second buckets are kept,
whatever the traffic (a guessing campaign adds counts, not buckets).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, final

from ..core import Verdict
from ._svg import Series, line_chart, stacked_bars

if TYPE_CHECKING:
    from ..events import VerdictEvent
    from ..guard import Guard

__all__ = ["COLORS", "STACK_ORDER", "VerdictStats"]

STACK_ORDER: Final = (
    Verdict.VALID,
    Verdict.ABSENT,
    Verdict.EXPIRED,
    Verdict.IDLE_EXPIRED,
    Verdict.RETIRED,
    Verdict.REVOKED,
    Verdict.UNKNOWN,
    Verdict.MALFORMED,
    Verdict.FORGED,
    Verdict.BINDING_MISMATCH,
    Verdict.LOCKED_OUT,
)
"""Bottom to top: ordinary traffic first, attacks and refusals on top."""

COLORS: Final[dict[Verdict, str]] = {
    Verdict.VALID: "#2e7d32",
    Verdict.ABSENT: "#9aa5b1",
    Verdict.EXPIRED: "#1e88e5",
    Verdict.IDLE_EXPIRED: "#64b5f6",
    Verdict.RETIRED: "#5e35b1",
    Verdict.REVOKED: "#8e24aa",
    Verdict.UNKNOWN: "#f9a825",
    Verdict.MALFORMED: "#ef6c00",
    Verdict.FORGED: "#d32f2f",
    Verdict.BINDING_MISMATCH: "#c2185b",
    Verdict.LOCKED_OUT: "#1f2933",
}
"""One colour per verdict, shared by the charts and the page's badges."""

_SESSION_COLORS: Final = ("#2f5bd3", "#c62828", "#00897b", "#6d4c41")


@final
class VerdictStats:
    """Count verdict events per second, in memory, for the live dashboard.

    Register it as an engine event hook (``AsyncEngine(events=[stats])``).
    Besides the verdicts it keeps two gauges that the dashboard samples when
    it refreshes: signed-in sessions per class and locked-out clients.

    Args:
        window: How many one-second buckets to keep and chart.
        guard: The engine's guard, to count the lock-outs it starts.
    """

    __slots__ = (
        "_gauges",
        "_lock",
        "_lockouts",
        "_seen_lockouts",
        "_verdicts",
        "guard",
        "totals",
        "window",
    )

    def __init__(self, *, window: int = 120, guard: Guard | None = None) -> None:
        if window < 2:
            raise ValueError("window must be at least 2 seconds")
        self.window = window
        self.guard = guard
        self.totals: Counter[Verdict] = Counter()
        """Every verdict counted since start."""
        self._verdicts: dict[int, Counter[Verdict]] = {}
        self._lockouts: dict[int, int] = {}
        self._gauges: dict[int, tuple[dict[str, int], int]] = {}
        self._seen_lockouts = guard.lockouts if guard is not None else 0
        self._lock = threading.Lock()

    def __call__(self, event: VerdictEvent) -> None:
        """Count one verdict event (the engine calls this)."""
        second = math.floor(event.time)
        with self._lock:
            self.totals[event.verdict] += 1
            self._verdicts.setdefault(second, Counter())[event.verdict] += 1
            if self.guard is not None and self.guard.lockouts != self._seen_lockouts:
                # The engine records the verdict in the guard before it emits the event.
                started = self.guard.lockouts - self._seen_lockouts
                self._seen_lockouts = self.guard.lockouts
                self._lockouts[second] = self._lockouts.get(second, 0) + started
            self._prune(second)

    def sample(self, now: float, *, sessions: Mapping[str, int], locked: int) -> None:
        """Record the gauges for the current second (the dashboard calls this)."""
        second = math.floor(now)
        with self._lock:
            self._gauges[second] = (dict(sessions), locked)
            self._prune(second)

    @property
    def lockouts(self) -> int:
        """Lock-outs the guard has started since start."""
        return self.guard.lockouts if self.guard is not None else 0

    def _prune(self, second: int) -> None:
        oldest = second - self.window
        for table in (self._verdicts, self._lockouts, self._gauges):
            if len(table) > self.window:
                for key in [k for k in table if k <= oldest]:
                    del table[key]

    def _seconds(self, now: float) -> range:
        last = math.floor(now)
        return range(last - self.window + 1, last + 1)

    def verdict_series(self, now: float) -> list[Series]:
        """Per-verdict counts per second over the window; verdicts never seen are left out."""
        seconds = self._seconds(now)
        with self._lock:
            rows = [self._verdicts.get(s, Counter()) for s in seconds]
        out = []
        for verdict in STACK_ORDER:
            values: list[float | None] = [float(row[verdict]) for row in rows]
            if any(values):
                out.append(Series(verdict.value, values, COLORS[verdict]))
        return out

    def lockout_series(self, now: float) -> list[Series]:
        """Locked-out clients (sampled) and lock-outs started, per second."""
        seconds = self._seconds(now)
        with self._lock:
            gauges = [self._gauges.get(s) for s in seconds]
            started = [float(self._lockouts.get(s, 0)) for s in seconds]
        locked: list[float | None] = []
        last: float | None = None
        for g in gauges:
            if g is not None:
                last = float(g[1])
            locked.append(last)
        return [
            Series("clients locked out", locked, COLORS[Verdict.LOCKED_OUT]),
            Series("new lock-outs", list(started), COLORS[Verdict.FORGED]),
        ]

    def session_series(self, now: float, classes: tuple[str, ...]) -> list[Series]:
        """Signed-in sessions per class, as sampled (carried forward between samples)."""
        seconds = self._seconds(now)
        with self._lock:
            gauges = [self._gauges.get(s) for s in seconds]
        out = []
        for i, cls in enumerate(classes):
            values: list[float | None] = []
            last: float | None = None
            for g in gauges:
                if g is not None:
                    last = float(g[0].get(cls, 0))
                values.append(last)
            out.append(Series(cls, values, _SESSION_COLORS[i % len(_SESSION_COLORS)]))
        return out

    def charts(self, now: float, classes: tuple[str, ...]) -> dict[str, str]:
        """Render the three dashboard charts as inline SVG."""
        left = f"-{self.window // 60} min" if self.window % 60 == 0 else f"-{self.window} s"
        return {
            "verdicts": stacked_bars(
                self.verdict_series(now),
                title="Verdicts per second",
                left_label=left,
                width=960,
                height=240,
            ),
            "lockouts": line_chart(
                self.lockout_series(now),
                title="Lock-outs",
                left_label=left,
                width=460,
                height=200,
            ),
            "sessions": line_chart(
                self.session_series(now, classes),
                title="Signed-in sessions",
                left_label=left,
                width=460,
                height=200,
            ),
        }
