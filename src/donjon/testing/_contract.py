from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..stores._base import DEVICE_FIELD, AsyncStore, Record, Store, Write

__all__ = ["check_async_store", "check_store"]

_TRICKY_FIELDS = {
    "n": "1",
    "user": '"alice"',
    "unicode ключ ✓": '"värde 🌳"',
    "d:nested": '{"a":[1,2,{"b":null}],"c":true}',
    "class": "3.5",
    "": '"empty name"',
    "__proto__": "[]",
}


def _key(label: str) -> str:
    return hashlib.sha256(f"donjon-contract/{label}/{time.time_ns()}".encode()).hexdigest()


def _write(key: str, fields: dict[str, str], **kw: Any) -> Write:
    now = time.time()
    base: dict[str, Any] = {
        "key": key,
        "fields": fields,
        "deleted": frozenset(),
        "session_class": "user",
        "user_id": None,
        "created_at": now,
        "last_seen": now,
        "expires_at": now + 600,
        "create": True,
    }
    base.update(kw)
    return Write(**base)


def _same_json(a: dict[str, str], b: dict[str, str], what: str) -> None:
    assert set(a) == set(b), f"{what}: field names {sorted(a)} != {sorted(b)}"
    for k in a:
        assert json.loads(a[k]) == json.loads(b[k]), f"{what}: field {k!r} differs"


async def _async_contract(store: AsyncStore) -> None:
    # -- missing / create / load ---------------------------------------
    assert await store.load(_key("missing")) is None, "load of a missing key must be None"
    k = _key("basic")
    assert await store.write(_write(k, dict(_TRICKY_FIELDS))) is True, "create must return True"
    rec = await store.load(k)
    assert isinstance(rec, Record), "load after create must return a Record"
    _same_json(dict(rec.fields), _TRICKY_FIELDS, "round trip")
    assert rec.session_class == "user"
    assert rec.user_id is None
    # -- field-level update ---------------------------------------------
    upd = _write(
        k, {"n": "2", "new": '"x"'}, deleted=frozenset({"user", "absent-key"}), create=False
    )
    assert await store.write(upd) is True, "update of an existing record must return True"
    rec = await store.load(k)
    assert rec is not None
    expected = {**_TRICKY_FIELDS, "n": "2", "new": '"x"'}
    del expected["user"]
    _same_json(dict(rec.fields), expected, "update merges fields")
    # -- compare-and-set (Write.expect) ------------------------------------
    cas = _write(k, {"n": "3"}, create=False, expect=("n", "2"))
    assert await store.write(cas) is True, "an update whose expectation holds is written"
    assert await store.write(cas) is False, "an update whose expectation fails is refused"
    stale = _write(k, {"n": "9"}, create=False, expect=("absent-key", "1"))
    assert await store.write(stale) is False, "an expected field that is missing fails"
    rec = await store.load(k)
    assert rec is not None
    expected["n"] = "3"
    _same_json(dict(rec.fields), expected, "a refused compare-and-set changes nothing")
    # -- a create never overwrites a live record (an app's genid may repeat) --
    assert await store.write(_write(k, {"only": "1"}, user_id="mallory")) is False, (
        "a create over a live record must return False"
    )
    rec = await store.load(k)
    assert rec is not None
    assert rec.user_id is None, "a create must not take over a live record"
    _same_json(dict(rec.fields), expected, "a refused create changes nothing")
    # -- update never resurrects ------------------------------------------
    gone = _key("gone")
    assert await store.write(_write(gone, {"a": "1"}, create=False)) is False, (
        "an update of a missing record must return False"
    )
    assert await store.load(gone) is None, "an update must not create a record"
    assert await store.delete(k) is True, "delete must say the record was there"
    assert await store.load(k) is None, "delete must remove the record"
    assert await store.delete(k) is False, "delete must say the record was not there"
    assert await store.write(_write(k, {"a": "1"}, create=False)) is False
    assert await store.load(k) is None, "an update must not resurrect a deleted record"
    await store.delete(_key("never-existed"))  # no error
    # -- touch ------------------------------------------------------------
    t = _key("touch")
    now = time.time()
    await store.write(_write(t, {"a": "1"}, last_seen=now - 100))
    await store.touch(t, last_seen=now, expires_at=now + 900)
    rec = await store.load(t)
    assert rec is not None
    assert abs(rec.last_seen - now) < 0.01, "touch must set last_seen"
    assert rec.expires_at > now + 800, "touch must move the storage expiry"
    await store.write(_write(t, {"b": "2"}, create=False, last_seen=now - 50))
    rec = await store.load(t)
    assert rec is not None
    assert abs(rec.last_seen - now) < 0.01, (
        "an update must never move last_seen backwards (a clock step back)"
    )
    missing = _key("touch-missing")
    await store.touch(missing, last_seen=now, expires_at=now + 900)
    assert await store.load(missing) is None, "touch must not create a record"
    # -- expiry -------------------------------------------------------------
    e = _key("expiry")
    await store.write(_write(e, {"a": "1"}, expires_at=time.time() + 0.3))
    assert await store.load(e) is not None
    await asyncio.sleep(0.6)
    assert await store.load(e) is None, "an expired record must not be returned"
    assert await store.write(_write(e, {"b": "1"}, create=False)) is False, (
        "an update must not resurrect an expired record"
    )
    assert await store.write(_write(e, {"c": "1"})) is True, (
        "a create may replace an expired record"
    )
    rec = await store.load(e)
    assert rec is not None
    _same_json(dict(rec.fields), {"c": "1"}, "a create over an expired record starts afresh")
    # -- user index -----------------------------------------------------
    alice = f"alice-{time.time_ns()}"
    bob = f"bob-{time.time_ns()}"
    a1, a2, a3, b1 = (_key(n) for n in ("a1", "a2", "a3", "b1"))
    await store.write(_write(a1, {"x": "1"}, user_id=alice))
    await store.write(_write(a2, {"x": "2"}, user_id=alice, session_class="admin"))
    await store.write(_write(b1, {"x": "3", DEVICE_FIELD: '"Firefox \\u00e9"'}, user_id=bob))
    await store.write(_write(a3, {"x": "4"}))
    await store.write(_write(a3, {}, user_id=alice, create=False))  # login after the fact
    listed = await store.sessions_of(alice)
    assert {i.key for i in listed} == {a1, a2, a3}, "sessions_of must list the user's sessions"
    assert {i.session_class for i in listed} == {"user", "admin"}
    assert all(i.user_id == alice for i in listed)
    assert all(i.device is None for i in listed), "no device field: no device"
    [listed_b1] = await store.sessions_of(bob)
    assert listed_b1.device == "Firefox \u00e9", "sessions_of must show the device field"
    await store.delete(a1)
    assert {i.key for i in await store.sessions_of(alice)} == {a2, a3}, (
        "a deleted session must leave the user's listing"
    )
    # An id regeneration leaves a short-lived marker in place of the old
    # record: an update to no user, a shorter expiry, every old field removed.
    m = _key("marker")
    await store.write(_write(m, {"x": "5", "y": "6"}, user_id=alice))
    now = time.time()
    marker = _write(
        m,
        {"__donjon_moved": "1"},
        deleted=frozenset({"x", "y"}),
        user_id=None,
        expires_at=now + 0.3,
        create=False,
    )
    assert await store.write(marker) is True
    rec = await store.load(m)
    assert rec is not None
    assert dict(rec.fields) == {"__donjon_moved": "1"}, "an update must remove deleted fields"
    assert rec.user_id is None, "an update to no user must drop the user"
    assert rec.expires_at < now + 1, "an update must set a shorter expiry too"
    assert m not in {i.key for i in await store.sessions_of(alice)}, (
        "an update to no user must leave the user's listing"
    )
    await asyncio.sleep(max(0.0, now + 0.35 - time.time()))
    assert await store.load(m) is None, "an update's shorter expiry must end the record"
    assert await store.revoke_user(alice) == 2, "revoke_user must count the live sessions"
    assert await store.sessions_of(alice) == []
    assert await store.load(a2) is None
    assert await store.load(a3) is None
    assert await store.load(b1) is not None, "revoke_user must not touch other users"
    assert await store.revoke_user(f"nobody-{time.time_ns()}") == 0
    # -- epochs -----------------------------------------------------------
    cls = f"c{time.time_ns() % 10**9}"
    assert await store.raise_epoch(cls, 100.0) == 100.0
    assert await store.raise_epoch(cls, 50.0) == 100.0, "epochs must never move back"
    assert await store.raise_epoch(cls, 200.5) == 200.5
    assert (await store.epochs()).get(cls) == 200.5
    # -- concurrent field-level writers -------------------------------------
    c = _key("concurrent")
    await store.write(_write(c, {}))
    writers, rounds = 8, 20

    async def writer(i: int) -> None:
        for r in range(rounds):
            assert await store.write(_write(c, {f"w{i}": str(r)}, create=False))

    await asyncio.gather(*(writer(i) for i in range(writers)))
    rec = await store.load(c)
    assert rec is not None
    assert {k: json.loads(v) for k, v in rec.fields.items()} == {
        f"w{i}": rounds - 1 for i in range(writers)
    }, "concurrent writers of different keys must all persist"


