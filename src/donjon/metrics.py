"""Optional Prometheus metrics (the ``prometheus`` extra).

::

    metrics = PrometheusMetrics()
    engine = AsyncEngine(..., events=[metrics])

Counters by verdict and class, lock-outs, store errors, and a histogram of
the time the engine spends loading a session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

from .core import Verdict
from .errors import MissingDependency

if TYPE_CHECKING:
    from .events import VerdictEvent

__all__ = ["PrometheusMetrics"]


@final
class PrometheusMetrics:
    """An event hook that feeds Prometheus counters and histograms.

    Args:
        registry: A ``prometheus_client.CollectorRegistry``; the default
            global registry when omitted.
        namespace: Metric name prefix.
    """

    def __init__(self, registry: Any = None, *, namespace: str = "donjon") -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise MissingDependency("prometheus-client", "prometheus") from exc
        kw: dict[str, Any] = {"namespace": namespace}
        if registry is not None:
            kw["registry"] = registry
        self.verdicts = prom.Counter(
            "verdicts",
            "Presented session credentials by verdict and class",
            ["verdict", "session_class"],
            **kw,
        )
        self.lockouts = prom.Counter(
            "lockouts", "Requests refused because the client is locked out", **kw
        )
        self.store_errors = prom.Counter(
            "store_errors", "Session store failures (StoreUnavailable)", ["operation"], **kw
        )
        self.load_seconds = prom.Histogram(
            "load_seconds",
            "Time to load a session (verify + store)",
            buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25),
            **kw,
        )

    def __call__(self, event: VerdictEvent) -> None:
        """Count one verdict event."""
        self.verdicts.labels(event.verdict.value, event.session_class or "-").inc()
        if event.verdict is Verdict.LOCKED_OUT:
            self.lockouts.inc()
        if event.duration is not None:
            self.load_seconds.observe(event.duration)

    def store_error(self, operation: str) -> None:
        """Count one store failure."""
        self.store_errors.labels(operation).inc()
