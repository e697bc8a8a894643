"""Shared set-up of the example apps: one engine from the environment.

With no configuration an example runs on the embedded SQLite store, with
keys generated into a local data folder (``./data`` or ``$DONJON_DATA``).

Environment:
    DONJON_DATA          folder for the SQLite file and the key file (default ./data)
    DONJON_STORE         sqlite (default) | memory | redis | postgres
    DONJON_REDIS_URL     e.g. redis://127.0.0.1:6379/0 (for DONJON_STORE=redis)
    DONJON_POSTGRES_URL  e.g. postgresql://127.0.0.1/donjon (for DONJON_STORE=postgres)
    DONJON_COOKIE_SECURE 1 (default) or 0, for plain-HTTP local testing only
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from donjon import KeyRing
from donjon.config import CookiePolicy
from donjon.engine import AsyncEngine, Engine


def data_dir() -> Path:
    """The folder holding the example's key file and SQLite database."""
    path = Path(os.environ.get("DONJON_DATA", "data")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def keyring() -> KeyRing:
    """Load the key ring from the data folder, generating it on first use."""
    path = data_dir() / "keys.json"
    if not path.exists():
        KeyRing.generate(["user", "admin"]).save(path)
        print(f"donjon example: generated new keys in {path}", file=sys.stderr)
    return KeyRing.from_file(path)


def cookie_policy() -> CookiePolicy:
    """Secure by default; DONJON_COOKIE_SECURE=0 for plain-HTTP tests."""
    secure = os.environ.get("DONJON_COOKIE_SECURE", "1") not in ("0", "false", "no")
    return CookiePolicy(secure=secure)


def _store(*, asynchronous: bool) -> Any:
    kind = os.environ.get("DONJON_STORE", "sqlite").lower()
    if kind == "memory":
        from donjon.stores import MemoryStore

        return MemoryStore()
    if kind == "sqlite":
        from donjon.stores import SQLiteStore

        return SQLiteStore(data_dir() / "sessions.sqlite3")
    if kind == "redis":
        from donjon.stores import redis as r

        url = os.environ.get("DONJON_REDIS_URL", "redis://127.0.0.1:6379/0")
        return r.AsyncRedisStore.from_url(url) if asynchronous else r.RedisStore.from_url(url)
    if kind == "postgres":
        from donjon.stores import postgres as p

        url = os.environ.get("DONJON_POSTGRES_URL", "postgresql://127.0.0.1/donjon")
        return (
            p.AsyncPostgresStore.from_url(url) if asynchronous else p.PostgresStore.from_url(url)
        )
    raise SystemExit(f"DONJON_STORE={kind!r}: use sqlite, memory, redis or postgres")


def async_engine() -> AsyncEngine:
    """The engine for the ASGI examples."""
    return AsyncEngine(keyring=keyring(), store=_store(asynchronous=True), cookie=cookie_policy())


def sync_engine() -> Engine:
    """The engine for the WSGI examples."""
    return Engine(keyring=keyring(), store=_store(asynchronous=False), cookie=cookie_policy())
