"""The asynchronous engine (for ASGI apps)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, final

from ..core import Verdict
from ..core._ids import record_key
from ..errors import ConfigurationError, StoreUnavailable
from ..stores._base import AsyncStore, SessionInfo, Store, Write, as_async
from ._logic import CLEAR_BOTH, Delete, EngineCore, Op, Outcome, Touch
from ._options import DEFAULT_GUARD, build_core

if TYPE_CHECKING:
    from ..config import CookiePolicy, Timeouts, TwoCredentials
    from ..core import KeyRing
    from ..events import EventHook, Events
    from ..guard import Guard
    from ..session import Session
    from ..typing import Clock

__all__ = ["AsyncEngine"]


@final
class AsyncEngine:
    """The asynchronous twin of :class:`~donjon.engine.Engine`: same logic, awaited.

    Accepts an async store, or a sync one (a blocking store then runs in
    worker threads; :class:`~donjon.stores.MemoryStore` runs inline).
    """

    def __init__(
        self,
        *,
        keyring: KeyRing,
        store: AsyncStore | Store,
        timeouts: Timeouts | None = None,
        cookie: CookiePolicy | None = None,
        clock: Clock | None = None,
        genid: Callable[[], str] | None = None,
        skew: float = 5.0,
        rolling: bool = False,
        default_class: str = "user",
        epoch_refresh: float = 1.0,
        events: Events | Iterable[EventHook] | None = None,
        guard: Guard | None = DEFAULT_GUARD,
        two_credentials: TwoCredentials | None = None,
    ) -> None:
        self.core: EngineCore = build_core(
            keyring=keyring,
            timeouts=timeouts,
            cookie=cookie,
            clock=clock,
            genid=genid,
            skew=skew,
            rolling=rolling,
            default_class=default_class,
            epoch_refresh=epoch_refresh,
            events=events,
            guard=guard,
            store=store,
            two=two_credentials,
        )
        self.store: AsyncStore = as_async(store)

    @property
    def keyring(self) -> KeyRing:
        """The key ring."""
        return self.core.keyring

    @property
    def cookie(self) -> CookiePolicy:
        """The cookie policy."""
        return self.core.cookie

    @property
    def refresh_cookie(self) -> CookiePolicy | None:
        """The refresh cookie's policy in the two-credential mode, else ``None``."""
        return self.core.refresh_cookie

    def cookie_headers(self, outcome: Outcome) -> list[str]:
        """Every ``Set-Cookie`` value an outcome asks for (session and refresh)."""
        return outcome.set_cookie_headers(self.core.cookie, self.core.refresh_cookie)

    async def refresh(
        self,
        token: str | bytes | None,
        *,
        client: str | None = None,
        path: str | None = None,
    ) -> Outcome:
        """Two-credential mode: exchange a refresh credential (one store read, one write).

        Returns the outcome to send: a new access credential and a rotated
        refresh credential, or both cookies cleared. A refresh credential
        used a second time kills its whole session. Never raises for client
        input; raises :class:`~donjon.StoreUnavailable` when the store is down.
        """
        core = self.core
        if core.two is None:
            raise ConfigurationError("refresh() needs an engine with two_credentials")
        started = time.perf_counter()
        now = core.now()
        client = core.client_key(client)
        locked = core.locked_out(client, now)
        if locked is not None:
            core.finish(locked, client=client, path=path, now=now, started=started)
            return CLEAR_BOTH
        result = core.verify(token, None, now) if token is not None else None
        try:
            if result is not None and core.epochs_stale(result, now):
                core.apply_epochs(await self.store.epochs(), now)
                result = core.verify(token, None, now)
            if result is None or result.verdict is not Verdict.VALID:
                session = core.fresh(result)
                outcome = CLEAR_BOTH
            else:
                record = await self.store.load(record_key(result.session_id or ""))
                ops, outcome, verdict, reason = core.plan_refresh(result, record, now)
                if not await self._run(ops) and verdict is Verdict.VALID:
                    outcome, verdict, reason = CLEAR_BOTH, Verdict.UNKNOWN, "vanished"
                session = core.fresh(result, verdict=verdict)
                session.reason = reason
        except StoreUnavailable:
            core.events.store_error("refresh")
            raise
        core.finish(session, client=client, path=path, now=now, started=started)
        return outcome

    async def load(
        self,
        token: str | bytes | None,
        *,
        binding: bytes | str | None = None,
        client: str | None = None,
        path: str | None = None,
    ) -> Session:
        """Return the session for a presented token; see ``Engine.load``."""
        started = time.perf_counter()
        core = self.core
        now = core.now()
        client = core.client_key(client)
        guard = core.guard
        if guard is not None and guard.due(now):
            await asyncio.to_thread(guard.exchange, now)
        locked = core.locked_out(client, now)
        if locked is not None:
            return core.finish(locked, client=client, path=path, now=now, started=started)
        if token is None:
            session = core.fresh(None)
        elif core.two is not None:
            session = core.load_access(token, now)
        elif core.sealed is not None:
            session = core.load_sealed(token, now)
        else:
            result = core.verify(token, binding, now)
            try:
                if core.epochs_stale(result, now):
                    core.apply_epochs(await self.store.epochs(), now)
                    result = core.verify(token, binding, now)
                if result.verdict is not Verdict.VALID:
                    session = core.fresh(result)
                else:
                    text = token if isinstance(token, str) else token.decode("ascii")
                    record = await self.store.load(record_key(result.session_id or ""))
                    session, ops = core.from_record(result, text, record, now)
                    await self._run(ops)
            except StoreUnavailable:
                core.events.store_error("load")
                raise
        return core.finish(session, client=client, path=path, now=now, started=started)

    async def commit(
        self, session: Session, *, presented: bool, binding: bytes | str | None = None
    ) -> Outcome:
        """Save what the request changed; return what to tell the client."""
        if session.bind_to is not None:
            binding = session.bind_to
        if self.core.two is not None:
            ops, outcome = self.core.plan_access(session, presented=presented, now=self.core.now())
        elif self.core.sealed is not None:
            return self.core.plan_sealed(session, presented=presented, now=self.core.now())
        else:
            ops, outcome = self.core.plan(
                session, presented=presented, binding=binding, now=self.core.now()
            )
        try:
            if not await self._run(ops):
                return Outcome(clear=True, interrupted=True)
        except StoreUnavailable:
            self.core.events.store_error("commit")
            raise
        return outcome

    async def _run(self, ops: list[Op]) -> bool:
        ok = True
        for op in ops:
            if isinstance(op, Write):
                ok = await self.store.write(op) and ok
            elif isinstance(op, Delete):
                await self.store.delete(op.key)
            elif isinstance(op, Touch):
                await self.store.touch(op.key, last_seen=op.last_seen, expires_at=op.expires_at)
        return ok

    async def kill(self, session_class: str, *, at: float | None = None) -> float:
        """Revoke every token of a class issued before now; see ``Engine.kill``."""
        self.core.keyring.snapshot(session_class)
        epoch = self.core.now() if at is None else at
        stored = await self.store.raise_epoch(session_class, epoch)
        self.core.keyring.set_epoch(session_class, stored)
        return stored

    async def refresh_epochs(self) -> None:
        """Read the shared epochs now."""
        self.core.apply_epochs(await self.store.epochs(), self.core.now())

    async def sessions_of(self, user_id: str) -> list[SessionInfo]:
        """List a user's live sessions."""
        return await self.store.sessions_of(user_id)

    async def revoke_user(self, user_id: str) -> int:
        """End every session of a user; return how many."""
        return await self.store.revoke_user(user_id)

    async def revoke(self, key: str) -> None:
        """End one session by its record key."""
        await self.store.delete(key)

    async def close(self) -> None:
        """Close the store."""
        await self.store.close()
