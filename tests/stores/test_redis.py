"""RedisStore and AsyncRedisStore against real servers: standalone and a 3-node cluster.

The servers come from tests/servers/fixtures_redis.py; nothing here is mocked.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.cluster

from donjon import KeyRing, StoreUnavailable, Verdict
from donjon.config import Timeouts
from donjon.engine import AsyncEngine, Engine
from donjon.errors import ConfigurationError, MissingDependency
from donjon.stores import Record, Write
from donjon.stores.redis import AsyncRedisStore, RedisStore
from donjon.testing import FrozenClock, check_async_store, check_store
from tests.servers.redis_server import RedisCluster3, RedisServer, free_port

pytestmark = pytest.mark.redis

FAST: float = 3.0
"""Seconds within which a dead or frozen server must turn into StoreUnavailable."""


# -- helpers ----------------------------------------------------------------


def _key(label: str) -> str:
    return hashlib.sha256(f"redis-test/{label}/{time.time_ns()}".encode()).hexdigest()


def _write(key: str, fields: dict[str, str] | None = None, **kw: Any) -> Write:
    now = time.time()
    base: dict[str, Any] = {
        "key": key,
        "fields": {"a": '"1"'} if fields is None else fields,
        "session_class": "user",
        "user_id": None,
        "created_at": now,
        "last_seen": now,
        "expires_at": now + 600,
        "create": True,
    }
    base.update(kw)
    return Write(**base)


def _decoded(rec: Record | None) -> dict[str, Any]:
    assert rec is not None
    return {k: json.loads(v) for k, v in rec.fields.items()}


def _dump(raw: Any) -> list[tuple[bytes, list[bytes]]]:
    """Every key of the server(s) with every name and value it holds."""
    out: list[tuple[bytes, list[bytes]]] = []
    for k in raw.scan_iter(count=1000):
        t = raw.type(k)
        t = t.decode() if isinstance(t, bytes) else t
        if t == "hash":
            vals = [x for kv in raw.hgetall(k).items() for x in kv]
        elif t == "set":
            vals = list(raw.smembers(k))
        elif t == "string":
            vals = [raw.get(k)]
        else:
            vals = []
        out.append((k, vals))
    return out


@pytest.fixture(params=["standalone", pytest.param("cluster", marks=pytest.mark.cluster)])
def kind(request: pytest.FixtureRequest) -> str:
    """Run a test against the standalone server and against the cluster."""
    return str(request.param)


@pytest.fixture
def store(kind: str, make_redis_store: Callable[..., RedisStore]) -> RedisStore:
    return make_redis_store(cluster=kind == "cluster")


@pytest.fixture
def astore(kind: str, make_async_redis_store: Callable[..., AsyncRedisStore]) -> AsyncRedisStore:
    return make_async_redis_store(cluster=kind == "cluster")


@pytest.fixture
def raw(kind: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A plain redis-py client on the same server(s), to look at what the store wrote."""
    client: Any
    if kind == "cluster":
        client = redis.cluster.RedisCluster.from_url(request.getfixturevalue("redis_cluster_url"))
    else:
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    yield client
    client.close()


# -- the shared contract ------------------------------------------------------


def test_contract_sync(kind: str, make_redis_store: Callable[..., RedisStore]) -> None:
    check_store(lambda: make_redis_store(cluster=kind == "cluster"))


async def test_contract_async(
    kind: str, make_async_redis_store: Callable[..., AsyncRedisStore]
) -> None:
    async def make() -> AsyncRedisStore:
        return make_async_redis_store(cluster=kind == "cluster")

    await check_async_store(make)


