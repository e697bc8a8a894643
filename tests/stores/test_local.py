"""The embedded stores: the shared contract, bounds, and SQLite specifics."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from donjon import ConfigurationError, StoreUnavailable
from donjon.stores import MemoryStore, SQLiteStore, SupportsPurge, Write, as_async
from donjon.testing import FrozenClock, check_async_store, check_store


def _write(key: str, **kw: object) -> Write:
    base: dict[str, object] = {
        "key": key, "fields": {"a": "1"}, "session_class": "user", "user_id": None,
        "created_at": 1.0, "last_seen": 1.0, "expires_at": 10_000.0, "create": True,
    }
    base.update(kw)
    return Write(**base)  # type: ignore[arg-type]


def test_memory_store_contract() -> None:
    check_store(MemoryStore)


def test_sqlite_store_contract(tmp_path: Path) -> None:
    check_store(lambda: SQLiteStore(tmp_path / "contract.db"))


async def test_async_faces_contract(tmp_path: Path) -> None:
    async def mem():  # type: ignore[no-untyped-def]
        return as_async(MemoryStore())

    async def sql():  # type: ignore[no-untyped-def]
        return as_async(SQLiteStore(tmp_path / "async.db"))

    await check_async_store(mem)
    await check_async_store(sql)


def test_memory_store_is_bounded() -> None:
    clock = FrozenClock(0)
    store = MemoryStore(max_sessions=100, clock=clock)
    for i in range(1000):
        store.write(_write(f"{i:064x}", user_id=f"u{i % 7}"))
    assert len(store) == 100
    assert store.load(f"{999:064x}") is not None
    assert store.load(f"{0:064x}") is None, "the least recently used records go first"
    listed = sum(len(store.sessions_of(f"u{i}")) for i in range(7))
    assert listed == 100, "the user index shrinks with evictions"


def test_memory_store_evicts_the_least_recently_written_or_touched() -> None:
    store = MemoryStore(max_sessions=3, clock=FrozenClock(0))
    keys = [f"{i:064x}" for i in range(4)]
    for k in keys[:3]:
        store.write(_write(k))
    store.load(keys[0])  # a read does not count as use
    store.touch(keys[1], last_seen=2.0, expires_at=10_000.0)  # a touch does
    store.write(_write(keys[3]))
    assert store.load(keys[0]) is None
    assert all(store.load(k) is not None for k in keys[1:])


def test_memory_store_records_are_read_only_snapshots() -> None:
    store = MemoryStore(clock=FrozenClock(0))
    k = "ab" * 32
    store.write(_write(k, fields={"a": "1", "b": "2"}, user_id="u"))
    before = store.load(k)
    assert before is not None
    with pytest.raises(TypeError):
        before.fields["a"] = "x"  # type: ignore[index]
    store.write(_write(k, fields={"a": "3"}, deleted=frozenset({"b"}), create=False, user_id="u"))
    store.touch(k, last_seen=5.0, expires_at=20_000.0)
    after = store.load(k)
    assert after is not None
    assert dict(before.fields) == {"a": "1", "b": "2"}, "an earlier load never changes"
    assert dict(after.fields) == {"a": "3"}
    assert (after.created_at, after.last_seen, after.expires_at) == (1.0, 5.0, 20_000.0)


def test_purge_expired(tmp_path: Path) -> None:
    clock = FrozenClock(0)
    for store in (MemoryStore(clock=clock), SQLiteStore(tmp_path / "p.db", clock=clock)):
        assert isinstance(store, SupportsPurge)
        store.write(_write("a" * 64, expires_at=5.0))
        store.write(_write("b" * 64, expires_at=50.0))
        clock.set(10)
        assert store.purge_expired() == 1
        assert store.load("b" * 64) is not None
        clock.set(0)
        assert store.load("a" * 64) is None, "purged records are gone for good"
        store.close()


def test_sqlite_shared_between_two_store_objects(tmp_path: Path) -> None:
    one = SQLiteStore(tmp_path / "shared.db")
    two = SQLiteStore(tmp_path / "shared.db")
    one.write(_write("c" * 64, expires_at=4e9))
    rec = two.load("c" * 64)
    assert rec is not None and rec.fields == {"a": "1"}
    assert one.raise_epoch("user", 5.0) == 5.0
    assert two.epochs() == {"user": 5.0}


def test_sqlite_records_hold_no_session_id(tmp_path: Path) -> None:
    from donjon import KeyRing
    from donjon.engine import Engine

    path = tmp_path / "dump.db"
    engine = Engine(keyring=KeyRing.generate(), store=SQLiteStore(path))
    s = engine.load(None)
    s["x"] = 1
    s.login("erin")
    token = engine.commit(s, presented=False).token
    assert token is not None and s.id is not None
    dump = "\n".join(sqlite3.connect(path).iterdump())
    assert s.id not in dump and token not in dump


def test_sqlite_locked_database_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = SQLiteStore(path, timeout=0.2)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable):
            store.write(_write("d" * 64, expires_at=4e9))
    finally:
        blocker.execute("ROLLBACK")
    assert store.write(_write("d" * 64, expires_at=4e9)), "service resumes once the lock is gone"
    assert store.load("d" * 64) is not None


def test_sqlite_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("not a folder")
    with pytest.raises((StoreUnavailable, OSError)):
        SQLiteStore(target / "sub" / "x.db")


def test_sqlite_threads(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    store.write(_write("e" * 64, expires_at=4e9, fields={}))
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            for r in range(20):
                store.write(_write("e" * 64, fields={f"k{i}": str(r)}, create=False,
                                   expires_at=4e9))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rec = store.load("e" * 64)
    assert rec is not None and len(rec.fields) == 6


def test_sqlite_purges_expired_records_by_itself(tmp_path: Path) -> None:
    """Anonymous sessions are not rate-limited: expired rows must not pile up."""
    clock = FrozenClock(1000.0)
    store = SQLiteStore(tmp_path / "p.db", clock=clock, purge_every=50)
    for i in range(120):
        store.write(_write(f"{i:064x}", expires_at=clock.time() + 10))
        clock.advance(1)
    db = sqlite3.connect(tmp_path / "p.db")
    (rows,) = db.execute("SELECT count(*) FROM donjon_sessions").fetchone()
    (fields,) = db.execute("SELECT count(*) FROM donjon_fields").fetchone()
    db.close()
    assert rows <= 50 + 10, "expired records were purged on the way"
    assert fields == rows
    with pytest.raises(ConfigurationError):
        SQLiteStore(tmp_path / "q.db", purge_every=-1)
