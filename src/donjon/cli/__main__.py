"""``python -m donjon.cli`` and the ``donjon`` script (``donjon.cli.__main__:main``)."""

from __future__ import annotations

import sys

from ._main import build_parser as build_parser
from ._main import main as main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