async def check_async_store(make_store: Callable[[], Awaitable[AsyncStore]]) -> None:
    """Check that an async store fulfils the :class:`~donjon.stores.AsyncStore` contract.

    Args:
        make_store: An async factory returning an empty store that uses the
            system clock.

    Raises:
        AssertionError: The store breaks the contract; the message says how.
    """
    store = await make_store()
    try:
        await _async_contract(store)
    finally:
        await store.close()


def check_store(make_store: Callable[[], Store]) -> None:
    """Check that a sync store fulfils the :class:`~donjon.stores.Store` contract.

    It runs the whole contract (the same checks as :func:`check_async_store`)
    and then has several threads write different keys of one session at once.
    No pytest needed: failures are ``AssertionError``.

    Args:
        make_store: A factory returning an empty store that uses the system clock.
    """
    from ..stores._base import _ThreadedAsync

    store = make_store()
    try:
        asyncio.run(_async_contract(_ThreadedAsync(store, inline=False)))
        _threaded_writers(store)
    finally:
        store.close()


def _threaded_writers(store: Store, threads: int = 8, rounds: int = 25) -> None:
    key = _key("threads")
    store.write(_write(key, {"base": "0"}))
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def run(i: int) -> None:
        try:
            barrier.wait()
            for r in range(rounds):
                store.write(_write(key, {f"t{i}": str(r)}, create=False))
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert not errors, f"concurrent writers raised: {errors[:3]!r}"
    rec = store.load(key)
    assert rec is not None
    got = {k: json.loads(v) for k, v in rec.fields.items()}
    assert got == {"base": 0, **{f"t{i}": rounds - 1 for i in range(threads)}}, (
        f"threaded writers of different keys must all persist: {got}"
    )
