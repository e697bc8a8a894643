"""The asynchronous engine (for ASGI apps)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, final

from ..core import Verdict
from ..core._ids import record_key
from ..errors import StoreUnavailable
from ..stores._base import AsyncStore, SessionInfo, Store, Write, as_async
from ._logic import Delete, EngineCore, Op, Outcome, Touch
from ._options import DEFAULT_GUARD, build_core

if TYPE_CHECKING:
    from ..config import CookiePolicy, Timeouts
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
        if self.core.sealed is not None:
            return self.core.plan_sealed(session, presented=presented, now=self.core.now())
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
