"""PostgresStore and AsyncPostgresStore against a real PostgreSQL server.

The server comes from tests/servers/fixtures_postgres.py; every test works on
tables of its own (a fresh table prefix). The behaviour tests are written
once, async, and run against both stores: the sync one through worker threads.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from donjon import ConfigurationError, StoreUnavailable
from donjon.errors import MissingDependency
from donjon.stores import Record, SupportsPurge, Write
from donjon.stores import postgres as pg_module
from donjon.stores.postgres import AsyncPostgresStore, PostgresStore
from donjon.testing import FrozenClock, check_async_store, check_store
from tests.servers.postgres_server import PostgresServer

pytestmark = pytest.mark.postgres

T0 = 1_800_000_000.0
FAST = 5.0
"""Seconds within which a dead server must be reported."""


def _key(label: str) -> str:
    return hashlib.sha256(f"pg-test/{label}".encode()).hexdigest()


def _write(key: str, **kw: Any) -> Write:
    base: dict[str, Any] = {
        "key": key,
        "fields": {"a": "1"},
        "session_class": "user",
        "user_id": None,
        "created_at": T0,
        "last_seen": T0,
        "expires_at": T0 + 600,
        "create": True,
    }
    base.update(kw)
    return Write(**base)


def _rows(url: str, query: str, *params: object, prefix: str = "") -> list[tuple[Any, ...]]:
    """Run ``query``; ``{sessions}`` and ``{schema}`` name the tables of ``prefix``."""
    statement = sql.SQL(query).format(
        sessions=sql.Identifier(f"{prefix}sessions"), schema=sql.Identifier(f"{prefix}schema")
    )
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()


def _exec(url: str, query: str, *, prefix: str) -> None:
    statement = sql.SQL(query).format(
        sessions=sql.Identifier(f"{prefix}sessions"), schema=sql.Identifier(f"{prefix}schema")
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def _tables(url: str, prefix: str) -> set[str]:
    rows = _rows(
        url,
        "SELECT tablename FROM pg_tables WHERE starts_with(tablename, %s)",
        prefix,
    )
    return {r[0] for r in rows}


def _version(url: str, prefix: str) -> int:
    rows = _rows(url, "SELECT version FROM {schema}", prefix=prefix)
    return int(rows[0][0])


class _Threaded:
    """The sync store behind awaitable methods, each call in a worker thread."""

    def __init__(self, store: PostgresStore) -> None:
        self.sync = store

    def __getattr__(self, name: str) -> Callable[..., Any]:
        fn = getattr(self.sync, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(fn, *args, **kwargs)

        return call


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture(params=["sync", "async"])
async def store(
    request: pytest.FixtureRequest,
    clock: FrozenClock,
    make_postgres_store: Callable[..., PostgresStore],
    make_async_postgres_store: Callable[..., AsyncPostgresStore],
) -> AsyncIterator[Any]:
    """Both stores, on a frozen clock, behind one awaitable interface."""
    if request.param == "sync":
        yield _Threaded(make_postgres_store(clock=clock))
    else:
        yield make_async_postgres_store(clock=clock)


# -- the shared contract suite ------------------------------------------------------
def test_contract_sync(postgres_url: str, postgres_prefix: str) -> None:
    check_store(lambda: PostgresStore(postgres_url, table_prefix=postgres_prefix))


async def test_contract_async(postgres_url: str, postgres_prefix: str) -> None:
    async def make() -> AsyncPostgresStore:
        return AsyncPostgresStore(postgres_url, table_prefix=postgres_prefix)

    await check_async_store(make)


def test_sync_store_supports_purge(postgres_store: PostgresStore) -> None:
    assert isinstance(postgres_store, SupportsPurge)
    assert postgres_store.blocking is True


# -- every method, both stores -------------------------------------------------------
TRICKY = {
    "n": "1",
    "f": "0.1",
    "neg": "-2.5e-07",
    "big": "123456789012345678901234567890",
    "t": "true",
    "null": "null",
    "s": '"quote \\" backslash \\\\ tab \\t newline \\n"',
    "unicode ключ ✓": '"värde 🌳"',
    "nested": '{"z":1,"a":[1,2,{"b":null}],"bb":{}}',
    "": '"empty name"',
    "__proto__": "[]",
    "with'quote": "{}",
}


async def test_round_trip_keeps_every_value(store: Any) -> None:
    k = _key("round-trip")
    assert await store.load(k) is None
    assert await store.write(_write(k, fields=TRICKY, user_id="ann")) is True
    rec = await store.load(k)
    assert isinstance(rec, Record)
    assert set(rec.fields) == set(TRICKY)
    for name, text in TRICKY.items():
        assert json.loads(rec.fields[name]) == json.loads(text), name
        # The engine spots unchanged values by comparing with this compact form.
        value = json.loads(rec.fields[name])
        assert rec.fields[name] == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert rec.session_class == "user"
    assert rec.user_id == "ann"
    assert (rec.created_at, rec.last_seen, rec.expires_at) == (T0, T0, T0 + 600)


async def test_create_replaces_only_an_expired_record(store: Any, clock: Any) -> None:
    k = _key("replace")
    await store.write(_write(k, fields={"a": "1", "b": "2"}, user_id="u1", expires_at=T0 + 30))
    again = _write(
        k, fields={"c": "3"}, user_id=None, session_class="admin", created_at=T0 + 1,
        last_seen=T0 + 1, expires_at=T0 + 60,
    )  # fmt: skip
    assert await store.write(again) is False, "a create never overwrites a live record"
    rec = await store.load(k)
    assert rec is not None
    assert dict(rec.fields) == {"a": "1", "b": "2"}
    clock.advance(31)
    assert await store.write(again) is True, "an expired row is replaced"
    rec = await store.load(k)
    assert rec is not None
    assert dict(rec.fields) == {"c": "3"}
    assert (rec.session_class, rec.user_id, rec.created_at) == ("admin", None, T0 + 1)
    assert rec.expires_at == T0 + 60


async def test_update_merges_fields_and_removes_deleted_ones(store: Any) -> None:
    k = _key("update")
    await store.write(_write(k, fields={"a": "1", "b": "2", "c": "3"}, last_seen=T0 + 5))
    ok = await store.write(
        _write(
            k, fields={"b": "20", "d": '"new"'}, deleted=frozenset({"c", "absent"}),
            user_id="bob", session_class="admin", created_at=T0 + 99, last_seen=T0 + 1,
            expires_at=T0 + 900, create=False,
        )
    )  # fmt: skip
    assert ok is True
    rec = await store.load(k)
    assert rec is not None
    assert dict(rec.fields) == {"a": "1", "b": "20", "d": '"new"'}
    assert (rec.user_id, rec.session_class) == ("bob", "admin")
    assert rec.created_at == T0, "an update keeps the creation time"
    assert rec.last_seen == T0 + 5, "last_seen never moves back"
    assert rec.expires_at == T0 + 900
    # An update with nothing changed is still a live-record check.
    assert await store.write(_write(k, fields={}, create=False)) is True


async def test_update_never_resurrects_a_deleted_record(store: Any) -> None:
    k = _key("deleted")
    await store.write(_write(k))
    await store.delete(k)
    assert await store.load(k) is None
    assert await store.write(_write(k, fields={"b": "2"}, create=False)) is False
    assert await store.load(k) is None
    await store.delete(k)  # deleting twice is fine
    assert await store.write(_write(_key("never"), create=False)) is False
    assert await store.load(_key("never")) is None


async def test_update_never_resurrects_an_expired_record(
    store: Any, clock: FrozenClock, postgres_url: str, postgres_prefix: str
) -> None:
    k = _key("expired")
    await store.write(_write(k, fields={"a": "1"}, expires_at=T0 + 10))
    clock.advance(10)  # expires_at <= now: expired
    assert await store.load(k) is None
    assert await store.write(_write(k, fields={"b": "2"}, expires_at=T0 + 999, create=False)) is (
        False
    )
    rows = _rows(
        postgres_url, "SELECT data::text, expires_at FROM {sessions}", prefix=postgres_prefix
    )
    assert rows == [('{"a": "1"}', T0 + 10)], "the expired row is left exactly as it was"
    clock.set(T0)
    assert await store.load(k) is not None, "expiry is the injected clock's, not the server's"


async def test_touch(store: Any, clock: FrozenClock) -> None:
    k = _key("touch")
    await store.write(_write(k, last_seen=T0 - 50, expires_at=T0 + 10))
    await store.touch(k, last_seen=T0, expires_at=T0 + 900)
    rec = await store.load(k)
    assert rec is not None
    assert (rec.last_seen, rec.expires_at) == (T0, T0 + 900)
    await store.touch(k, last_seen=T0 - 100, expires_at=T0 + 800)
    rec = await store.load(k)
    assert rec is not None
    assert (rec.last_seen, rec.expires_at) == (T0, T0 + 800)
    await store.touch(_key("touch-missing"), last_seen=T0, expires_at=T0 + 900)
    assert await store.load(_key("touch-missing")) is None, "touch creates nothing"
    clock.advance(800)
    await store.touch(k, last_seen=T0 + 800, expires_at=T0 + 2000)
    assert await store.load(k) is None, "touch does not revive an expired record"


async def test_sessions_of_and_revoke_user(store: Any, clock: FrozenClock) -> None:
    a1, a2, a3, old, b1 = (_key(n) for n in ("a1", "a2", "a3", "old", "b1"))
    await store.write(_write(a2, user_id="alice", created_at=T0 + 2, session_class="admin"))
    await store.write(_write(a1, user_id="alice", created_at=T0 + 1))
    await store.write(_write(old, user_id="alice", expires_at=T0 + 1))
    await store.write(_write(b1, user_id="bob"))
    await store.write(_write(a3, created_at=T0 + 3))
    await store.write(_write(a3, fields={}, user_id="alice", create=False))  # login later
    clock.advance(1)
    listed = await store.sessions_of("alice")
    assert [i.key for i in listed] == [a1, a2, a3], "live sessions, oldest first"
    assert [i.session_class for i in listed] == ["user", "admin", "user"]
    assert all(i.user_id == "alice" and i.expires_at > clock.time() for i in listed)
    assert await store.sessions_of("nobody") == []
    assert await store.revoke_user("alice") == 3, "only live sessions are counted"
    assert await store.sessions_of("alice") == []
    for k in (a1, a2, a3):
        assert await store.load(k) is None
    clock.set(T0)
    assert await store.load(old) is None, "revoke_user also removed the expired record"
    assert await store.load(b1) is not None
    assert await store.revoke_user("alice") == 0


async def test_epochs_only_move_forward(store: Any) -> None:
    assert await store.epochs() == {}
    assert await store.raise_epoch("admin", 100.0) == 100.0
    assert await store.raise_epoch("admin", 50.0) == 100.0
    assert await store.raise_epoch("user", 7) == 7.0
    assert await store.raise_epoch("admin", 100.25) == 100.25
    assert await store.epochs() == {"admin": 100.25, "user": 7.0}
    # Concurrent raises keep the greatest.
    results = await asyncio.gather(*(store.raise_epoch("race", float(i)) for i in range(20)))
    assert max(results) == 19.0
    assert (await store.epochs())["race"] == 19.0


async def test_purge_expired(
    store: Any, clock: FrozenClock, postgres_url: str, postgres_prefix: str
) -> None:
    for i in range(5):
        await store.write(_write(_key(f"p{i}"), expires_at=T0 + i))
    await store.write(_write(_key("live"), expires_at=T0 + 100))
    assert await store.purge_expired() == 1  # expires_at == now counts as expired
    clock.advance(3)
    assert await store.purge_expired() == 3
    assert await store.purge_expired(T0 + 100) == 2
    assert await store.purge_expired() == 0
    rows = _rows(postgres_url, "SELECT count(*) FROM {sessions}", prefix=postgres_prefix)
    assert rows == [(0,)]


async def test_records_are_keyed_by_the_given_key_only(
    store: Any, postgres_url: str, postgres_prefix: str
) -> None:
    k = _key("private")
    await store.write(_write(k, fields={"x": "1"}, user_id="carol"))
    rows = _rows(postgres_url, "SELECT key FROM {sessions}", prefix=postgres_prefix)
    assert rows == [(k,)]


def test_a_dump_holds_no_session_id_or_cookie(
    postgres_store: PostgresStore, postgres_url: str, postgres_prefix: str
) -> None:
    from donjon import KeyRing
    from donjon.core._ids import record_key
    from donjon.engine import Engine

    engine = Engine(keyring=KeyRing.generate(), store=postgres_store)
    s = engine.load(None)
    s["cart"] = {"b": 2, "a": [1, 2]}
    s.login("erin")
    token = engine.commit(s, presented=False).token
    assert token is not None
    assert s.id is not None
    dump = "\n".join(
        str(r)
        for r in _rows(postgres_url, "SELECT t::text FROM {sessions} t", prefix=postgres_prefix)
    )
    assert s.id not in dump
    assert token not in dump
    assert record_key(s.id) in dump, "the record is keyed by the id's hash"
    # The engine reads it back through the store, nested values intact.
    again = engine.load(token)
    assert again.verdict == "valid"
    assert again["cart"] == {"b": 2, "a": [1, 2]}
    again["cart"]["c"] = 3  # changed in place: noticed at commit
    engine.commit(again, presented=True)
    assert engine.load(token)["cart"] == {"b": 2, "a": [1, 2], "c": 3}


# -- concurrent writers of one session ---------------------------------------------
def test_threads_writing_different_keys_all_persist(
    make_postgres_store: Callable[..., PostgresStore],
) -> None:
    one, two = make_postgres_store(), make_postgres_store()  # two pools, like two processes
    k = _key("threads")
    one.write(_write(k, fields={"base": "0"}, expires_at=time.time() + 600))
    threads, rounds = 8, 30
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        store = one if i % 2 else two
        try:
            barrier.wait()
            for r in range(rounds):
                w = _write(k, fields={f"t{i}": str(r)}, expires_at=time.time() + 600, create=False)
                assert store.write(w) is True
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert not errors, errors[:3]
    rec = one.load(k)
    assert rec is not None
    assert {n: json.loads(v) for n, v in rec.fields.items()} == {
        "base": 0,
        **{f"t{i}": rounds - 1 for i in range(threads)},
    }


async def test_tasks_writing_different_keys_all_persist(
    make_async_postgres_store: Callable[..., AsyncPostgresStore],
) -> None:
    store = make_async_postgres_store(max_size=8)
    k = _key("tasks")
    await store.write(_write(k, fields={}, expires_at=time.time() + 600))
    tasks, rounds = 8, 30

    async def run(i: int) -> None:
        for r in range(rounds):
            w = _write(k, fields={f"w{i}": str(r)}, expires_at=time.time() + 600, create=False)
            assert await store.write(w) is True

    await asyncio.gather(*(run(i) for i in range(tasks)))
    rec = await store.load(k)
    assert rec is not None
    assert {n: json.loads(v) for n, v in rec.fields.items()} == {
        f"w{i}": rounds - 1 for i in range(tasks)
    }


# -- schema ----------------------------------------------------------------------------
def test_schema_is_created_on_first_use(
    make_postgres_store: Callable[..., PostgresStore], postgres_url: str, postgres_prefix: str
) -> None:
    store = make_postgres_store()
    assert _tables(postgres_url, postgres_prefix) == set(), "construction touches nothing"
    assert store.epochs() == {}
    assert _tables(postgres_url, postgres_prefix) == {
        f"{postgres_prefix}schema",
        f"{postgres_prefix}sessions",
        f"{postgres_prefix}epochs",
    }
    assert _version(postgres_url, postgres_prefix) == len(pg_module.MIGRATIONS)
    indexes = _rows(
        postgres_url,
        "SELECT indexdef FROM pg_indexes WHERE tablename = %s",
        f"{postgres_prefix}sessions",
    )
    defs = " | ".join(r[0] for r in indexes)
    assert "(user_id)" in defs
    assert "(expires_at)" in defs
    columns = dict(
        _rows(
            postgres_url,
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s",
            f"{postgres_prefix}sessions",
        )
    )
    assert columns == {
        "key": "text",
        "session_class": "text",
        "user_id": "text",
        "created_at": "double precision",
        "last_seen": "double precision",
        "expires_at": "double precision",
        "data": "jsonb",
    }


def test_schema_migrates_from_version_0(
    make_postgres_store: Callable[..., PostgresStore], postgres_url: str, postgres_prefix: str
) -> None:
    # Version 0: the bookkeeping table exists, nothing else was applied yet.
    _exec(
        postgres_url,
        "CREATE TABLE {schema} (id integer PRIMARY KEY CHECK (id = 1), version integer NOT NULL)",
        prefix=postgres_prefix,
    )
    _rows(postgres_url, "INSERT INTO {schema} VALUES (1, 0) RETURNING 1", prefix=postgres_prefix)
    store = make_postgres_store()
    assert store.write(_write(_key("m0"), expires_at=time.time() + 60))
    assert _version(postgres_url, postgres_prefix) == len(pg_module.MIGRATIONS) == 2
    assert f"{postgres_prefix}sessions" in _tables(postgres_url, postgres_prefix)


def test_migration_applies_only_the_new_steps(
    make_postgres_store: Callable[..., PostgresStore],
    postgres_url: str,
    postgres_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = make_postgres_store()
    k = _key("kept")
    old.write(_write(k, expires_at=time.time() + 60))
    assert _version(postgres_url, postgres_prefix) == 2
    new_step = ("ALTER TABLE {sessions} ADD COLUMN note text DEFAULT 'v2'",)
    monkeypatch.setattr(pg_module, "MIGRATIONS", (*pg_module.MIGRATIONS, new_step))
    new = make_postgres_store()
    assert new.load(k) is not None, "data survives the migration"
    assert _version(postgres_url, postgres_prefix) == 3
    assert _rows(postgres_url, "SELECT note FROM {sessions}", prefix=postgres_prefix) == [("v2",)]
    # A process still on version 2 keeps working against the newer schema.
    assert old.write(_write(_key("old-writer"), expires_at=time.time() + 60))
    assert old.load(k) is not None


def test_a_newer_schema_is_used_with_a_warning(
    make_postgres_store: Callable[..., PostgresStore],
    postgres_url: str,
    postgres_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_postgres_store().epochs()
    _rows(postgres_url, "UPDATE {schema} SET version = 99 RETURNING 1", prefix=postgres_prefix)
    with caplog.at_level(logging.WARNING, logger="donjon.store"):
        assert make_postgres_store().epochs() == {}
    assert "newer" in caplog.text
    assert _version(postgres_url, postgres_prefix) == 99


def test_stores_starting_at_once_do_not_race(
    make_postgres_store: Callable[..., PostgresStore], postgres_url: str, postgres_prefix: str
) -> None:
    n = 8
    stores = [make_postgres_store() for _ in range(n)]
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def start(i: int) -> None:
        try:
            barrier.wait()
            stores[i].raise_epoch("user", float(i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:3]
    assert _version(postgres_url, postgres_prefix) == len(pg_module.MIGRATIONS)
    assert _rows(postgres_url, "SELECT count(*) FROM {schema}", prefix=postgres_prefix) == [(1,)]
    assert stores[0].epochs() == {"user": float(n - 1)}


async def test_async_stores_starting_at_once_do_not_race(
    make_async_postgres_store: Callable[..., AsyncPostgresStore],
    postgres_url: str,
    postgres_prefix: str,
) -> None:
    stores = [make_async_postgres_store() for _ in range(4)]
    await asyncio.gather(*(s.raise_epoch("user", float(i)) for i, s in enumerate(stores)))
    assert _version(postgres_url, postgres_prefix) == len(pg_module.MIGRATIONS)
    assert await stores[0].epochs() == {"user": 3.0}


def test_dropped_tables_are_created_again(
    postgres_store: PostgresStore, postgres_url: str, postgres_prefix: str
) -> None:
    from tests.servers.fixtures_postgres import drop_tables

    postgres_store.raise_epoch("user", 1.0)
    drop_tables(postgres_url, postgres_prefix)
    with pytest.raises(StoreUnavailable):
        postgres_store.epochs()
    assert postgres_store.epochs() == {}


def test_table_prefixes_keep_stores_apart(
    make_postgres_store: Callable[..., PostgresStore], postgres_url: str
) -> None:
    from tests.servers.fixtures_postgres import drop_tables

    other_prefix = "other_" + hashlib.sha256(str(time.time()).encode()).hexdigest()[:8] + "_"
    mine, other = make_postgres_store(), make_postgres_store(table_prefix=other_prefix)
    try:
        mine.raise_epoch("user", 5.0)
        assert other.epochs() == {}
    finally:
        other.close()
        drop_tables(postgres_url, other_prefix)


# -- configuration ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "prefix", ["", "Donjon_", "9x", "x-y", 'x"; DROP TABLE t; --', "a" * 41, "é_"]
)
def test_bad_table_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="table_prefix"):
        PostgresStore("postgresql://127.0.0.1/x", table_prefix=prefix)


def test_constructor_checks(postgres_url: str) -> None:
    with pytest.raises(ConfigurationError, match="exactly one"):
        PostgresStore()
    with pytest.raises(ConfigurationError, match="exactly one"):
        AsyncPostgresStore()
    pool: ConnectionPool[Any] = ConnectionPool(postgres_url, open=False)
    with pytest.raises(ConfigurationError, match="exactly one"):
        PostgresStore(postgres_url, pool=pool)
    with pytest.raises(ConfigurationError, match="postgresql://"):
        PostgresStore.from_url("mysql://127.0.0.1/x")
    with pytest.raises(ConfigurationError, match="postgresql://"):
        AsyncPostgresStore.from_url("host=127.0.0.1")
    with pytest.raises(ConfigurationError, match="pool_timeout"):
        PostgresStore(postgres_url, pool_timeout=0)
    with pytest.raises(ConfigurationError, match="statement_timeout"):
        PostgresStore(postgres_url, statement_timeout=float("nan"))
    with pytest.raises(ConfigurationError, match="min_size"):
        PostgresStore(postgres_url, min_size=5, max_size=2)
    with pytest.raises(ConfigurationError, match="connection string"):
        PostgresStore("host=127.0.0.1 nonsense")


async def test_from_url_and_repr(postgres_url: str, postgres_prefix: str) -> None:
    sync = PostgresStore.from_url(postgres_url, table_prefix=postgres_prefix)
    aio = AsyncPostgresStore.from_url(postgres_url, table_prefix=postgres_prefix)
    try:
        assert sync.raise_epoch("user", 3.0) == 3.0
        assert await aio.epochs() == {"user": 3.0}, "sync and async stores share one layout"
    finally:
        sync.close()
        await aio.close()
    secret = PostgresStore("postgresql://app:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in repr(secret)
    assert repr(secret) == "PostgresStore(127.0.0.1:1/db, table_prefix='donjon_')"
    secret.close()


def test_a_pool_passed_in_is_used_and_left_open(postgres_url: str, postgres_prefix: str) -> None:
    with ConnectionPool(postgres_url, min_size=1, open=True) as pool:
        store = PostgresStore(pool=pool, table_prefix=postgres_prefix)
        assert store.raise_epoch("user", 2.0) == 2.0
        k = _key("own-pool")
        assert store.write(_write(k, expires_at=time.time() + 60))
        assert store.load(k) is not None
        store.close()
        assert not pool.closed, "the application's pool stays the application's"
        with pytest.raises(StoreUnavailable, match="closed"):
            store.load(k)
        assert "pool 'pool-" in repr(store)


async def test_closed_stores_refuse_work(
    postgres_store: PostgresStore, async_postgres_store: AsyncPostgresStore
) -> None:
    postgres_store.close()
    postgres_store.close()  # twice is fine
    with pytest.raises(StoreUnavailable):
        postgres_store.load(_key("x"))
    await async_postgres_store.close()
    with pytest.raises(StoreUnavailable):
        await async_postgres_store.load(_key("x"))


def test_missing_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    pg_module._psycopg.cache_clear()
    monkeypatch.setitem(sys.modules, "psycopg", None)
    try:
        with pytest.raises(MissingDependency, match=r"donjon\[postgres\]") as info:
            PostgresStore("postgresql://127.0.0.1/x")
        assert isinstance(info.value, ImportError)
        assert info.value.extra == "postgres"
    finally:
        monkeypatch.undo()
        pg_module._psycopg.cache_clear()


async def test_values_come_back_byte_for_byte(store: Any) -> None:
    """jsonb would normalise parsed numbers and reorder keys, and refuse U+0000:
    each value is kept as its JSON text."""
    k = _key("exact")
    fields = {
        "f": "1e+300",
        "g": "1.5e16",
        "d": '{"bb":1,"a":2}',
        "s": '"a\\u0000b"',
        "u": '"\\ud800 \u017c\u00f3\u0142w"',
    }
    assert await store.write(_write(k, fields=fields)) is True
    rec = await store.load(k)
    assert rec is not None
    assert dict(rec.fields) == fields


async def test_values_that_are_not_json_are_refused_clearly(store: Any) -> None:
    k = _key("nul")
    with pytest.raises(ValueError, match="NaN"):
        await store.write(_write(k, fields={"f": "NaN"}))
    with pytest.raises(ValueError, match="'f' is not JSON"):
        await store.write(_write(k, fields={"f": '1, "injected": 2'}))
    assert await store.load(k) is None
    assert await store.write(_write(k, fields={"ok": "1"})) is True, "the store still works"


def test_statement_timeout_fails_closed(
    make_postgres_store: Callable[..., PostgresStore], postgres_url: str, postgres_prefix: str
) -> None:
    store = make_postgres_store(statement_timeout=0.3)
    k = _key("locked")
    store.write(_write(k, expires_at=time.time() + 60))
    with psycopg.connect(postgres_url) as blocker:
        blocker.execute(
            sql.SQL("SELECT 1 FROM {} WHERE key = %s FOR UPDATE").format(
                sql.Identifier(f"{postgres_prefix}sessions")
            ),
            (k,),
        )
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="statement timeout"):
            store.write(_write(k, fields={"b": "2"}, expires_at=time.time() + 60, create=False))
        assert time.monotonic() - started < 2
        blocker.rollback()
    rec = store.load(k)
    assert rec is not None
    assert dict(rec.fields) == {"a": "1"}, "the timed-out write left nothing"


# -- a real outage -------------------------------------------------------------------------
def _fails_fast(fn: Callable[[], object]) -> float:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        fn()
    elapsed = time.monotonic() - started
    assert elapsed < FAST, f"took {elapsed:.1f}s to report the dead server"
    return elapsed


def _until_up(fn: Callable[[], object], within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        try:
            return fn()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.slow
def test_server_stopped_fails_fast_then_recovers(
    postgres_server: PostgresServer, make_postgres_store: Callable[..., PostgresStore]
) -> None:
    store = make_postgres_store()
    k = _key("outage")
    exp = time.time() + 600
    assert store.write(_write(k, fields={"a": "1"}, expires_at=exp))
    postgres_server.stop()
    _fails_fast(lambda: store.load(k))
    _fails_fast(lambda: store.write(_write(k, fields={"a": "2", "b": "2"}, expires_at=exp)))
    _fails_fast(lambda: store.write(_write(k, fields={"c": "3"}, expires_at=exp, create=False)))
    _fails_fast(lambda: store.raise_epoch("user", 1.0))
    postgres_server.start()
    started = time.monotonic()
    rec = _until_up(lambda: store.load(k))
    assert time.monotonic() - started < FAST, "the same store object recovers quickly"
    assert rec is not None
    assert dict(rec.fields) == {"a": "1"}, "nothing of the failed writes"
    assert store.write(_write(k, fields={"c": "3"}, expires_at=exp, create=False))
    assert store.raise_epoch("user", 1.0) == 1.0


@pytest.mark.slow
async def test_async_server_stopped_fails_fast_then_recovers(
    postgres_server: PostgresServer,
    make_async_postgres_store: Callable[..., AsyncPostgresStore],
) -> None:
    store = make_async_postgres_store()
    k = _key("async-outage")
    exp = time.time() + 600
    assert await store.write(_write(k, fields={"a": "1"}, expires_at=exp))
    await asyncio.to_thread(postgres_server.stop)
    for call in (
        lambda: store.load(k),
        lambda: store.write(_write(k, fields={"b": "2"}, expires_at=exp, create=False)),
        lambda: store.epochs(),
    ):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await call()
        assert time.monotonic() - started < FAST
    await asyncio.to_thread(postgres_server.start)
    deadline = time.monotonic() + 10
    while True:
        try:
            rec = await store.load(k)
            break
        except StoreUnavailable:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    assert rec is not None
    assert dict(rec.fields) == {"a": "1"}
    assert await store.write(_write(k, fields={"b": "2"}, expires_at=exp, create=False))


@pytest.mark.slow
def test_server_dying_mid_writes_leaves_no_half_written_record(
    postgres_server: PostgresServer, make_postgres_store: Callable[..., PostgresStore]
) -> None:
    store = make_postgres_store()
    k = _key("torn")
    exp = time.time() + 600
    width = 50
    acknowledged: list[int] = []
    failure: list[BaseException] = []
    running = threading.Event()

    def writer() -> None:
        r = 0
        try:
            while True:
                fields = {f"f{j}": str(r) for j in range(width)}
                store.write(_write(k, fields=fields, expires_at=exp, create=r == 0))
                acknowledged.append(r)
                running.set()
                r += 1
        except StoreUnavailable as exc:
            failure.append(exc)

    th = threading.Thread(target=writer)
    th.start()
    assert running.wait(10)
    time.sleep(0.2)
    postgres_server.stop()
    th.join(timeout=FAST + 5)
    assert not th.is_alive()
    assert failure, "the writer got StoreUnavailable"
    postgres_server.start()
    rec = _until_up(lambda: store.load(k))
    assert rec is not None
    values = {json.loads(v) for v in rec.fields.values()}
    assert len(rec.fields) == width
    assert len(values) == 1, "all fields of one write, or none"
    assert values.pop() >= acknowledged[-1], "every acknowledged write is there"


@pytest.mark.slow
def test_store_built_while_server_is_down(
    postgres_server: PostgresServer, make_postgres_store: Callable[..., PostgresStore]
) -> None:
    postgres_server.stop()
    store = make_postgres_store()  # construction needs no server
    _fails_fast(store.epochs)
    postgres_server.start()
    assert _until_up(store.epochs) == {}, "the schema is created once the server is there"


def test_expired_rows_are_purged_by_the_store(
    make_postgres_store: Callable[..., PostgresStore], postgres_url: str, postgres_prefix: str
) -> None:
    clock = FrozenClock(T0)
    store = make_postgres_store(clock=clock, purge_every=20)
    for i in range(50):
        store.write(_write(_key(f"purge{i}"), expires_at=clock.time() + 5))
        clock.advance(1)
    with psycopg.connect(postgres_url) as db:
        (rows,) = db.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(f"{postgres_prefix}sessions"))
        ).fetchone() or (0,)
    assert rows <= 20 + 5, "expired rows were purged on the way"
    with pytest.raises(ConfigurationError):
        make_postgres_store(purge_every=-1)


def test_rows_of_parsed_values_are_still_read() -> None:
    """A member that is not a string (an earlier build parsed values) is re-encoded."""
    assert pg_module._decode_fields('{"a": 1, "b": "[1]", "c": {"x": null}}') == {
        "a": "1",
        "b": "[1]",
        "c": '{"x":null}',
    }


def test_rows_of_schema_step_1_are_converted_exactly(
    make_postgres_store: Callable[..., PostgresStore],
    postgres_url: str,
    postgres_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Step 1 stored parsed values: step 2 turns each into its JSON text, so a
    string stays a string ("true" is not True) and a refresh time compares."""
    monkeypatch.setattr(pg_module, "MIGRATIONS", pg_module.MIGRATIONS[:1])
    v1 = make_postgres_store()
    k = _key("legacy")
    v1.write(_write(k, fields={"placeholder": "1"}, expires_at=time.time() + 60))
    legacy = '{"name": "bob", "flag": "true", "n": 5, "d": {"bb": 1, "a": [1, "x"]}, "rt": 1800}'
    _rows(
        postgres_url,
        "UPDATE {sessions} SET data = %s::jsonb RETURNING 1",
        legacy,
        prefix=postgres_prefix,
    )
    monkeypatch.undo()
    store = make_postgres_store()
    rec = store.load(k)
    assert rec is not None
    assert {name: json.loads(text) for name, text in rec.fields.items()} == json.loads(legacy)
    assert rec.fields["flag"] == '"true"', "a string stays a string"
    cas = _write(k, fields={"rt": "1801"}, expect=("rt", "1800"), create=False)
    assert store.write(cas) is True, "a converted number still compares"


