"""Litestar: the example app through Litestar's own ``AsyncTestClient``."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.testing import AsyncTestClient

from donjon.adapters.litestar import (
    SessionMiddleware,
    provide_session,
    session_middleware,
    session_of,
)
from donjon.engine import AsyncEngine
from donjon.session import Session

from .test_asgi import NAME, AppSuite, cleared, fresh_engine, issued, set_cookies, with_cookie


class TestLitestar(AppSuite):
    example = "litestar_app"
    base_url = "http://testserver.local"

    def client_for(self, app: Any, *, https: bool = False) -> httpx.AsyncClient:
        base = self.base_url.replace("http://", "https://") if https else self.base_url
        return AsyncTestClient(app=app, base_url=base)


@get("/kinds")
async def kinds(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return {
        "request.session": type(request.session).__name__,
        "same": request.session is session_of(request),
    }


@get("/set")
async def set_some(request: Request[Any, Any, Any]) -> dict[str, Any]:
    session_of(request).update({"a": 1, "b": 2})
    return {}


@get("/data")
async def data(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return dict(request.session)


@post("/replace", status_code=200)
async def replace(request: Request[Any, Any, Any]) -> dict[str, Any]:
    request.set_session({"b": 2, "c": [3]})
    return {}


@post("/clear", status_code=200)
async def clear(request: Request[Any, Any, Any]) -> dict[str, Any]:
    request.clear_session()
    return {}


@post("/bad", status_code=200)
async def bad(request: Request[Any, Any, Any]) -> dict[str, Any]:
    request.set_session(object())
    return {}


@get("/injected")
async def injected(session: NamedDependency[Session]) -> dict[str, str]:
    return {"verdict": session.verdict.value}


def make_app(engine: AsyncEngine | None = None) -> Litestar:
    return Litestar(
        route_handlers=[kinds, set_some, data, replace, clear, bad, injected],
        middleware=[session_middleware(engine=engine or fresh_engine())],
        dependencies={"session": Provide(provide_session)},
    )


async def test_request_session_is_the_donjon_session() -> None:
    async with AsyncTestClient(make_app()) as client:
        response = await client.get("/kinds")
    assert response.json() == {"request.session": Session.__name__, "same": True}


async def test_set_session_replaces_the_data() -> None:
    async with AsyncTestClient(make_app()) as client:
        token = issued(await client.get("/set"))
        response = await client.post("/replace")
        assert set_cookies(response) == []  # same session, same cookie
        assert client.cookies[NAME] == token
        assert (await client.get("/data")).json() == {"b": 2, "c": [3]}


async def test_clear_session_destroys_it() -> None:
    async with AsyncTestClient(make_app()) as client:
        token = issued(await client.get("/set"))
        response = await client.post("/clear")
        assert cleared(response)
        replay = await with_cookie(client, "/injected", f"{NAME}={token}")
        assert replay.json() == {"verdict": "unknown"}


async def test_set_session_with_a_non_mapping_is_a_programmer_error() -> None:
    async with AsyncTestClient(make_app()) as client:
        # Raised as the response starts, so Litestar wraps it; the cause is ours.
        with pytest.raises(Exception) as info:  # noqa: PT011
            await client.post("/bad")
    causes = []
    exc: BaseException | None = info.value
    while exc is not None:
        causes.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(
        isinstance(e, TypeError) and "mapping of JSON values" in str(e) for e in causes
    )


async def test_provide_session_injects_it() -> None:
    async with AsyncTestClient(make_app()) as client:
        assert (await client.get("/injected")).json() == {"verdict": "absent"}
        issued(await client.get("/set"))
        assert (await client.get("/injected")).json() == {"verdict": "valid"}


async def test_session_of_without_the_middleware() -> None:
    app = Litestar(route_handlers=[kinds])
    async with AsyncTestClient(app, raise_server_exceptions=False) as client:
        response = await client.get("/kinds")
    assert response.status_code == 500


def test_middleware_class_with_define_middleware() -> None:
    entry = session_middleware(engine=fresh_engine())
    assert entry.middleware is SessionMiddleware


def test_missing_litestar_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['litestar'] = None\n"
        "from donjon.errors import MissingDependency\n"
        "try:\n"
        "    import donjon.adapters.litestar\n"
        "except MissingDependency as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'donjon[litestar]'" in out.stdout
