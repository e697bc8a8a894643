"""Pytest fixtures for the real PostgreSQL server (listed in tests/conftest.py).

- ``postgres_server``: one server for the whole run, started on first use.
- ``postgres_url``: its URL, with the server running again if a previous
  test stopped it.
- ``postgres_prefix``: a table prefix of this test's own; its tables are
  dropped afterwards.
- ``make_postgres_store`` / ``make_async_postgres_store``: factories of
  stores on that prefix (keyword arguments as for the store); every store
  made is closed at the end of the test.
- ``postgres_store`` / ``async_postgres_store``: one such store each.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from donjon.stores.postgres import AsyncPostgresStore, PostgresStore

from .postgres_server import PostgresServer

__all__ = [
    "async_postgres_store",
    "make_async_postgres_store",
    "make_postgres_store",
    "postgres_prefix",
    "postgres_server",
    "postgres_store",
    "postgres_url",
]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Start one real PostgreSQL server for the run; stop it and remove its files at the end."""
    # Under /tmp, not pytest's tmp_path: the postgres user must reach it.
    base = tempfile.mkdtemp(prefix="donjon-pg-")
    server = PostgresServer(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The server's URL; the server runs before and after the test, even if the test stopped it."""
    postgres_server.start()
    yield postgres_server.url
    postgres_server.start()


@pytest.fixture
def postgres_prefix(postgres_url: str) -> Iterator[str]:
    """A fresh table prefix for this test; its tables are dropped afterwards."""
    prefix = f"t{uuid.uuid4().hex[:12]}_"
    yield prefix
    drop_tables(postgres_url, prefix)


def drop_tables(url: str, prefix: str) -> None:
    """Drop every table whose name starts with ``prefix``."""
    with psycopg.connect(url, autocommit=True) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                " AND starts_with(tablename, %s)",
                (prefix,),
            )
        ]
        for name in names:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def make_postgres_store(
    postgres_url: str, postgres_prefix: str
) -> Iterator[Callable[..., PostgresStore]]:
    """Make :class:`PostgresStore` objects on this test's prefix; all are closed afterwards."""
    made: list[PostgresStore] = []

    def make(**kw: Any) -> PostgresStore:
        kw.setdefault("table_prefix", postgres_prefix)
        store = PostgresStore(postgres_url, **kw)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
async def make_async_postgres_store(
    postgres_url: str, postgres_prefix: str
) -> AsyncIterator[Callable[..., AsyncPostgresStore]]:
    """Make :class:`AsyncPostgresStore` objects on this test's prefix; all closed afterwards."""
    made: list[AsyncPostgresStore] = []

    def make(**kw: Any) -> AsyncPostgresStore:
        kw.setdefault("table_prefix", postgres_prefix)
        store = AsyncPostgresStore(postgres_url, **kw)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
def postgres_store(make_postgres_store: Callable[..., PostgresStore]) -> PostgresStore:
    """A :class:`PostgresStore` on fresh tables."""
    return make_postgres_store()


@pytest.fixture
def async_postgres_store(
    make_async_postgres_store: Callable[..., AsyncPostgresStore],
) -> AsyncPostgresStore:
    """An :class:`AsyncPostgresStore` on fresh tables."""
    return make_async_postgres_store()