def test_contract_with_a_borrowed_decoding_client(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        check_store(lambda: RedisStore(client, prefix=redis_prefix))
        assert client.ping(), "close() must leave a client it does not own open"
    finally:
        client.close()


async def test_async_contract_with_a_borrowed_decoding_client(
    redis_url: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:

        async def make() -> AsyncRedisStore:
            return AsyncRedisStore(client, prefix=redis_prefix)

        await check_async_store(make)
        assert await client.ping()
    finally:
        await client.aclose()


# -- every method, sync and async ---------------------------------------------------


def test_round_trip_and_layout(store: RedisStore, raw: Any) -> None:
    k = _key("layout")
    fields = {"n": "1", "class": '"not meta"', "": '"empty"', "d:x": "[1]", "ü": '"✓"'}
    assert store.load(k) is None
    assert store.write(_write(k, fields, user_id="alice", session_class="admin"))
    rec = store.load(k)
    assert rec is not None
    assert dict(rec.fields) == fields, "field values come back exactly as written"
    assert (rec.session_class, rec.user_id) == ("admin", "alice")
    h = raw.hgetall(f"{store.prefix}{{{k[:2]}}}:s:{k}")
    names = {n.decode() for n in h}
    assert {f"d:{n}" for n in fields} <= names, "data fields are stored one per hash field"
    assert {"class", "user", "created", "seen", "expires"} <= names


def test_update_sets_and_deletes_single_fields(store: RedisStore) -> None:
    k = _key("update")
    store.write(_write(k, {"a": "1", "b": "2", "c": "3"}))
    assert store.write(_write(k, {"b": "20", "d": "4"}, deleted=frozenset({"c"}), create=False))
    assert _decoded(store.load(k)) == {"a": 1, "b": 20, "d": 4}
    assert not store.write(_write(k, {"z": "0"})), "a create never overwrites a live record"
    assert _decoded(store.load(k)) == {"a": 1, "b": 20, "d": 4}


def test_update_keeps_created_and_never_moves_last_seen_back(store: RedisStore) -> None:
    k = _key("seen")
    store.write(_write(k, created_at=100.0, last_seen=500.0))
    store.write(_write(k, {"x": "1"}, created_at=999.0, last_seen=400.0, create=False))
    rec = store.load(k)
    assert rec is not None
    assert (rec.created_at, rec.last_seen) == (100.0, 500.0)
    store.touch(k, last_seen=300.0, expires_at=time.time() + 60)
    rec = store.load(k)
    assert rec is not None
    assert rec.last_seen == 500.0


def test_update_never_resurrects(store: RedisStore, raw: Any) -> None:
    k = _key("dead")
    store.write(_write(k, user_id="bob"))
    store.delete(k)
    assert store.write(_write(k, {"b": "1"}, user_id="bob", create=False)) is False
    assert store.load(k) is None
    assert raw.exists(f"{store.prefix}{{{k[:2]}}}:s:{k}") == 0, "nothing was written"
    assert store.sessions_of("bob") == []
    store.touch(k, last_seen=time.time(), expires_at=time.time() + 60)
    assert raw.exists(f"{store.prefix}{{{k[:2]}}}:s:{k}") == 0, "touch never creates"
    # Expired by Redis itself:
    e = _key("expired")
    store.write(_write(e, expires_at=time.time() + 0.2))
    time.sleep(0.4)
    assert store.write(_write(e, {"b": "1"}, create=False)) is False
    assert store.load(e) is None


def test_expiry_uses_the_store_clock(
    kind: str, make_redis_store: Callable[..., RedisStore]
) -> None:
    clock = FrozenClock(1000.0)
    store = make_redis_store(cluster=kind == "cluster", clock=clock)
    k = _key("clock")
    store.write(_write(k, created_at=1000.0, last_seen=1000.0, expires_at=1060.0))
    rec = store.load(k)
    assert rec is not None, "TTLs are relative to the store's clock, not Redis's"
    clock.advance(61)
    assert store.load(k) is None, "a record past its expiry is never returned"
    assert store.write(_write(k, {"x": "1"}, create=False)) is False
    assert store.sessions_of("anyone") == []


def test_ttl_is_really_set(store: RedisStore, raw: Any) -> None:
    k = _key("ttl")
    now = time.time()
    store.write(_write(k, user_id="carol", expires_at=now + 100))
    skey = f"{store.prefix}{{{k[:2]}}}:s:{k}"
    ikey = f"{store.prefix}{{{k[:2]}}}:u:{hashlib.sha256(b'carol').hexdigest()}"
    assert 95_000 < raw.pttl(skey) <= 100_000
    assert raw.pttl(ikey) >= raw.pttl(skey) - 50, "the index shard lives as long as its sessions"
    store.touch(k, last_seen=time.time(), expires_at=time.time() + 500)
    assert 495_000 < raw.pttl(skey) <= 500_000, "touch resets the TTL"
    assert raw.pttl(ikey) > 495_000
    rec = store.load(k)
    assert rec is not None
    assert rec.expires_at > now + 499
    store.write(_write(k, {"y": "1"}, expires_at=time.time() + 50, create=False))
    assert 45_000 < raw.pttl(skey) <= 50_000, "an update sets the TTL it is given"


def test_write_already_expired_leaves_nothing(store: RedisStore, raw: Any) -> None:
    k = _key("past")
    assert store.write(_write(k, user_id="dan", expires_at=time.time() - 1))
    assert store.load(k) is None
    assert raw.exists(f"{store.prefix}{{{k[:2]}}}:s:{k}") == 0
    assert store.sessions_of("dan") == []


def test_delete_drops_index_entry(store: RedisStore, raw: Any) -> None:
    k = _key("del")
    store.write(_write(k, user_id="erin"))
    ikey = f"{store.prefix}{{{k[:2]}}}:u:{hashlib.sha256(b'erin').hexdigest()}"
    assert raw.smembers(ikey) == {k.encode()}
    store.delete(k)
    assert raw.smembers(ikey) == set()
    store.delete(k)  # twice: no error


def test_user_change_moves_the_index_entry(store: RedisStore) -> None:
    k = _key("move")
    store.write(_write(k, user_id="frank"))
    store.write(_write(k, {}, user_id="grace", create=False))
    assert store.sessions_of("frank") == []
    assert [i.key for i in store.sessions_of("grace")] == [k]
    store.write(_write(k, {}, user_id=None, create=False))  # logout keeps the session
    assert store.sessions_of("grace") == []
    rec = store.load(k)
    assert rec is not None
    assert rec.user_id is None
    assert store.write(_write(k, user_id="heidi")) is False, "a create never overwrites"
    assert store.delete(k) is True
    store.write(_write(k, user_id="heidi"))  # a create under another user
    assert [i.key for i in store.sessions_of("heidi")] == [k]
    assert store.revoke_user("grace") == 0


def test_sessions_of_lists_sorted_and_cleans_lazily(store: RedisStore, raw: Any) -> None:
    keys = [_key(f"list{i}") for i in range(6)]
    for i, k in enumerate(keys):
        store.write(_write(k, user_id="ivan", created_at=1000.0 + i))
    gone, short = keys[0], keys[1]
    store.delete(short)
    store.write(_write(short, user_id="ivan", created_at=1001.0, expires_at=time.time() + 0.2))
    raw.delete(f"{store.prefix}{{{gone[:2]}}}:s:{gone}")  # as if Redis had expired it
    time.sleep(0.4)
    listed = store.sessions_of("ivan")
    assert [i.key for i in listed] == keys[2:], "live sessions only, oldest first"
    assert all(i.user_id == "ivan" and i.session_class == "user" for i in listed)
    uh = hashlib.sha256(b"ivan").hexdigest()
    for k in (gone, short):
        assert not raw.sismember(f"{store.prefix}{{{k[:2]}}}:u:{uh}", k), (
            "index entries of vanished sessions are removed when listing"
        )
    assert store.revoke_user("ivan") == 4
    assert store.sessions_of("ivan") == []
    assert [k for k, _ in _dump(raw) if k.startswith(store.prefix.encode())] == []


def test_revoke_only_touches_that_user(store: RedisStore) -> None:
    mine = [_key(f"m{i}") for i in range(20)]
    theirs = _key("theirs")
    for k in mine:
        store.write(_write(k, user_id="judy"))
    store.write(_write(theirs, user_id="judy-not"))
    assert store.revoke_user("judy") == 20
    assert all(store.load(k) is None for k in mine)
    assert store.load(theirs) is not None
    assert store.revoke_user("judy") == 0


def test_epochs_are_monotonic_and_exact(store: RedisStore) -> None:
    assert store.epochs() == {}
    assert store.raise_epoch("admin", 1_800_000_000.123456) == 1_800_000_000.123456
    assert store.raise_epoch("admin", 5.0) == 1_800_000_000.123456
    assert store.raise_epoch("user", 0.1) == 0.1
    assert store.epochs() == {"admin": 1_800_000_000.123456, "user": 0.1}
    with pytest.raises(ValueError, match="finite"):
        store.raise_epoch("user", float("nan"))


def test_raise_epoch_is_a_max_under_concurrency(store: RedisStore) -> None:
    values = [float(v) for v in range(1, 201)]
    errors: list[BaseException] = []

    def run(chunk: list[float]) -> None:
        try:
            for v in chunk:
                store.raise_epoch("race", v)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(values[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.epochs()["race"] == 200.0


def test_prefixes_isolate_stores(kind: str, make_redis_store: Callable[..., RedisStore]) -> None:
    a = make_redis_store(cluster=kind == "cluster", prefix="app-a:")
    b = make_redis_store(cluster=kind == "cluster", prefix="app-b:")
    k = _key("iso")
    a.write(_write(k, user_id="kim"))
    a.raise_epoch("user", 10.0)
    assert b.load(k) is None
    assert b.sessions_of("kim") == []
    assert b.epochs() == {}


def test_bad_prefix_is_refused(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        with pytest.raises(ConfigurationError, match="must not contain"):
            RedisStore(client, prefix="app{1}:")
    finally:
        client.close()


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingDependency, match=r"donjon\[redis\]"):
        RedisStore.from_url("redis://127.0.0.1:1")
    with pytest.raises(ImportError):
        AsyncRedisStore.from_url("redis://127.0.0.1:1")


async def test_async_methods(astore: AsyncRedisStore) -> None:
    k, k2 = _key("a1"), _key("a2")
    assert await astore.load(k) is None
    assert await astore.write(_write(k, {"a": "1", "b": "2"}, user_id="leo"))
    assert await astore.write(_write(k2, user_id="leo", created_at=time.time() + 1))
    assert await astore.write(
        _write(k, {"c": "3"}, deleted=frozenset({"a"}), user_id="leo", create=False)
    )
    assert _decoded(await astore.load(k)) == {"b": 2, "c": 3}
    now = time.time()
    await astore.touch(k, last_seen=now + 5, expires_at=now + 900)
    rec = await astore.load(k)
    assert rec is not None
    assert (rec.last_seen, rec.expires_at) == (now + 5, now + 900)
    assert [i.key for i in await astore.sessions_of("leo")] == [k, k2]
    await astore.delete(k2)
    assert await astore.write(_write(k2, {}, create=False)) is False
    assert [i.key for i in await astore.sessions_of("leo")] == [k]
    assert await astore.raise_epoch("user", 7.5) == 7.5
    assert await astore.raise_epoch("user", 1.0) == 7.5
    assert await astore.epochs() == {"user": 7.5}
    assert await astore.revoke_user("leo") == 1
    assert await astore.load(k) is None


# -- concurrency: field-level writes, atomic records ----------------------------


def test_threads_writing_different_keys_all_persist(store: RedisStore) -> None:
    k = _key("threads")
    store.write(_write(k, {"base": "0"}))
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            for r in range(50):
                assert store.write(_write(k, {f"t{i}": str(r)}, create=False))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert _decoded(store.load(k)) == {"base": 0, **{f"t{i}": 49 for i in range(8)}}


async def test_tasks_writing_different_keys_all_persist(astore: AsyncRedisStore) -> None:
    k = _key("tasks")
    await astore.write(_write(k, {"base": "0"}))

    async def run(i: int) -> None:
        for r in range(50):
            assert await astore.write(_write(k, {f"t{i}": str(r)}, create=False))

    await asyncio.gather(*(run(i) for i in range(8)))
    assert _decoded(await astore.load(k)) == {"base": 0, **{f"t{i}": 49 for i in range(8)}}


def test_readers_never_see_half_a_write(store: RedisStore) -> None:
    k = _key("atomic")
    store.write(_write(k, {"a": "0", "b": "0", "gone": "0"}))
    stop = threading.Event()
    seen: list[dict[str, Any]] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(_decoded(store.load(k)))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(1, 200):
            fields = {"a": str(i), "b": str(i)}
            deleted = frozenset({"gone"}) if i % 2 else frozenset()
            if not i % 2:
                fields["gone"] = str(i)
            store.write(_write(k, fields, deleted=deleted, create=False))
    finally:
        stop.set()
        t.join()
    assert seen
    for d in seen:
        assert d["a"] == d["b"], f"a reader saw half a write: {d}"
        assert ("gone" in d) == (d["a"] % 2 == 0), f"a reader saw half a write: {d}"


# -- what a dump of Redis reveals ---------------------------------------------------


def _engine_login(engine: Engine, user: str) -> tuple[str, str]:
    s = engine.load(None)
    s["cart"] = [1, 2]
    s.login(user)
    out = engine.commit(s, presented=False)
    assert out.token is not None
    assert s.id is not None
    return out.token, s.id


def test_no_session_id_or_user_id_in_the_clear(
    kind: str, make_redis_store: Callable[..., RedisStore], raw: Any
) -> None:
    clock = FrozenClock()
    store = make_redis_store(cluster=kind == "cluster", clock=clock)
    engine = Engine(
        keyring=KeyRing.generate(["user"]),
        store=store,
        clock=clock,
        timeouts=Timeouts(idle=600, absolute=3600),
    )
    user = "mallory@example.com"
    tokens = [_engine_login(engine, user) for _ in range(5)]
    assert all(engine.load(tok).verdict is Verdict.VALID for tok, _ in tokens)
    dump = _dump(raw)
    assert len(dump) >= 6
    blobs = [(k, v) for k, vals in dump for v in [k, *vals]]
    for tok, sid in tokens:
        for needle in (sid.encode(), tok.encode()):
            assert not any(needle in v for _, v in blobs), "the session id is never stored"
    for k, _ in dump:
        assert user.encode() not in k, "the user id is in no key name"
    # The user id is stored once per session, as the value of its "user" field
    # (load() must return it), and nowhere else.
    for k, vals in dump:
        if user.encode() in b"".join(vals):
            h = raw.hgetall(k)
            assert h[b"user"] == user.encode()
            assert [n for n, v in h.items() if user.encode() in v] == [b"user"]
    assert len(engine.sessions_of(user)) == 5
    assert engine.revoke_user(user) == 5


# -- corrupt records -----------------------------------------------------------------


def test_corrupt_records_read_as_missing_or_as_is(
    store: RedisStore, raw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    p = store.prefix
    bad_json, no_meta, bad_bytes, wrong_type, bad_float = (_key(f"c{i}") for i in range(5))

    def sk(k: str) -> str:
        return f"{p}{{{k[:2]}}}:s:{k}"

    store.write(_write(bad_json, {"a": "1"}))
    raw.hset(sk(bad_json), "d:a", "{not json")
    rec = store.load(bad_json)
    assert rec is not None
    assert rec.fields == {"a": "{not json"}, (
        "field values are returned as stored: the engine decodes (and rejects) them"
    )
    raw.hset(sk(no_meta), mapping={"d:a": "1"})
    store.write(_write(bad_bytes, {"a": "1"}))
    raw.hset(sk(bad_bytes), "d:a", b"\xff\xfe")
    raw.set(sk(wrong_type), "a string")
    store.write(_write(bad_float, {"a": "1"}))
    raw.hset(sk(bad_float), "created", "yesterday")
    with caplog.at_level("ERROR", logger="donjon.store"):
        for k in (no_meta, bad_bytes, wrong_type, bad_float):
            assert store.load(k) is None
    assert "treated as missing" in caplog.text
    assert "\\xff" not in caplog.text, "no stored data in logs"
    assert "yesterday" not in caplog.text, "no stored data in logs"
    assert store.write(_write(wrong_type, {"b": "1"}, create=False)) is False
    store.touch(wrong_type, last_seen=1.0, expires_at=time.time() + 5)
    assert raw.get(sk(wrong_type)) == b"a string", "update and touch leave foreign data alone"
    assert store.write(_write(wrong_type, {"b": "1"}))
    assert _decoded(store.load(wrong_type)) == {"b": 1}, "a create replaces it"
    store.delete(no_meta)
    assert raw.exists(sk(no_meta)) == 0


def test_corrupt_records_in_a_listing_are_skipped(store: RedisStore, raw: Any) -> None:
    good, bad, foreign = _key("good"), _key("bad"), _key("foreign")
    for k in (good, bad, foreign):
        store.write(_write(k, user_id="nina"))
    raw.hset(f"{store.prefix}{{{bad[:2]}}}:s:{bad}", "seen", "soon")
    skey = f"{store.prefix}{{{foreign[:2]}}}:s:{foreign}"
    raw.delete(skey)
    raw.set(skey, "not a hash")
    assert [i.key for i in store.sessions_of("nina")] == [good]
    uh = hashlib.sha256(b"nina").hexdigest()
    assert not raw.sismember(f"{store.prefix}{{{foreign[:2]}}}:u:{uh}", foreign)
    assert store.revoke_user("nina") == 2
    assert raw.get(skey) == b"not a hash", "revoke deletes only this user's records"


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
async def test_decoding_client_meets_bytes_that_are_not_utf8(
    aio: bool, redis_url: str, redis_prefix: str
) -> None:
    raw = redis.Redis.from_url(redis_url)
    client: Any = (redis.asyncio.Redis if aio else redis.Redis).from_url(
        redis_url, decode_responses=True
    )
    sync = RedisStore(redis.Redis.from_url(redis_url), prefix=redis_prefix, close_client=True)
    store: Any = (AsyncRedisStore if aio else RedisStore)(client, prefix=redis_prefix)

    async def call(name: str, *args: Any) -> Any:
        res = getattr(store, name)(*args)
        return await res if aio else res

    try:
        good, bad = _key("good"), _key("bad")
        for k in (good, bad):
            sync.write(_write(k, user_id="uma"))
        raw.hset(f"{redis_prefix}{{{bad[:2]}}}:s:{bad}", "class", b"\xff")
        assert await call("load", bad) is None, "reported as missing"
        listed = await call("sessions_of", "uma")
        assert [i.key for i in listed] == [good], "skipped in a listing, not a crash"
        assert await call("revoke_user", "uma") == 2
        assert await call("load", good) is None
    finally:
        raw.close()
        sync.close()
        await client.aclose() if aio else client.close()


async def test_async_corrupt_record_reads_as_missing(astore: AsyncRedisStore, raw: Any) -> None:
    k = _key("acorrupt")
    raw.set(f"{astore.prefix}{{{k[:2]}}}:s:{k}", "a string")
    assert await astore.load(k) is None
    assert await astore.write(_write(k, {}, create=False)) is False


def test_non_hex_keys_are_sharded_too(store: RedisStore) -> None:
    for k in ("not-hex-{}-key", "ZZ", "}{"):
        store.write(_write(k, user_id="olga"))
        assert store.load(k) is not None
    assert {i.key for i in store.sessions_of("olga")} == {"not-hex-{}-key", "ZZ", "}{"}
    assert store.revoke_user("olga") == 3


# -- the engine on Redis ----------------------------------------------------------


async def test_async_engine_on_redis(
    kind: str, make_async_redis_store: Callable[..., AsyncRedisStore]
) -> None:
    clock = FrozenClock()
    astore = make_async_redis_store(cluster=kind == "cluster", clock=clock)
    engine = AsyncEngine(keyring=KeyRing.generate(["user"]), store=astore, clock=clock)
    s = await engine.load(None)
    s["n"] = 1
    s.login("pat")
    out = await engine.commit(s, presented=False)
    assert out.token is not None
    s2 = await engine.load(out.token)
    assert s2.verdict is Verdict.VALID
    assert (s2["n"], s2.user_id) == (1, "pat")
    assert len(await engine.sessions_of("pat")) == 1


# -- the cluster -----------------------------------------------------------------


@pytest.mark.cluster
def test_cluster_session_and_index_share_a_slot(
    make_redis_store: Callable[..., RedisStore], redis_cluster: RedisCluster3
) -> None:
    store = make_redis_store(cluster=True)
    client: Any = store.client
    keys = [_key(f"slot{i}") for i in range(40)]
    for k in keys:
        store.write(_write(k, user_id="quinn"))
    uh = hashlib.sha256(b"quinn").hexdigest()
    ports = set()
    for k in keys:
        skey = f"{store.prefix}{{{k[:2]}}}:s:{k}"
        ikey = f"{store.prefix}{{{k[:2]}}}:u:{uh}"
        slot = redis_cluster.nodes[0].command("CLUSTER", "KEYSLOT", skey)
        assert slot == redis_cluster.nodes[0].command("CLUSTER", "KEYSLOT", ikey)
        assert int(slot.strip(":\r\n")) == client.keyslot(skey)
        ports.add(client.get_node_from_key(skey).port)
    assert len(ports) >= 2, "the sessions of one user spread over several nodes"
    assert ports <= set(redis_cluster.ports)
    assert {i.key for i in store.sessions_of("quinn")} == set(keys)
    assert store.revoke_user("quinn") == 40
    assert all(store.load(k) is None for k in keys)


@pytest.mark.cluster
async def test_async_cluster_spread_user(
    make_async_redis_store: Callable[..., AsyncRedisStore],
) -> None:
    store = make_async_redis_store(cluster=True)
    keys = [_key(f"aslot{i}") for i in range(30)]
    for k in keys:
        await store.write(_write(k, user_id="rita"))
    assert {i.key for i in await store.sessions_of("rita")} == set(keys)
    assert await store.revoke_user("rita") == 30
    assert await store.sessions_of("rita") == []


# -- faults: the server really goes away ---------------------------------------------


def _ops(store: RedisStore, k: str) -> dict[str, Callable[[], object]]:
    now = time.time()
    return {
        "load": lambda: store.load(k),
        "create": lambda: store.write(_write(k, user_id="sam")),
        "update": lambda: store.write(_write(k, {"x": "1"}, create=False)),
        "delete": lambda: store.delete(k),
        "touch": lambda: store.touch(k, last_seen=now, expires_at=now + 60),
        "sessions_of": lambda: store.sessions_of("sam"),
        "revoke_user": lambda: store.revoke_user("sam"),
        "epochs": store.epochs,
        "raise_epoch": lambda: store.raise_epoch("user", now),
    }


@pytest.mark.slow
def test_server_down_fails_fast_then_recovers(
    redis_server: RedisServer, make_redis_store: Callable[..., RedisStore]
) -> None:
    store = make_redis_store()
    k = _key("down")
    store.write(_write(k, user_id="sam"))
    redis_server.stop()
    for name, op in _ops(store, k).items():
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            op()
        assert time.monotonic() - t0 < FAST, f"{name} took too long to fail"
    redis_server.start()
    # The same store object works again (the data is gone: no persistence).
    assert store.load(k) is None
    assert store.write(_write(k, {"back": "1"}, user_id="sam"))
    assert _decoded(store.load(k)) == {"back": 1}
    assert [i.key for i in store.sessions_of("sam")] == [k]


@pytest.mark.slow
async def test_async_server_down_fails_fast_then_recovers(
    redis_server: RedisServer, make_async_redis_store: Callable[..., AsyncRedisStore]
) -> None:
    store = make_async_redis_store()
    k = _key("adown")
    await store.write(_write(k, user_id="sam"))
    redis_server.stop()
    now = time.time()
    ops = {
        "load": lambda: store.load(k),
        "create": lambda: store.write(_write(k)),
        "update": lambda: store.write(_write(k, create=False)),
        "delete": lambda: store.delete(k),
        "touch": lambda: store.touch(k, last_seen=now, expires_at=now + 9),
        "sessions_of": lambda: store.sessions_of("sam"),
        "revoke_user": lambda: store.revoke_user("sam"),
        "epochs": store.epochs,
        "raise_epoch": lambda: store.raise_epoch("user", now),
    }
    for name, op in ops.items():
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await op()
        assert time.monotonic() - t0 < FAST, f"{name} took too long to fail"
    redis_server.start()
    assert await store.load(k) is None
    assert await store.write(_write(k, {"back": "1"}, user_id="sam"))
    assert _decoded(await store.load(k)) == {"back": 1}


@pytest.mark.slow
def test_restart_under_an_open_connection_is_transparent(
    redis_server: RedisServer, make_redis_store: Callable[..., RedisStore]
) -> None:
    store = make_redis_store()
    store.write(_write(_key("warm")))  # a pooled connection, then the server restarts
    redis_server.restart()
    k = _key("after")
    assert store.write(_write(k)), "one quick retry reconnects (and reloads the scripts)"
    assert store.load(k) is not None


@pytest.mark.slow
def test_frozen_server_times_out_and_writes_are_all_or_nothing(
    redis_server: RedisServer, make_redis_store: Callable[..., RedisStore]
) -> None:
    store = make_redis_store()
    k = _key("frozen")
    old = {"a": "1", "b": "1", "gone": "1"}
    store.write(_write(k, old))
    pid = redis_server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.write(_write(k, {"a": "2", "b": "2"}, deleted=frozenset({"gone"}), create=False))
        assert time.monotonic() - t0 < FAST
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.load(k)
        assert time.monotonic() - t0 < FAST
    finally:
        os.kill(pid, signal.SIGCONT)
    rec = store.load(k)
    assert rec is not None
    assert dict(rec.fields) in (old, {"a": "2", "b": "2"}), "never half a write"


@pytest.mark.slow
@pytest.mark.cluster
def test_cluster_node_down_fails_fast_then_recovers(
    redis_cluster: RedisCluster3, make_redis_store: Callable[..., RedisStore]
) -> None:
    store = make_redis_store(cluster=True)
    client: Any = store.client
    keys = [_key(f"node{i}") for i in range(30)]
    for k in keys:
        store.write(_write(k, user_id="tom"))
    port_of = {k: client.get_node_from_key(f"{store.prefix}{{{k[:2]}}}:s:{k}").port for k in keys}
    victim = next(n for n in redis_cluster.nodes if n.port in port_of.values())
    victim.stop()
    for k in keys:
        t0 = time.monotonic()
        if port_of[k] == victim.port:
            with pytest.raises(StoreUnavailable):
                store.load(k)
        else:
            assert store.load(k) is not None, "the other nodes keep serving"
        assert time.monotonic() - t0 < FAST
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.sessions_of("tom")
    assert time.monotonic() - t0 < FAST
    victim.start()
    redis_cluster.wait_ok()
    survivors = {k for k in keys if port_of[k] != victim.port}
    assert {i.key for i in store.sessions_of("tom")} == survivors
    for k in keys:
        assert store.write(_write(k, {"b": "2"}, user_id="tom", create=False)) == (k in survivors)
    assert store.revoke_user("tom") == len(survivors)


def test_unreachable_cluster_fails_fast() -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable):
        RedisStore.from_url(url, cluster=True)
    assert time.monotonic() - t0 < FAST


async def test_unreachable_async_cluster_fails_fast() -> None:
    store = AsyncRedisStore.from_url(f"redis://127.0.0.1:{free_port()}", cluster=True)
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.load(_key("nowhere"))
        assert time.monotonic() - t0 < FAST
    finally:
        await store.close()


# -- the lean client of AsyncRedisStore.from_url --------------------------------------


def test_from_url_picks_the_lean_client_for_one_server(redis_url: str) -> None:
    from donjon.stores._resp import RespClient

    assert isinstance(AsyncRedisStore.from_url(redis_url).client, RespClient)
    # Options only redis-py knows, or a cluster, choose redis-py.
    other = AsyncRedisStore.from_url(redis_url, health_check_interval=0)
    assert isinstance(other.client, redis.asyncio.Redis)
    in_url = AsyncRedisStore.from_url(redis_url + "?health_check_interval=0")
    assert isinstance(in_url.client, redis.asyncio.Redis)
    with pytest.raises(ValueError, match="scheme"):
        AsyncRedisStore.from_url("http://127.0.0.1:6379")


async def test_async_contract_over_redis_py(
    make_async_redis_store: Callable[..., AsyncRedisStore],
) -> None:
    async def make() -> AsyncRedisStore:
        store = make_async_redis_store(health_check_interval=0)
        assert isinstance(store.client, redis.asyncio.Redis)
        return store

    await check_async_store(make)


async def test_async_scripts_the_server_lost_are_loaded_again(
    make_async_redis_store: Callable[..., AsyncRedisStore], redis_url: str
) -> None:
    store = make_async_redis_store()
    k = _key("flushed")
    assert await store.write(_write(k, {"a": "1"}, user_id="una"))
    plain = redis.Redis.from_url(redis_url)
    try:
        plain.script_flush()
    finally:
        plain.close()
    assert await store.write(_write(k, {"a": "2"}, create=False, user_id="una"))
    assert _decoded(await store.load(k)) == {"a": 2}
    await store.delete(k)
    assert await store.load(k) is None


async def test_async_wrong_type_is_a_missing_record_not_an_outage(
    make_async_redis_store: Callable[..., AsyncRedisStore], redis_url: str
) -> None:
    store = make_async_redis_store()
    k = _key("alist")
    plain = redis.Redis.from_url(redis_url)
    try:
        plain.rpush(f"{store.prefix}{{{k[:2]}}}:s:{k}", "x")
        assert await store.load(k) is None
        # Any other error reply is an outage, never silently a missing record.
        plain.config_set("maxmemory", "1")
        plain.config_set("maxmemory-policy", "noeviction")
        with pytest.raises(StoreUnavailable, match="OOM"):
            await store.write(_write(_key("oom"), {"a": "1"}))
    finally:
        plain.config_set("maxmemory", "0")
        plain.close()


@pytest.mark.slow
async def test_async_restart_under_an_open_connection_is_transparent(
    redis_server: RedisServer, make_async_redis_store: Callable[..., AsyncRedisStore]
) -> None:
    store = make_async_redis_store()
    await store.write(_write(_key("awarm")))  # an open connection, then the server restarts
    redis_server.restart()
    k = _key("aafter")
    assert await store.write(_write(k)), "the broken batch is sent once more, scripts reloaded"
    assert await store.load(k) is not None
