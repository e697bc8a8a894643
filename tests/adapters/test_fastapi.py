"""FastAPI: the example app through httpx's ASGI transport, and ``SessionDep``."""

from __future__ import annotations

import sys

import httpx
import pytest
from fastapi import Depends, FastAPI

from donjon.adapters import starlette as adapter
from donjon.adapters.starlette import SessionMiddleware, get_session
from donjon.errors import MissingDependency
from donjon.session import Session

from .test_asgi import AppSuite, fresh_engine


class TestFastAPI(AppSuite):
    example = "fastapi_app"

    async def test_login_without_a_form_is_400(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/login", json={"user": "ann"})
        assert response.status_code == 400
        assert response.json() == {"error": "form field 'user' is required"}
        assert response.headers.get_list("set-cookie") == []


async def test_get_session_dependency() -> None:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, engine=fresh_engine())

    @app.get("/")
    async def index(session: Session = Depends(get_session)) -> dict[str, str]:  # noqa: B008
        session["seen"] = True
        return {"verdict": session.verdict.value}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        first = await client.get("/")
        second = await client.get("/")
    assert first.json() == {"verdict": "absent"}
    assert second.json() == {"verdict": "valid"}


def test_session_dep_is_cached() -> None:
    assert adapter.SessionDep is adapter.SessionDep


def test_session_dep_without_fastapi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)
    monkeypatch.setattr(adapter, "_session_dep", None)
    with pytest.raises(MissingDependency, match=r"pip install 'donjon\[fastapi\]'"):
        _ = adapter.SessionDep


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = adapter.nope  # type: ignore[attr-defined]
