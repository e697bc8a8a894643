"""Starlette's own ``SessionMiddleware``: the session signed into the cookie (itsdangerous)."""

from __future__ import annotations

import secrets

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware

from ._routes import routes


def build() -> Starlette:
    return Starlette(
        routes=routes(),
        middleware=[
            Middleware(SessionMiddleware, secret_key=secrets.token_hex(32), https_only=False)
        ],
    )


def create_app() -> Starlette:
    return build()