def _postgres_pids(server: PostgresServer) -> list[int]:
    """The postmaster of ``server`` and its children (backends, workers)."""
    found = subprocess.run(
        ["pgrep", "-f", f"postgres -D {server.data}"], capture_output=True, text=True, check=False
    ).stdout.split()
    pids = [int(p) for p in found]
    for pid in list(pids):
        kids = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        pids += [int(k) for k in kids]
    return pids


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_frozen_server_gives_store_unavailable_in_time(
    postgres_server: PostgresServer, postgres_url: str, postgres_prefix: str, face: str
) -> None:
    """A hung server (or a black-holed network) never answers and its kernel still
    acknowledges every byte: statement_timeout cannot fire; the client-side
    deadline must (pool_timeout + statement_timeout + 1 s)."""
    k = _key("frozen")
    if face == "sync":
        store: Any = PostgresStore(
            postgres_url, table_prefix=postgres_prefix, pool_timeout=0.5, statement_timeout=0.5
        )
        call = functools.partial(store.load, k)
    else:
        store = AsyncPostgresStore(
            postgres_url, table_prefix=postgres_prefix, pool_timeout=0.5, statement_timeout=0.5
        )
        loop = asyncio.new_event_loop()

        def call() -> Any:
            return loop.run_until_complete(store.load(k))

    try:
        assert call() is None  # warm: the pool holds an open connection
        pids = _postgres_pids(postgres_server)
        assert pids
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                call()
            assert time.monotonic() - started < 2 + 1.5, "within the deadline, not for ever"
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        assert _until_up(call) is None, "the store works again once the server answers"
    finally:
        if face == "sync":
            store.close()
        else:
            loop.run_until_complete(store.close())
            loop.close()



def test_a_migration_is_not_cut_by_the_statement_timeout(
    make_postgres_store: Callable[..., PostgresStore],
    postgres_url: str,
    postgres_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A step that rewrites a big table takes longer than one request's statement:
    cut, it would roll back and run again on every request, for ever."""
    slow_step = ("SELECT pg_sleep(0.5)",)
    monkeypatch.setattr(pg_module, "MIGRATIONS", (*pg_module.MIGRATIONS, slow_step))
    store = make_postgres_store(statement_timeout=0.1)
    assert store.write(_write(_key("after-migration"), expires_at=time.time() + 60))
    assert _version(postgres_url, postgres_prefix) == len(pg_module.MIGRATIONS)
    with pytest.raises(StoreUnavailable, match="statement timeout"):
        store._run((b"SELECT pg_sleep(0.5)", ()))  # a request's statement is still cut


def test_the_watchdog_forgets_finished_statements() -> None:
    dog = pg_module._Watchdog()
    for _ in range(10_000):
        with dog.guard(-1, 60.0):
            pass
    assert len(dog._heap) <= 64 + 2, "finished entries leave in bulk"
