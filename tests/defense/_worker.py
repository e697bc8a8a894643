"""One application process of a simulated fleet, driven by tests/defense/test_fleet.py.

Run as ``python tests/defense/_worker.py '<config JSON>'``. The process builds
its own :class:`~donjon.engine.Engine` from the shared key file and its own
store client, exactly as one server of a fleet would, then answers one JSON
object per line on stdin with one JSON object per line on stdout:
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. The first line it
writes is ``{"ok": true, "ready": true, "pid": ...}``.

Config keys: ``keys`` (key file path), ``store`` (``redis`` | ``postgres`` |
``sqlite``), ``url``, ``prefix``, ``path`` (SQLite file), and optionally
``guard``: ``{"policy": {GuardPolicy fields}, "sync_interval": seconds or
null}`` (a :class:`~donjon.guard_redis.RedisGuardSync` on ``url`` when
``sync_interval`` is set).

Commands (``op``):

- ``issue`` {class, user, n}: log ``user`` in ``n`` times as a login request
  does (load, login, commit); returns ``tokens``.
- ``load`` {tokens, client?}: one request per token that reads the session
  (load, then commit); returns ``verdicts``, ``reissued`` (the new token the
  commit sent, or null) and ``users``.
- ``attack`` {client, n}: ``n`` requests with forged cookies; returns ``verdicts``.
- ``probe`` {client}: a request without a cookie; returns ``verdict`` and ``retry_after``.
- ``kill`` {class}: the kill switch; returns ``epoch``.
- ``rotate`` {class, grace?}: a new current key, the old one verifying for
  ``grace`` seconds (or until retired); saves the key file; returns ``key_id``.
- ``retire`` {class, key_id}: retire a key; saves the key file.
- ``reload``: rebuild the engine from the key file (what a deploy does);
  returns ``current`` (class -> key id).
- ``revoke_user`` {user}: log out everywhere; returns ``revoked``.
- ``quit``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import time
from typing import Any

from donjon import KeyRing
from donjon.engine import Engine
from donjon.guard import Guard, GuardPolicy


def build_store(config: dict[str, Any]) -> Any:
    kind = config["store"]
    if kind == "redis":
        from donjon.stores.redis import RedisStore

        return RedisStore.from_url(config["url"], prefix=config["prefix"])
    if kind == "postgres":
        from donjon.stores.postgres import PostgresStore

        return PostgresStore(config["url"], table_prefix=config["prefix"])
    if kind == "sqlite":
        from donjon.stores.sqlite import SQLiteStore

        return SQLiteStore(config["path"])
    raise ValueError(f"unknown store {kind!r}")


def build_guard(config: dict[str, Any]) -> Guard:
    spec = config.get("guard") or {}
    policy = GuardPolicy(**spec.get("policy", {}))
    interval = spec.get("sync_interval")
    if interval is None:
        return Guard(policy)
    from donjon.guard_redis import RedisGuardSync

    sync = RedisGuardSync.from_url(
        config["url"], policy=policy, prefix=config["prefix"], interval=interval, max_backoff=1.0
    )
    return Guard(policy, sync=sync)


class Worker:
    """The process's engine and the commands that drive it."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.store = build_store(config)
        self.guard = build_guard(config)
        self.engine = self._engine()

    def _engine(self) -> Engine:
        return Engine(
            keyring=KeyRing.from_file(self.config["keys"]),
            store=self.store,
            guard=self.guard,
        )

    def issue(self, cls: str, user: str, n: int) -> dict[str, Any]:
        tokens = []
        for _ in range(n):
            session = self.engine.load(None, client="127.0.0.1")
            session.login(user, session_class=cls)
            outcome = self.engine.commit(session, presented=False)
            tokens.append(outcome.token)
        return {"tokens": tokens}

    def load(self, tokens: list[str], client: str = "127.0.0.1") -> dict[str, Any]:
        verdicts, reissued, users = [], [], []
        for token in tokens:
            session = self.engine.load(token, client=client)
            outcome = self.engine.commit(session, presented=True)
            verdicts.append(session.verdict.value)
            reissued.append(outcome.token)
            users.append(session.user_id)
        return {"verdicts": verdicts, "reissued": reissued, "users": users}

    def attack(self, client: str, n: int) -> dict[str, Any]:
        verdicts = []
        for _ in range(n):
            forged = f"v1.user.k1.{secrets.token_urlsafe(32)}.1.2._.{secrets.token_hex(32)}"
            verdicts.append(self.engine.load(forged, client=client).verdict.value)
        return {"verdicts": verdicts}

    def probe(self, client: str) -> dict[str, Any]:
        session = self.engine.load(None, client=client)
        return {"verdict": session.verdict.value, "retry_after": session.retry_after}

    def kill(self, cls: str) -> dict[str, Any]:
        return {"epoch": self.engine.kill(cls)}

    def rotate(self, cls: str, grace: float | None = None) -> dict[str, Any]:
        ring = self.engine.keyring
        until = None if grace is None else time.time() + grace
        kid = ring.rotate(cls, grace_until=until)
        ring.save(self.config["keys"])
        return {"key_id": kid}

    def retire(self, cls: str, key_id: str) -> dict[str, Any]:
        ring = self.engine.keyring
        ring.retire(cls, key_id)
        ring.save(self.config["keys"])
        return {}

    def reload(self) -> dict[str, Any]:
        self.engine = self._engine()
        ring = self.engine.keyring
        return {"current": {c: ring.current_key_id(c) for c in ring.classes}}

    def revoke_user(self, user: str) -> dict[str, Any]:
        return {"revoked": self.engine.revoke_user(user)}

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.pop("op")
        if "class" in request:
            request["cls"] = request.pop("class")
        method = getattr(self, op)
        return {"ok": True, **method(**request)}


def reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    worker = Worker(json.loads(sys.argv[1]))
    reply({"ok": True, "ready": True, "pid": os.getpid()})
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("op") == "quit":
            break
        try:
            reply(worker.handle(dict(request)))
        except Exception as exc:  # report it; the test decides
            logging.exception("worker command %r failed", request)
            reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    worker.engine.close()


if __name__ == "__main__":
    main()
