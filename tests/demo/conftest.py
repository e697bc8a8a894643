"""Fixtures for the demo's tests: the app in-process, and clients that keep cookies."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from donjon.demo import create_app
from donjon.demo._app import Demo

BASE = "http://testserver"
COOKIE = "donjon"
"""The demo's cookie name over plain HTTP (``cookie_secure=False``)."""

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form in a page."""
    match = _CSRF.search(html)
    assert match, "no CSRF field in the page"
    return match.group(1)


def attr(html: str, selector_attr: str, name: str) -> str:
    """The value of attribute ``name`` on the element carrying ``selector_attr``."""
    match = re.search(rf"<[^>]*{re.escape(selector_attr)}[^>]*>", html)
    assert match, f"no element with {selector_attr}"
    value = re.search(rf'\s{re.escape(name)}="([^"]*)"', match.group(0))
    assert value, f"{selector_attr} has no {name}"
    return value.group(1)


def text_of(html: str, element_id: str) -> str:
    """The text inside the element with ``id`` (tags stripped)."""
    match = re.search(rf'<(\w+)[^>]*\sid="{re.escape(element_id)}"[^>]*>(.*?)</\1>', html, re.S)
    assert match, f"no element #{element_id}"
    return re.sub(r"<[^>]+>", "", match.group(2)).strip()


class Browser:
    """An httpx client with a cookie jar and helpers for the demo's forms."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @property
    def cookie(self) -> str | None:
        """The session cookie the client holds now."""
        return self.client.cookies.get(COOKIE)

    async def get(self, path: str) -> httpx.Response:
        """GET a page."""
        return await self.client.get(path)

    async def post(self, form_page: str, action: str, **fields: str) -> httpx.Response:
        """Load ``form_page`` for its CSRF token, then POST ``fields`` to ``action``."""
        page = await self.client.get(form_page)
        return await self.client.post(action, data={"csrf": csrf_of(page.text), **fields})

    async def login(self, user: str) -> httpx.Response:
        """Log in as a demo user; returns the redirect."""
        response = await self.post("/login", "/login", user=user)
        assert response.status_code == 303, response.text
        return response


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Starlette]:
    """The demo app on a fresh data folder."""
    application = create_app(tmp_path / "data")
    yield application
    await demo_of(application).engine.close()


def demo_of(application: Starlette) -> Demo:
    """The app's :class:`Demo`."""
    demo = application.state.demo
    assert isinstance(demo, Demo)
    return demo


@pytest.fixture
async def browser(app: Starlette) -> AsyncIterator[Browser]:
    """One visitor of the app (client address 127.0.0.1)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield Browser(client)


@pytest.fixture
async def second(app: Starlette) -> AsyncIterator[Browser]:
    """A second visitor, with its own cookie jar."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield Browser(client)
