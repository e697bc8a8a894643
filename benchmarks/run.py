"""Run the benchmarks and rewrite ``benchmarks/REPORT.md`` (``make bench``).

Usage::

    .venv/bin/python benchmarks/run.py [--only NAME ...] [--quick] [--output PATH]

Each section is a module of this folder listed in :data:`SECTIONS`, with a
``TITLE`` and ``run(report, *, quick=False)`` that measures, checks its
targets and adds its markdown to the report (see ``_bench.py``). To add a
section (stores, adapters, guard...), write ``benchmarks/<name>.py`` and add
``<name>`` to :data:`SECTIONS`.

The exit status is 1 when any target fails, 0 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _bench import Report

HERE = Path(__file__).resolve().parent

SECTIONS: tuple[str, ...] = ("core", "stores", "adapters", "guard", "iron")
"""Section modules, in report order."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        metavar="NAME",
        help=f"run only this section (repeatable); one of: {', '.join(SECTIONS)}",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="short measurements, for checking the benchmarks themselves",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=HERE / "REPORT.md",
        help="where to write the report (default: benchmarks/REPORT.md)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n for n in SECTIONS if not args.only or n in args.only]
    report = Report(quick=args.quick)
    started = time.perf_counter()
    for name in names:
        module = importlib.import_module(name)
        module.run(report, quick=args.quick)
    total = time.perf_counter() - started

    out: Path = args.output
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(report.markdown(), encoding="utf-8")
    os.replace(tmp, out)

    print()
    for section in report.sections:
        for t in section.targets:
            print(f"{t.verdict}  [{section.title}] {t.name}: {t.detail}")
    failed = report.failed
    print()
    print(
        f"{'All targets pass' if not failed else f'{len(failed)} target(s) FAIL'}; "
        f"{total:.1f} s; wrote {out}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
