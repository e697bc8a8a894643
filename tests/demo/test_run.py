"""``donjon.demo.run``: what it prints and how it starts uvicorn (uvicorn itself stubbed)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

import donjon.demo
from donjon.demo._app import Demo


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def fake_run(app: Any, **kwargs: Any) -> None:
        calls.append({"app": app, **kwargs})

    monkeypatch.setattr(uvicorn, "run", fake_run)
    handlers = list(logging.getLogger("donjon").handlers)
    level = logging.getLogger("donjon").level
    yield calls
    logging.getLogger("donjon").handlers[:] = handlers
    logging.getLogger("donjon").setLevel(level)


async def _close(call: dict[str, Any]) -> None:
    demo = call["app"].state.demo
    assert isinstance(demo, Demo)
    await demo.engine.close()


async def test_run_prints_where_and_serves_plain_http_cookies(
    served: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    donjon.demo.run(port=8123, data=data)
    [call] = served
    assert call["host"] == "127.0.0.1" and call["port"] == 8123
    assert call["proxy_headers"] is False, "the guard must see real client addresses"
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8123/" in out
    assert str(data.resolve()) in out
    assert f"{data.resolve() / 'keys.json'} (generated now" in out
    assert "cookie:      donjon (not Secure" in out
    assert call["app"].state.demo.engine.cookie.secure is False
    await _close(call)

    donjon.demo.run(port=8123, data=data, cookie_secure=True, host="::1")
    out = capsys.readouterr().out
    assert "http://[::1]:8123/" in out
    assert "(loaded;" in out
    assert "cookie:      __Host-donjon (Secure" in out
    await _close(served[1])


def test_run_signature() -> None:
    import inspect

    sig = inspect.signature(donjon.demo.run)
    assert list(sig.parameters) == ["host", "port", "data", "cookie_secure"]
    assert sig.parameters["host"].default == "127.0.0.1"
    assert sig.parameters["port"].default == 8000
    assert sig.parameters["data"].default == Path("data")
    assert sig.parameters["cookie_secure"].default is None
