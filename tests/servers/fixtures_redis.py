"""Pytest fixtures for the real Redis servers (listed in tests/conftest.py).

- ``redis_server``: one standalone server for the whole run, started on first use.
- ``redis_url``: its URL; the server runs before and after the test (even if
  the test stopped it) and is emptied (FLUSHALL) before the test.
- ``redis_cluster`` / ``redis_cluster_url``: the same for a three-node Redis
  Cluster (every node running, ``cluster_state:ok``, emptied).
- ``redis_prefix``: a key prefix of this test's own.
- ``make_redis_store`` / ``make_async_redis_store``: factories of stores on
  that prefix (``cluster=True`` for the cluster; other keyword arguments as
  for ``from_url``); every store made is closed at the end of the test.
- ``redis_store`` / ``async_redis_store`` / ``redis_cluster_store`` /
  ``async_redis_cluster_store``: one such store each.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from donjon.stores.redis import AsyncRedisStore, RedisStore

from .redis_server import RedisCluster3, RedisServer

__all__ = [
    "async_redis_cluster_store",
    "async_redis_store",
    "make_async_redis_store",
    "make_redis_store",
    "redis_cluster",
    "redis_cluster_store",
    "redis_cluster_url",
    "redis_prefix",
    "redis_server",
    "redis_store",
    "redis_url",
]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Start one real redis-server for the run; stop it at the end."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster3]:
    """Start a real three-node Redis Cluster for the run; stop it at the end."""
    cluster = RedisCluster3(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _ensure_cluster(cluster: RedisCluster3) -> None:
    restarted = False
    for node in cluster.nodes:
        if not node.running:
            node.start()
            restarted = True
    if restarted:
        cluster.wait_ok()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The standalone server's URL: running and empty before the test, running after it."""
    if not redis_server.running:
        redis_server.restart()
    redis_server.command("FLUSHALL")
    yield redis_server.url
    if not redis_server.running:
        redis_server.restart()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster3) -> Iterator[str]:
    """A cluster node's URL: every node running, state ok and empty before the test."""
    _ensure_cluster(redis_cluster)
    redis_cluster.wait_ok()
    for node in redis_cluster.nodes:
        node.command("FLUSHALL")
    yield redis_cluster.url
    _ensure_cluster(redis_cluster)


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own."""
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def make_redis_store(
    request: pytest.FixtureRequest, redis_prefix: str
) -> Iterator[Callable[..., RedisStore]]:
    """Make :class:`RedisStore` objects (``cluster=True``: on the cluster); closed afterwards."""
    made: list[RedisStore] = []

    def make(*, cluster: bool = False, **kw: Any) -> RedisStore:
        url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
        kw.setdefault("prefix", redis_prefix)
        store = RedisStore.from_url(url, cluster=cluster, **kw)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
async def make_async_redis_store(
    request: pytest.FixtureRequest, redis_prefix: str
) -> AsyncIterator[Callable[..., AsyncRedisStore]]:
    """Make :class:`AsyncRedisStore` objects (``cluster=True``: on the cluster); closed after."""
    made: list[AsyncRedisStore] = []

    def make(*, cluster: bool = False, **kw: Any) -> AsyncRedisStore:
        url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
        kw.setdefault("prefix", redis_prefix)
        store = AsyncRedisStore.from_url(url, cluster=cluster, **kw)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
def redis_store(redis_url: str, make_redis_store: Callable[..., RedisStore]) -> RedisStore:
    """A :class:`RedisStore` on the standalone server, with a fresh prefix."""
    return make_redis_store()


@pytest.fixture
def async_redis_store(
    redis_url: str, make_async_redis_store: Callable[..., AsyncRedisStore]
) -> AsyncRedisStore:
    """An :class:`AsyncRedisStore` on the standalone server, with a fresh prefix."""
    return make_async_redis_store()


@pytest.fixture
def redis_cluster_store(
    redis_cluster_url: str, make_redis_store: Callable[..., RedisStore]
) -> RedisStore:
    """A :class:`RedisStore` on the three-node cluster, with a fresh prefix."""
    return make_redis_store(cluster=True)


@pytest.fixture
def async_redis_cluster_store(
    redis_cluster_url: str, make_async_redis_store: Callable[..., AsyncRedisStore]
) -> AsyncRedisStore:
    """An :class:`AsyncRedisStore` on the three-node cluster, with a fresh prefix."""
    return make_async_redis_store(cluster=True)
