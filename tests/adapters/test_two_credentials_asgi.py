"""The two-credential mode through the ASGI middleware (Starlette)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from examples.starlette_app import create_app

from donjon import KeyRing
from donjon.config import CookiePolicy, Timeouts, TwoCredentials
from donjon.engine import AsyncEngine
from donjon.stores import MemoryStore
from donjon.testing import FrozenClock


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_800_000_000.0)


@pytest.fixture
async def client(clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    engine = AsyncEngine(
        keyring=KeyRing.generate(), store=MemoryStore(clock=clock), clock=clock,
        cookie=CookiePolicy(secure=False), timeouts=Timeouts(idle=3600, absolute=8 * 3600),
        two_credentials=TwoCredentials(access_ttl=300), guard=None,
    )
    app = create_app(engine)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as c:
        yield c


async def test_transparent_refresh_on_get(client: httpx.AsyncClient, clock: FrozenClock) -> None:
    r = await client.post("/login", data={"user": "ivy"})
    assert r.status_code == 200
    assert {c.name for c in client.cookies.jar} == {"donjon", "donjon-refresh"}
    assert (await client.get("/count")).json() == {"n": 1}
    clock.advance(301)
    r = await client.get("/count?x=1")
    assert r.status_code == 307
    assert r.headers["location"] == "/_donjon/refresh?next=%2Fcount%3Fx%3D1"
    r = await client.get(r.headers["location"])
    assert r.status_code == 303 and r.headers["location"] == "/count?x=1"
    assert r.headers["cache-control"] == "no-store"
    assert len(r.headers.get_list("set-cookie")) == 2
    r = await client.get(r.headers["location"])
    assert r.json() == {"n": 2}
    assert (await client.get("/whoami")).json() == {"user": "ivy", "verdict": "valid"}


async def test_unsafe_request_gets_401_with_refresh_hint(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    await client.post("/login", data={"user": "ivy"})
    clock.advance(301)
    r = await client.post("/logout")
    assert r.status_code == 401 and r.headers["donjon-refresh"] == "/_donjon/refresh"
    assert (await client.post("/_donjon/refresh")).status_code == 204
    assert (await client.post("/logout")).status_code == 200


async def test_refresh_reuse_kills_the_session(client: httpx.AsyncClient) -> None:
    await client.post("/login", data={"user": "ivy"})
    stolen = client.cookies.get("donjon-refresh")
    assert (await client.post("/_donjon/refresh")).status_code == 204
    thief = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    r = await thief.post("/_donjon/refresh", headers={"cookie": f"donjon-refresh={stolen}"})
    assert r.status_code == 401
    assert (await client.post("/_donjon/refresh")).status_code == 401, "the whole session died"


async def test_refresh_rejects_open_redirects(client: httpx.AsyncClient) -> None:
    await client.post("/login", data={"user": "ivy"})
    for target in ("https://evil.example/", "//evil.example/", "/\t/evil.example"):
        r = await client.get("/_donjon/refresh", params={"next": target})
        assert r.status_code == 204 and "location" not in r.headers


async def test_refresh_without_cookie_is_401(client: httpx.AsyncClient) -> None:
    r = await client.post("/_donjon/refresh")
    assert r.status_code == 401
    assert r.json() == {"error": "login required"}
