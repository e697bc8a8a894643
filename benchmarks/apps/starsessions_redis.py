"""starsessions with its Redis store (``GET``/``SET`` of one JSON blob per session)."""

from __future__ import annotations

import os

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starsessions import SessionAutoloadMiddleware, SessionMiddleware
from starsessions.stores.redis import RedisStore

from ._routes import routes

LIFETIME = 12 * 3600
"""Seconds, as Donjon's default absolute timeout."""


def build(redis_url: str, *, connection: Redis | None = None) -> Starlette:
    conn = connection if connection is not None else Redis.from_url(redis_url)
    store = RedisStore(connection=conn, prefix="starsessions:")
    return Starlette(
        routes=routes(),
        middleware=[
            Middleware(SessionMiddleware, store=store, lifetime=LIFETIME, cookie_https_only=False),
            Middleware(SessionAutoloadMiddleware),
        ],
    )


def create_app() -> Starlette:
    return build(os.environ["BENCH_REDIS_URL"])
