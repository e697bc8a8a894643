"""Small server-side charts: stacked bars and lines as inline SVG text.

No dependency and no script: each function returns an ``<svg>`` element
that the page embeds as is (and that the dashboard's poller swaps in).
Every piece of text is escaped; colours use SVG presentation attributes, not
inline styles, so the page's Content-Security-Policy can forbid inline
styles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

__all__ = ["Series", "line_chart", "nice_scale", "stacked_bars"]

_PAD_LEFT: Final = 44
_PAD_RIGHT: Final = 12
_PAD_TOP: Final = 12
_PAD_BOTTOM: Final = 52  # x labels, then one line of legend


@dataclass(frozen=True, slots=True)
class Series:
    """One named series of a chart.

    ``None`` in ``values`` means "no sample here" (a line chart leaves a gap
    before its first sample).
    """

    name: str
    values: Sequence[float | None]
    color: str


def nice_scale(peak: float, *, ticks: int = 4) -> tuple[float, float]:
    """Return ``(top, step)``: a round axis maximum >= ``peak`` and its tick step.

    Steps are 1, 2, 2.5 or 5 times a power of ten, never below 1 (counts are
    whole). Small peaks keep the full ``ticks`` steps of 1, so that one
    request does not look like a flood.
    """
    if not math.isfinite(peak) or peak <= ticks:
        return float(ticks), 1.0
    raw = peak / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    factors = (1.0, 2.0, 2.5, 5.0, 10.0) if power >= 10 else (1.0, 2.0, 5.0, 10.0)
    step = max(1.0, next(m * power for m in factors if m * power >= raw))
    return step * math.ceil(peak / step), step


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _frame(
    *,
    title: str,
    width: int,
    height: int,
    top: float,
    step: float,
    left_label: str,
    right_label: str,
    series: Sequence[Series],
) -> tuple[list[str], float, float]:
    """Return the opening of the SVG (axes, grid, labels, legend) and the plot size."""
    plot_w = width - _PAD_LEFT - _PAD_RIGHT
    plot_h = height - _PAD_TOP - _PAD_BOTTOM
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    n_ticks = round(top / step)
    for i in range(n_ticks + 1):
        value = step * i
        y = _PAD_TOP + plot_h - plot_h * value / top
        out.append(
            f'<line class="grid" x1="{_PAD_LEFT}" x2="{_PAD_LEFT + plot_w}" '
            f'y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e6ea" stroke-width="1"/>'
        )
        out.append(
            f'<text class="tick" x="{_PAD_LEFT - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{_fmt(value)}</text>'
        )
    base = _PAD_TOP + plot_h
    out.append(
        f'<text class="tick" x="{_PAD_LEFT}" y="{base + 16}" '
        f'text-anchor="start">{escape(left_label)}</text>'
    )
    out.append(
        f'<text class="tick" x="{_PAD_LEFT + plot_w}" y="{base + 16}" '
        f'text-anchor="end">{escape(right_label)}</text>'
    )
    x = float(_PAD_LEFT)
    legend_y = height - 10
    for s in series:
        out.append(
            f'<g class="legend" data-series="{escape(s.name)}">'
            f'<rect x="{x:.1f}" y="{legend_y - 9}" width="10" height="10" rx="2" '
            f'fill="{escape(s.color)}"/>'
            f'<text x="{x + 14:.1f}" y="{legend_y}">{escape(s.name)}</text></g>'
        )
        x += 24 + 6.3 * len(s.name)
    return out, plot_w, plot_h


def stacked_bars(
    series: Sequence[Series],
    *,
    title: str,
    width: int = 720,
    height: int = 220,
    left_label: str = "",
    right_label: str = "now",
) -> str:
    """Render series as stacked bars, one bar per index (all series equally long).

    Args:
        series: The series, stacked bottom-up in order; ``None`` counts as 0.
        title: The accessible name of the chart.
        width: Width in pixels.
        height: Height in pixels, legend included.
        left_label: Label under the first bar (e.g. ``"-2 min"``).
        right_label: Label under the last bar.
    """
    n = max((len(s.values) for s in series), default=0)
    totals = [sum((s.values[i] or 0.0) for s in series if i < len(s.values)) for i in range(n)]
    top, step = nice_scale(max(totals, default=0.0))
    out, plot_w, plot_h = _frame(
        title=title,
        width=width,
        height=height,
        top=top,
        step=step,
        left_label=left_label,
        right_label=right_label,
        series=series,
    )
    if n:
        slot = plot_w / n
        bar_w = max(1.0, slot * 0.8)
        base = _PAD_TOP + plot_h
        below = [0.0] * n
        for s in series:
            out.append(f'<g class="bars" data-series="{escape(s.name)}" fill="{escape(s.color)}">')
            for i, v in enumerate(s.values):
                if not v:
                    continue
                y0 = base - plot_h * below[i] / top
                below[i] += v
                h = plot_h * v / top
                x = _PAD_LEFT + slot * i + (slot - bar_w) / 2
                out.append(
                    f'<rect x="{x:.1f}" y="{y0 - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
                    f"<title>{escape(s.name)}: {_fmt(v)}</title></rect>"
                )
            out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    width: int = 720,
    height: int = 220,
    left_label: str = "",
    right_label: str = "now",
) -> str:
    """Render series as lines over equally spaced points; ``None`` leaves a gap.

    Args:
        series: The series to draw.
        title: The accessible name of the chart.
        width: Width in pixels.
        height: Height in pixels, legend included.
        left_label: Label under the first point.
        right_label: Label under the last point.
    """
    n = max((len(s.values) for s in series), default=0)
    peak = max((v for s in series for v in s.values if v is not None), default=0.0)
    top, step = nice_scale(peak)
    out, plot_w, plot_h = _frame(
        title=title,
        width=width,
        height=height,
        top=top,
        step=step,
        left_label=left_label,
        right_label=right_label,
        series=series,
    )
    dx = plot_w / max(1, n - 1)
    base = _PAD_TOP + plot_h
    for s in series:
        runs: list[list[str]] = [[]]
        last: tuple[float, float] | None = None
        for i, v in enumerate(s.values):
            if v is None:
                if runs[-1]:
                    runs.append([])
                continue
            last = (_PAD_LEFT + dx * i, base - plot_h * v / top)
            runs[-1].append(f"{last[0]:.1f},{last[1]:.1f}")
        out.append(f'<g class="line" data-series="{escape(s.name)}">')
        for run in runs:
            if len(run) > 1:
                out.append(
                    f'<polyline points="{" ".join(run)}" fill="none" '
                    f'stroke="{escape(s.color)}" stroke-width="2" stroke-linejoin="round"/>'
                )
        if last is not None:
            # A dot on the newest value, so a flat line still shows where "now" is.
            out.append(
                f'<circle cx="{last[0]:.1f}" cy="{last[1]:.1f}" r="3" fill="{escape(s.color)}"/>'
            )
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)
