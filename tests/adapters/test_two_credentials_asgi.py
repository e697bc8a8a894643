"""The two-credential mode through the ASGI middleware (Starlette)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

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


# -- the refresh path never fails once the refresh credential is rotated ---------


async def _raw_get(
    app: Any, path: bytes, query: bytes, cookie: str
) -> tuple[int, dict[bytes, list[bytes]]]:
    """One GET straight through ASGI, with raw (possibly non-ASCII) path and query bytes."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path.decode("utf-8", "replace"), "raw_path": path,
        "query_string": query, "root_path": "", "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234), "headers": [(b"cookie", cookie.encode())],
    }
    await app(scope, receive, send)
    start = sent[0]
    headers: dict[bytes, list[bytes]] = {}
    for key, value in start["headers"]:
        headers.setdefault(key, []).append(value)
    return start["status"], headers


def _jar(client: httpx.AsyncClient) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)


@pytest.mark.parametrize(
    ("query", "status", "location"),
    [
        (b"next=/%C4%80", 303, b"/%C4%80"),
        (b"next=/%FF", 303, b"/%FF"),
        (b"next=/\xc4\x80", 303, b"/%C4%80"),
        (b"next=/caf%C3%A9", 303, b"/caf%C3%A9"),
        (b"next=/ok&" + b"&".join(b"f%d=1" % i for i in range(25)), 303, b"/ok"),
        (b"next=/a%0d%0aSet-Cookie:%20x=1", 204, None),
        (b"next=%zz&%%%=%", 204, None),
    ],
)
async def test_refresh_with_any_next_delivers_the_new_cookies(
    client: httpx.AsyncClient, query: bytes, status: int, location: bytes | None
) -> None:
    await client.post("/login", data={"user": "ivy"})
    app = client._transport.app  # type: ignore[attr-defined]
    got, headers = await _raw_get(app, b"/_donjon/refresh", query, _jar(client))
    assert got == status
    assert headers.get(b"location") == ([location] if location else None)
    cookies = headers[b"set-cookie"]
    assert len(cookies) == 2, "the rotated refresh credential reaches the client"
    # The client keeps its session with the new cookies (the old refresh
    # credential is spent: without them the user would be logged out).
    client.cookies.clear()
    for raw in cookies:
        name, _, rest = raw.decode().partition("=")
        client.cookies.set(name, rest.split(";", 1)[0])
    assert (await client.post("/_donjon/refresh")).status_code == 204
    assert (await client.get("/whoami")).json() == {"user": "ivy", "verdict": "valid"}


@pytest.mark.parametrize(
    ("path", "location"),
    [("/café", "/caf%C3%A9"), ("/中文", "/%E4%B8%AD%E6%96%87"), ("/a%3Fb", "/a%3Fb")],
)
async def test_expired_access_on_a_non_ascii_path_round_trips(
    client: httpx.AsyncClient, clock: FrozenClock, path: str, location: str
) -> None:
    await client.post("/login", data={"user": "ivy"})
    clock.advance(301)
    r = await client.get(path)
    assert r.status_code == 307
    where = r.headers["location"]
    assert where.isascii() and where.startswith("/_donjon/refresh?next=")
    r = await client.get(where)
    assert r.status_code == 303
    assert r.headers["location"] == location
    assert len(r.headers.get_list("set-cookie")) == 2
    assert (await client.get("/whoami")).json() == {"user": "ivy", "verdict": "valid"}


async def test_locked_out_client_on_the_refresh_path_gets_429_and_keeps_its_cookies(
    clock: FrozenClock,
) -> None:
    engine = AsyncEngine(
        keyring=KeyRing.generate(), store=MemoryStore(clock=clock), clock=clock,
        cookie=CookiePolicy(secure=False), timeouts=Timeouts(idle=3600, absolute=8 * 3600),
        two_credentials=TwoCredentials(access_ttl=300),
    )
    transport = httpx.ASGITransport(app=create_app(engine))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as user,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as attacker,
    ):
        await user.post("/login", data={"user": "ivy"})
        # Someone behind the same address (a NAT) sprays forged cookies.
        for _ in range(40):
            r = await attacker.get("/whoami", headers={"cookie": "donjon=v1.user.k1.AAAA.BBBB"})
            if r.status_code == 429:
                break
        assert r.status_code == 429
        r = await user.get("/_donjon/refresh")
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.json() == {"error": "too many requests"}
        assert r.headers.get_list("set-cookie") == [], "no cookie of the user is wiped"
        assert {c.name for c in user.cookies.jar} == {"donjon", "donjon-refresh"}
        clock.advance(61)
        assert (await user.get("/_donjon/refresh")).status_code == 204
        assert (await user.get("/whoami")).json() == {"user": "ivy", "verdict": "valid"}
