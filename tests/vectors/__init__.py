"""Known-answer vectors (JSON files here) and the helper that turns them into tests.

Each file holds a list of cases under one key; every case has a ``name``. Files are
written by a ``make_*.py`` script next to them and committed, so a change in output
shows up in review instead of passing silently.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

VECTORS_DIR = Path(__file__).parent


def load_vectors(filename: str) -> Any:
    """Return the parsed JSON of one vector file in this folder."""
    return json.loads((VECTORS_DIR / filename).read_text(encoding="utf-8"))


def json_parametrize(
    filename: str,
    *,
    key: str = "vectors",
    argname: str = "vector",
    id_field: str = "name",
    where: Callable[[Any], bool] | None = None,
) -> pytest.MarkDecorator:
    """Parametrize a test over the cases of a vector file, one test id per case name.

    Args:
        filename: A JSON file in this folder.
        key: The top-level key holding the list of cases.
        argname: The test argument that receives one case.
        id_field: The case field that names the test id.
        where: Keep only the cases for which this returns true.
    """
    cases = [c for c in load_vectors(filename)[key] if where is None or where(c)]
    if not cases:
        raise ValueError(f"{filename}: no cases under {key!r} match")
    ids = [case[id_field] for case in cases]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{filename}: case names under {key!r} must be unique")
    return pytest.mark.parametrize(argname, cases, ids=ids)
