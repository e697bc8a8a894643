"""The Session mapping: what it accepts, and that every store can keep it as is."""

from __future__ import annotations

import json
from typing import Any

import pytest

from donjon import KeyRing, Verdict
from donjon.engine import Engine
from donjon.session import Session
from donjon.stores import MemoryStore, SQLiteStore


def _deep(n: int) -> Any:
    v: Any = []
    for _ in range(n):
        v = [v]
    return v


@pytest.mark.parametrize(
    "value",
    [
        {1: "a", "1": "b"},  # would collapse into one key
        {"ok": [{None: 1}]},  # a non-str key, nested
        {"x": {1.5: 2}},
        float("nan"),
        {1, 2},
        object(),
        _deep(100_000),  # RecursionError inside the encoder
        10**5000,  # past the int digit limit
    ],
    ids=[
        "colliding-keys",
        "nested-none-key",
        "float-key",
        "nan",
        "set",
        "object",
        "deep",
        "huge-int",
    ],
)
def test_values_json_cannot_keep_are_refused_with_type_error(value: Any) -> None:
    s = Session()
    with pytest.raises(TypeError, match="session value for 'k'"):
        s["k"] = value
    assert "k" not in s


@pytest.mark.parametrize("key", ["a\x00b", "\ud800"])
def test_keys_no_store_can_keep_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="session keys"):
        Session()[key] = 1


def test_a_container_changed_in_place_is_checked_at_commit() -> None:
    s = Session(data={"l": []}, raw={"l": "[]"}, session_id="x" * 43)
    s["l"].append(float("nan"))
    with pytest.raises(TypeError, match="session value for 'l'"):
        s.changes()
    s["l"][0] = {2: "two"}
    with pytest.raises(TypeError, match="not a str"):
        s.changes()


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
def test_awkward_text_round_trips_through_the_store(tmp_path: Any, store_kind: str) -> None:
    """A lone surrogate (from a client's JSON) and U+0000 are kept, not a crash at commit."""
    store = MemoryStore() if store_kind == "memory" else SQLiteStore(tmp_path / "s.db")
    engine = Engine(keyring=KeyRing.generate(), store=store, guard=None)
    s = engine.load(None)
    values = {
        "surrogate": json.loads('"\\ud800x"'),
        "nul": "a\x00b",
        "text": "żółw 🐢",
        "tuple": (1, 2),
        "big": 1e300,
    }
    for k, v in values.items():
        s[k] = v
    token = engine.commit(s, presented=False).token
    assert token is not None
    back = engine.load(token)
    assert back.verdict is Verdict.VALID
    assert dict(back) == {**values, "tuple": [1, 2]}
    assert isinstance(back["big"], float)
