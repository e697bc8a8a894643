"""What a request does, written once as generators; the faces do the I/O.

Each flow yields a *request* (read the epochs, read a record, run store
operations, exchange guard counts) and receives the face's answer. The sync
face answers with plain calls, the async face with awaits: one logic, two
faces, no duplicated decisions.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeAlias

from ..core import Verdict, VerifyResult
from ..core._ids import record_key
from ..errors import ConfigurationError
from ..session import Session
from ._logic import (
    CLEAR_BOTH,
    INTERRUPTED,
    NOTHING,
    REFRESH_PURPOSE,
    Delete,
    EngineCore,
    Op,
    Outcome,
    moved_key,
)

__all__ = [
    "Exchange",
    "Flow",
    "ReadEpochs",
    "ReadRecord",
    "RunOps",
    "commit",
    "load",
    "refresh",
    "token_text",
]


@dataclass(frozen=True, slots=True)
class ReadEpochs:
    """Answer with ``store.epochs()``."""


@dataclass(frozen=True, slots=True)
class ReadRecord:
    """Answer with ``store.load(key)``."""

    key: str


@dataclass(frozen=True, slots=True)
class RunOps:
    """Run the operations in order; answer whether all of them found their records
    (see :meth:`AsyncEngine._apply`)."""

    ops: list[Op]


@dataclass(frozen=True, slots=True)
class Exchange:
    """Run the guard's fleet exchange (``guard.exchange(now)``); answer ``None``."""

    now: float


Request: TypeAlias = ReadEpochs | ReadRecord | RunOps | Exchange
Flow: TypeAlias = Generator[Request, Any, Any]


def _verified(
    core: EngineCore, token: object, binding: bytes | str | None, now: float
) -> Generator[Request, Any, Any]:
    """Steps 1-6, re-run once with fresh epochs when a MAC-valid token needs them."""
    result = core.verify(token, binding, now)
    if core.epochs_stale(result, now):
        core.apply_epochs((yield ReadEpochs()), now)
        result = core.verify(token, binding, now)
    return result


def load(
    core: EngineCore,
    token: str | bytes | None,
    *,
    binding: bytes | str | None,
    client: str | None,
    path: str | None,
) -> Generator[Request, Any, Session]:
    """The verdict pipeline for one request: steps 0-7."""
    started = time.perf_counter()
    now = core.now()
    guard = core.guard
    if guard is not None:
        client = guard.key_of(client)
        if guard.sync is not None and guard.due(now):
            yield Exchange(now)
    step = core.admit(token, binding, client, now)
    if step is None:
        core.apply_epochs((yield ReadEpochs()), now)
        step = core.admit(token, binding, client, now, epochs_read=True)
    if isinstance(step, VerifyResult):
        sid = step.session_id or ""
        record = yield ReadRecord(record_key(sid))
        if record is None:  # was it regenerated moments ago?
            session = core.missing(step, (yield ReadRecord(moved_key(sid))))
        else:
            session, ops = core.from_record(step, token_text(token), record, now)
            if ops:
                yield RunOps(ops)
    elif step is None:  # pragma: no cover - admit() never asks again after epochs_read
        session = core.fresh(None, verdict=Verdict.UNKNOWN)
    else:
        session = step
    return core.finish(session, client=client, path=path, now=now, started=started)


def token_text(token: str | bytes | None) -> str:
    """A MAC-valid token as text (it is ASCII: the MAC covered it)."""
    if isinstance(token, bytes):
        return token.decode("ascii")
    return token or ""


def commit(
    core: EngineCore, session: Session, *, presented: bool, binding: bytes | str | None
) -> Generator[Request, Any, Outcome]:
    """Save what the request changed; decide the cookies."""
    old_id = session.id
    ops, outcome = core.settle(session, presented=presented, binding=binding, now=core.now())
    if ops and not (yield RunOps(ops)):
        probe = core.moved_probe(session)
        if probe is not None and core.is_marker((yield ReadRecord(probe))):
            return NOTHING  # an update that raced a regeneration: dropped quietly
        return INTERRUPTED
    core.audit(session, old_id, outcome)
    return outcome


def refresh(
    core: EngineCore, token: str | bytes | None, *, client: str | None, path: str | None
) -> Generator[Request, Any, Outcome]:
    """Two-credential mode: exchange a refresh credential."""
    if core.two is None:
        raise ConfigurationError("refresh() needs an engine with two_credentials")
    started = time.perf_counter()
    now = core.now()
    client = core.client_key(client)
    locked = core.locked_out(client, now)
    if locked is not None:
        core.finish(locked, client=client, path=path, now=now, started=started)
        return Outcome(retry_after=locked.retry_after)
    outcome = CLEAR_BOTH
    if token is None:
        session = core.fresh(None)
    else:
        result = yield from _verified(core, token, REFRESH_PURPOSE, now)
        if result.verdict is not Verdict.VALID:
            session = core.fresh(result)
        else:
            record = yield ReadRecord(record_key(result.session_id or ""))
            ops, outcome, verdict, reason = core.plan_refresh(result, record, now)
            if ops and not (yield RunOps(ops)) and verdict is Verdict.VALID:
                # The credential was rotated (or the session ended) since we
                # read it: a concurrent second use is a reuse like any other,
                # so the whole session dies (an attacker racing the user must
                # not keep it).
                yield RunOps([Delete(record_key(result.session_id or ""))])
                outcome, verdict, reason = CLEAR_BOTH, Verdict.REVOKED, "refresh_conflict"
            session = core.fresh(result, verdict=verdict)
            session.reason = reason
    core.finish(session, client=client, path=path, now=now, started=started)
    return outcome
