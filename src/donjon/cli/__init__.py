"""The ``donjon`` command line (keygen, inspect, rotate, kill, sessions, demo, bench)."""

from __future__ import annotations

from .__main__ import build_parser as build_parser
from .__main__ import main as main

__all__ = ["build_parser", "main"]
