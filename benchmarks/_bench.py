"""Shared machinery for the benchmark sections: timing, targets, the report.

A section is a module with a ``TITLE`` and ``run(report, *, quick=False)``; it
measures with :func:`measure_all`, adds tables and targets to the
:class:`Section` that ``report.section(TITLE)`` returns, and prints as it goes.
``benchmarks/run.py`` collects the sections and writes ``REPORT.md``.
"""

from __future__ import annotations

import gc
import itertools
import os
import platform
import shlex
import statistics
import sys
import timeit
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "TIMES",
    "Bench",
    "Report",
    "Section",
    "Target",
    "Timing",
    "machine_info",
    "md_table",
    "measure_all",
]

TIMES = "\N{MULTIPLICATION SIGN}"
"""The sign of ratios in the report (spelt by name: ruff flags the literal)."""
MIN_TIME = 0.2
"""Seconds one measurement (``number`` calls) must last at least."""
REPEATS = 7
"""Measurements per operation; the minimum is the headline, the median is kept."""
QUICK_MIN_TIME = 0.02
QUICK_REPEATS = 3


@dataclass(frozen=True)
class Bench:
    """One operation to time: a timeit statement run in ``namespace``."""

    key: str
    label: str
    stmt: str
    namespace: Mapping[str, Any]
    setup: str = "pass"


@dataclass(frozen=True)
class Timing:
    """The result for one :class:`Bench`, in microseconds per operation."""

    bench: Bench
    number: int
    runs_us: tuple[float, ...]

    @property
    def best(self) -> float:
        return min(self.runs_us)

    @property
    def median(self) -> float:
        return statistics.median(self.runs_us)

    @property
    def spread(self) -> float:
        """Median over best, minus one: how noisy the runs were."""
        return self.median / self.best - 1


def _calibrate(timer: timeit.Timer, min_time: float) -> int:
    # Like Timer.autorange, but to our own minimum duration.
    for i in itertools.count():
        for mult in (1, 2, 5):
            number = mult * 10**i
            if timer.timeit(number) >= min_time:
                return number
    raise AssertionError("unreachable")


def measure_all(
    benches: Sequence[Bench],
    *,
    quick: bool = False,
    progress: Callable[[str], None] | None = print,
) -> dict[str, Timing]:
    """Time every bench; return the timings by key.

    Each bench gets a ``number`` of calls that lasts at least
    :data:`MIN_TIME`; then :data:`REPEATS` rounds time every bench once each,
    round-robin, so that a noisy moment on the machine spreads over all of
    them rather than skewing one ratio. ``timeit`` disables the garbage
    collector while it times.
    """
    min_time = QUICK_MIN_TIME if quick else MIN_TIME
    repeats = QUICK_REPEATS if quick else REPEATS
    timers = {b.key: timeit.Timer(b.stmt, b.setup, globals=dict(b.namespace)) for b in benches}
    numbers: dict[str, int] = {}
    for b in benches:
        timers[b.key].timeit(min(1000, max(1, int(min_time * 1000))))  # warm-up
        numbers[b.key] = _calibrate(timers[b.key], min_time)
    runs: dict[str, list[float]] = {b.key: [] for b in benches}
    for r in range(repeats):
        if progress is not None:
            progress(f"  round {r + 1}/{repeats}")
        for b in benches:
            n = numbers[b.key]
            runs[b.key].append(timers[b.key].timeit(n) / n * 1e6)
        gc.collect()
    return {b.key: Timing(b, numbers[b.key], tuple(runs[b.key])) for b in benches}


