"""The dashboard: the verdict-counting hook, the SVG charts and the live endpoint."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from starlette.applications import Starlette

from donjon import Verdict
from donjon.demo._stats import VerdictStats
from donjon.demo._svg import Series, line_chart, nice_scale, stacked_bars
from donjon.events import VerdictEvent
from donjon.guard import Guard, GuardPolicy
from donjon.testing import FrozenClock

from .conftest import Browser, demo_of

SVG = "{http://www.w3.org/2000/svg}"
T0 = 1_800_000_000.0


def parse(svg: str) -> ET.Element:
    """Parse a chart: our own output, so the stdlib parser is fine."""
    return ET.fromstring(svg)  # noqa: S314 - trusted input: the module under test made it


def event(verdict: Verdict, at: float, client: str = "192.0.2.1") -> VerdictEvent:
    return VerdictEvent(
        verdict=verdict,
        reason="",
        session_class=None,
        key_id=None,
        client=client,
        path="/",
        session_ref=None,
        time=at,
    )


@pytest.mark.parametrize(
    ("peak", "top", "step"),
    [
        (0, 4, 1),
        (0.5, 4, 1),
        (1, 4, 1),
        (4, 4, 1),
        (5, 6, 2),
        (7, 8, 2),
        (21, 30, 10),
        (95, 100, 25),
        (1234, 1500, 500),
    ],
)
def test_nice_scale(peak: float, top: float, step: float) -> None:
    assert nice_scale(peak) == (top, step)


def test_stacked_bars_is_well_formed_svg() -> None:
    svg = stacked_bars(
        [Series("valid", [1, 0, 2], "#0f0"), Series("<forged>", [0, 3, None], "#f00")],
        title="Verdicts & co",
    )
    root = parse(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("aria-label") == "Verdicts & co"
    bars = [r for g in root.iter(f"{SVG}g") if g.get("class") == "bars" for r in g]
    assert len(bars) == 3, "zero and missing values draw nothing"
    assert "&lt;forged&gt;" in svg and "<forged>" not in svg
    heights = {float(r.get("height", 0)) for r in bars}
    assert max(heights) > min(heights)


def test_stacked_bars_stack_up() -> None:
    svg = stacked_bars([Series("a", [2], "#000"), Series("b", [2], "#111")], title="t")
    root = parse(svg)
    rects = [r for g in root.iter(f"{SVG}g") if g.get("class") == "bars" for r in g]
    a, b = rects
    assert float(b.get("y", 0)) + float(b.get("height", 0)) == pytest.approx(float(a.get("y", 0)))


def test_line_chart_leaves_gaps_for_missing_samples() -> None:
    svg = line_chart([Series("locked", [None, None, 1, 2, None, 3, 4], "#000")], title="t")
    root = parse(svg)
    polylines = list(root.iter(f"{SVG}polyline"))
    assert len(polylines) == 2
    assert len(list(root.iter(f"{SVG}circle"))) == 1, "a dot marks the newest value"


def test_empty_charts_render() -> None:
    for chart in (stacked_bars([], title="t"), line_chart([], title="t")):
        assert parse(chart).tag == f"{SVG}svg"


def test_stats_count_per_second_and_stay_bounded() -> None:
    stats = VerdictStats(window=10)
    for second in range(1000):
        stats(event(Verdict.FORGED, T0 + second + 0.5))
        stats(event(Verdict.VALID, T0 + second + 0.7))
        stats.sample(T0 + second, sessions={"user": 1}, locked=0)
    assert len(stats._verdicts) <= 11
    assert len(stats._gauges) <= 11
    assert stats.totals[Verdict.FORGED] == 1000
    series = {s.name: s.values for s in stats.verdict_series(T0 + 999)}
    assert series == {"valid": [1.0] * 10, "forged": [1.0] * 10}


def test_stats_count_lockouts_and_sessions() -> None:
    clock = FrozenClock(T0)
    guard = Guard(GuardPolicy(threshold=3))
    stats = VerdictStats(window=5, guard=guard)
    for _ in range(3):
        guard.record("192.0.2.9", Verdict.FORGED, clock.time())
        stats(event(Verdict.FORGED, clock.time()))
    assert stats.lockouts == 1
    stats.sample(clock.time(), sessions={"user": 2, "admin": 1}, locked=1)
    clock.advance(2)
    locked, started = stats.lockout_series(clock.time())
    assert locked.values == [None, None, 1.0, 1.0, 1.0], "carried forward from the sample"
    assert started.values == [0, 0, 1.0, 0, 0]
    user, admin = stats.session_series(clock.time(), ("user", "admin"))
    assert user.values[-1] == 2.0 and admin.values[-1] == 1.0
    charts = stats.charts(clock.time(), ("user", "admin"))
    assert sorted(charts) == ["lockouts", "sessions", "verdicts"]
    for svg in charts.values():
        parse(svg)


async def test_dashboard_shows_the_verdicts(browser: Browser, app: Starlette) -> None:
    await browser.post("/lab", "/lab/attack", attack="all")
    await browser.login("alice")
    page = (await browser.get("/dashboard")).text
    assert 'data-live-source="/dashboard/data"' in page
    assert '<script src="/static/demo.js" defer></script>' in page
    forged = int(re.search(r'data-total="forged">(\d+)<', page).group(1))  # type: ignore[union-attr]
    assert forged == 4
    for chart in ("verdicts", "lockouts", "sessions"):
        assert re.search(rf'data-chart="{chart}"><svg ', page)
    assert re.search(r'id="signed-in">1<', page)


async def test_dashboard_data_is_live(browser: Browser, app: Starlette) -> None:
    first = await browser.get("/dashboard/data")
    assert first.headers["cache-control"] == "no-store"
    fragments = first.json()["fragments"]
    assert sorted(fragments) == ["locked", "lockouts", "sessions", "totals", "updated", "verdicts"]
    assert 'data-total="forged">0<' in fragments["totals"]

    await browser.post("/lab", "/lab/guess")
    later = (await browser.get("/dashboard/data")).json()["fragments"]
    assert f'data-total="forged">{GuardPolicy().threshold}<' in later["totals"]
    assert 'data-total="locked_out">1<' in later["totals"]
    assert 'id="lockouts">1<' in later["totals"]
    assert "198.51.100.23" in later["locked"]
    assert 'data-series="forged"' in later["verdicts"]
    demo = demo_of(app)
    assert demo.stats.totals[Verdict.LOCKED_OUT] == 1
