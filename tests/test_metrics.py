"""Prometheus metrics through the event hooks."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from donjon import KeyRing, StoreUnavailable, Verdict
from donjon.engine import Engine
from donjon.guard import Guard, GuardPolicy
from donjon.metrics import PrometheusMetrics
from donjon.stores import MemoryStore


def value(reg: CollectorRegistry, name: str, **labels: str) -> float:
    v = reg.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_counters_by_verdict_class_and_lockouts() -> None:
    reg = CollectorRegistry()
    metrics = PrometheusMetrics(reg)
    engine = Engine(
        keyring=KeyRing.generate(), store=MemoryStore(), events=[metrics],
        guard=Guard(GuardPolicy(threshold=2)),
    )
    s = engine.load(None)
    s["x"] = 1
    token = engine.commit(s, presented=False).token
    engine.load(token, client="1.1.1.1")
    engine.load("junk", client="2.2.2.2")
    engine.load("junk", client="2.2.2.2")
    engine.load("junk", client="2.2.2.2")
    assert value(reg, "donjon_verdicts_total", verdict="valid", session_class="user") == 1
    assert value(reg, "donjon_verdicts_total", verdict="malformed", session_class="-") == 2
    assert value(reg, "donjon_lockouts_total") == 1
    assert value(reg, "donjon_verdicts_total", verdict=Verdict.LOCKED_OUT.value,
                 session_class="-") == 1
    assert value(reg, "donjon_load_seconds_count") == 5


def test_store_errors_are_counted() -> None:
    reg = CollectorRegistry()
    metrics = PrometheusMetrics(reg)

    class Down:
        blocking = False

        def __getattr__(self, name: str) -> Any:
            def fail(*a: Any, **k: Any) -> Any:
                raise StoreUnavailable("down")

            return fail

    ring = KeyRing.generate()
    good = Engine(keyring=ring, store=MemoryStore())
    s = good.load(None)
    s["x"] = 1
    token = good.commit(s, presented=False).token
    engine = Engine(keyring=ring, store=Down(), events=[metrics])  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailable):
        engine.load(token)
    assert value(reg, "donjon_store_errors_total", operation="load") == 1