@dataclass(frozen=True)
class Target:
    """A checked claim: ``value`` must be at most ``limit``."""

    name: str
    value: float
    limit: float
    detail: str

    @property
    def ok(self) -> bool:
        return self.value <= self.limit

    @property
    def verdict(self) -> str:
        return "PASS" if self.ok else "FAIL"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Return a markdown table; numbers right-aligned."""

    def cell(v: object) -> str:
        return str(v).replace("|", "\\|")

    align = ["---:" if _numeric(rows, i) else "---" for i in range(len(headers))]
    lines = [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _numeric(rows: Sequence[Sequence[object]], i: int) -> bool:
    if not rows:
        return False
    v = str(rows[0][i]).rstrip("x%" + TIMES).replace(",", "")
    try:
        float(v)
    except ValueError:
        return False
    return True


@dataclass
class Section:
    """One ``##`` section of the report."""

    title: str
    parts: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    seconds: float = 0.0

    def text(self, markdown: str) -> None:
        self.parts.append(markdown.strip())

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        self.parts.append(md_table(headers, rows))

    def target(self, name: str, value: float, limit: float, detail: str) -> Target:
        """Check ``value <= limit``, print PASS/FAIL and keep it for the report."""
        t = Target(name, value, limit, detail)
        self.targets.append(t)
        print(f"  {t.verdict}  {name}: {detail}")
        return t

    def targets_table(self) -> None:
        """Append the table of the targets checked so far."""
        rows = [
            (t.name, t.detail, f"**{t.verdict}**" if not t.ok else t.verdict) for t in self.targets
        ]
        self.parts.append(md_table(("target", "measured", "result"), rows))

    def markdown(self) -> str:
        body = "\n\n".join(self.parts)
        return f"## {self.title}\n\n{body}\n"

    @property
    def failed(self) -> list[Target]:
        return [t for t in self.targets if not t.ok]


@dataclass
class Report:
    """The whole ``REPORT.md``: machine info, then one section per module."""

    quick: bool = False
    sections: list[Section] = field(default_factory=list)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    def section(self, title: str) -> Section:
        s = Section(title)
        self.sections.append(s)
        return s

    @property
    def failed(self) -> list[Target]:
        return [t for s in self.sections for t in s.failed]

    def markdown(self) -> str:
        info = machine_info()
        head = [
            "# Donjon benchmark report",
            "",
            "Generated by `benchmarks/run.py`; do not edit by hand (run `make bench`).",
            "",
            md_table(("", ""), [(k, v) for k, v in info.items()]),
            "",
            f"Date: {self.started:%Y-%m-%d %H:%M:%S} UTC  ",
            f"Command: `{_command()}`  ",
            (
                "Method: `timeit` (garbage collector off while timing); each measurement "
                f"runs an operation often enough to last at least {MIN_TIME} s; "
                f"{REPEATS} measurements per operation, taken round-robin across all "
                "operations of a section; the **minimum** is reported (and used for every "
                "ratio), the median alongside it."
            )
            if not self.quick
            else (
                f"Method: **quick run** ({QUICK_REPEATS} measurements of at least "
                f"{QUICK_MIN_TIME} s each): a smoke test, not numbers to quote."
            ),
            "",
        ]
        summary = (
            "**All targets pass.**"
            if not self.failed
            else f"**{len(self.failed)} target(s) FAIL:** " + ", ".join(t.name for t in self.failed)
        )
        head += [summary, ""]
        return "\n".join(head) + "\n" + "\n".join(s.markdown() for s in self.sections)


def _command() -> str:
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return shlex.join(argv)


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("donjon", "itsdangerous", "django"):
        try:
            out.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return ", ".join(out)


def machine_info() -> dict[str, str]:
    """Return what a reader needs to compare these numbers with theirs."""
    import ssl

    return {
        "Python": f"{platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})",
        "Platform": platform.platform(),
        "CPU": _cpu_model(),
        "nproc": str(_nproc()),
        "OpenSSL": ssl.OPENSSL_VERSION,
        "Packages": _versions(),
    }


def section_main(run: Callable[..., Section], argv: list[str] | None = None) -> int:
    """Run one section on its own (``python benchmarks/<name>.py [--quick]``)."""
    args = sys.argv[1:] if argv is None else argv
    report = Report(quick="--quick" in args)
    section = run(report, quick=report.quick)
    print()
    print(section.markdown())
    return 1 if section.failed else 0
