"""Donjon's ASGI middleware over a memory, SQLite or Redis store.

Environment (for ``uvicorn --factory apps.donjon_app:create_app``):
``BENCH_STORE`` memory | sqlite | redis; ``BENCH_SQLITE_PATH``; ``BENCH_REDIS_URL``;
``BENCH_GUARD`` default (GuardPolicy defaults) | high (threshold 10**9: never locks out);
``BENCH_LOG`` on (default) | off (``donjon.security`` at ERROR: no verdict log records).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware

from donjon import KeyRing
from donjon.adapters.starlette import SessionMiddleware, session_of
from donjon.config import CookiePolicy
from donjon.engine import AsyncEngine
from donjon.guard import Guard, GuardPolicy

from ._routes import quiet_donjon_logs, routes

HIGH = 10**9


def make_store(kind: str, *, sqlite_path: str | None = None, redis_url: str | None = None) -> Any:
    if kind == "memory":
        from donjon.stores import MemoryStore

        return MemoryStore(max_sessions=1_000_000)
    if kind == "sqlite":
        from donjon.stores import SQLiteStore

        assert sqlite_path is not None
        return SQLiteStore(sqlite_path)
    if kind == "redis":
        from donjon.stores.redis import AsyncRedisStore

        assert redis_url is not None
        return AsyncRedisStore.from_url(redis_url)
    raise ValueError(f"unknown store {kind!r}")


def make_guard(mode: str) -> Guard | None:
    if mode == "default":
        return Guard()
    if mode == "high":
        return Guard(GuardPolicy(threshold=HIGH, unknown_threshold=HIGH))
    if mode == "off":
        return None
    raise ValueError(f"unknown guard mode {mode!r}")


def build(
    store: Any, *, guard: str = "default", keyring: KeyRing | None = None, log: bool = True
) -> Starlette:
    quiet_donjon_logs()
    if not log:
        logging.getLogger("donjon.security").setLevel(logging.ERROR)
    engine = AsyncEngine(
        keyring=keyring or KeyRing.generate(["user"]),
        store=store,
        cookie=CookiePolicy(secure=False),
        guard=make_guard(guard),
    )
    return Starlette(
        routes=routes(session_of),
        middleware=[Middleware(SessionMiddleware, engine=engine)],
    )


def create_app() -> Starlette:
    store = make_store(
        os.environ.get("BENCH_STORE", "memory"),
        sqlite_path=os.environ.get("BENCH_SQLITE_PATH"),
        redis_url=os.environ.get("BENCH_REDIS_URL"),
    )
    return build(
        store,
        guard=os.environ.get("BENCH_GUARD", "default"),
        log=os.environ.get("BENCH_LOG", "on") != "off",
    )
