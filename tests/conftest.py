"""Shared fixtures. Real Redis and PostgreSQL servers come from tests/servers/."""

from __future__ import annotations

pytest_plugins = [
    "tests.servers.fixtures_redis",
    "tests.servers.fixtures_postgres",
]
