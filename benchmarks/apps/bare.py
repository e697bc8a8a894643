"""Bare Starlette: the counter lives in a global (no session layer at all)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request

from ._routes import routes

STATE: dict[str, Any] = {}


def _global(request: Request) -> MutableMapping[str, Any]:
    return STATE


def build() -> Starlette:
    return Starlette(routes=routes(_global))


def create_app() -> Starlette:
    return build()
