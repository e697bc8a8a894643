"""Shared fixtures. Real Redis and PostgreSQL servers come from tests/servers/."""

from __future__ import annotations

import os
import tempfile

# Importing an example builds its app, which keeps keys and a SQLite file in
# $DONJON_DATA (./data by default): point it at a throwaway folder so the test
# run never writes into the checkout.
os.environ.setdefault("DONJON_DATA", tempfile.mkdtemp(prefix="donjon-tests-"))

pytest_plugins = [
    "tests.servers.fixtures_redis",
    "tests.servers.fixtures_postgres",
]
