"""A dependency-free progress bar for long CLI work (written to stderr)."""

from __future__ import annotations

import sys
from typing import TextIO


class Progress:
    """Draws ``label [#####     ] 5/10`` on a terminal; prints nothing elsewhere."""

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None) -> None:
        self.total = max(1, total)
        self.done = 0
        self.label = label
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()

    def advance(self, step: int = 1) -> None:
        """Record ``step`` more units of work."""
        self.done = min(self.total, self.done + step)
        if self.live:
            width = 30
            filled = width * self.done // self.total
            bar = "#" * filled + " " * (width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total}")
            self.stream.flush()

    def close(self) -> None:
        """Finish the line."""
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
