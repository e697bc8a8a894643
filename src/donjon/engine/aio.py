"""The asynchronous engine (for ASGI apps)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, final

from ..core import VerifyResult
from ..core._ids import record_key
from ..errors import StoreUnavailable
from ..events import printable
from ..session import Session
from ..stores._base import AsyncStore, Record, SessionInfo, Store, Write, as_async
from . import _flows as flows
from ._logic import (
    INTERRUPTED,
    NOTHING,
    Delete,
    EngineCore,
    Op,
    Outcome,
    audit_log,
    moved_key,
    session_ref,
)
from ._options import DEFAULT_GUARD, build_core

if TYPE_CHECKING:
    from ..config import CookiePolicy, Timeouts, TwoCredentials
    from ..core import KeyRing
    from ..events import EventHook, Events
    from ..guard import Guard
    from ..typing import Clock

__all__ = ["AsyncEngine"]

log = logging.getLogger("donjon.engine")


def _first_step(flow: flows.Flow) -> tuple[flows.Request | None, Any]:
    """Run a flow to its first I/O request: ``(request, None)``, or ``(None, result)``.

    Most requests (a bad cookie, an untouched session) need no I/O at all:
    they end here, without entering a coroutine that awaits the store.
    """
    try:
        return flow.send(None), None
    except StopIteration as done:
        return None, done.value


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
        max_sessions_per_user: int | None = None,
        record_devices: bool = True,
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
            max_sessions_per_user=max_sessions_per_user,
            record_devices=record_devices,
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
        refresh credential, or both cookies cleared; for a locked-out
        client, an outcome with ``retry_after`` set and no cookie touched
        (answer 429). A refresh credential
        used a second time kills its whole session. Never raises for client
        input; raises :class:`~donjon.StoreUnavailable` when the store is down.
        """
        flow = flows.refresh(self.core, token, client=client, path=path)
        request, value = _first_step(flow)
        if request is None:
            return value  # type: ignore[no-any-return]
        return await self._run(flow, request, "refresh")  # type: ignore[no-any-return]

    async def load(
        self,
        token: str | bytes | None,
        *,
        binding: bytes | str | None = None,
        client: str | None = None,
        path: str | None = None,
        device: str | None = None,
    ) -> Session:
        """Return the session for a presented token (``None``: no cookie).

        ``device``: the request's ``User-Agent``, recorded with a session
        created by this request (see ``record_devices``).

        Never raises for anything the client sent. Raises
        :class:`~donjon.StoreUnavailable` when the store is down.
        """
        core = self.core
        guard = core.guard
        if guard is not None and guard.sync is not None:
            # A fleet guard may need an exchange first: the full flow.
            session = await self._flow_load(token, binding, client, path)
            session.device = device
            return session
        # The same steps as flows.load, awaited directly: no generator to
        # drive for the commonest requests (a bad cookie, one record read).
        started = time.perf_counter()
        now = core.now()
        if guard is not None:
            client = guard.key_of(client)
        step = core.admit(token, binding, client, now)
        if step is None:  # the shared epochs are due: the full flow reads them
            session = await self._flow_load(token, binding, client, path)
            session.device = device
            return session
        if isinstance(step, VerifyResult):  # (not isinstance Session: an ABC check)
            sid = step.session_id or ""
            try:
                record = await self.store.load(record_key(sid))
                marker = None if record is not None else await self.store.load(moved_key(sid))
            except StoreUnavailable:
                core.events.store_error("load")
                raise
            if record is None:  # gone; regenerated moments ago if a marker is there
                session = core.missing(step, marker)
            else:
                session, ops = core.from_record(step, flows.token_text(token), record, now)
                if ops:
                    await self._ops(ops, "load")
        else:
            session = step
        session = core.finish(session, client=client, path=path, now=now, started=started)
        session.device = device
        return session

    async def _flow_load(
        self,
        token: str | bytes | None,
        binding: bytes | str | None,
        client: str | None,
        path: str | None,
    ) -> Session:
        flow = flows.load(self.core, token, binding=binding, client=client, path=path)
        request, value = _first_step(flow)
        if request is None:
            return value  # type: ignore[no-any-return]
        return await self._run(flow, request, "load")  # type: ignore[no-any-return]

    async def commit(
        self, session: Session, *, presented: bool, binding: bytes | str | None = None
    ) -> Outcome:
        """Save what the request changed; return what to tell the client."""
        core = self.core
        outcome = core.untouched(session, presented=presented)
        if outcome is not None:
            return outcome
        # flows.commit, awaited directly.
        old_id = session.id
        ops, outcome = core.settle(session, presented=presented, binding=binding, now=core.now())
        if ops and not await self._ops(ops, "commit"):
            probe = core.moved_probe(session)
            if probe is not None and core.is_marker(await self._read(probe, "commit")):
                return NOTHING  # an update that raced a regeneration: dropped quietly
            return INTERRUPTED
        if session.life_changed:
            core.audit(session, old_id, outcome)
            if core.limits(session, outcome):
                await self._limit(session)
        return outcome

    async def _limit(self, session: Session) -> None:
        """End the user's sessions beyond ``max_sessions_per_user`` (best effort)."""
        user = session.user_id or ""
        try:
            keys = self.core.excess(session, await self.store.sessions_of(user), self.core.now())
            ended = 0
            for key in keys:
                ended += await self.store.delete(key) is not False
        except StoreUnavailable:
            log.warning(
                "session limit not enforced for user %s: store unavailable", printable(user)
            )
            return
        self.core.audit_limit(session, ended)

    async def abandon(self, session: Session, *, presented: bool) -> Outcome:
        """End a failed request (a 5xx): save nothing but a logout; clear a bad cookie.

        See :meth:`EngineCore.abandon`. Raises :class:`~donjon.StoreUnavailable`
        when the store is down while deleting a destroyed session.
        """
        ops, outcome = self.core.abandon(session, presented=presented)
        if ops:
            await self._ops(ops, "commit")
        return outcome

    async def _read(self, key: str, operation: str) -> Record | None:
        """``store.load``, telling the hooks when the store fails."""
        try:
            return await self.store.load(key)
        except StoreUnavailable:
            self.core.events.store_error(operation)
            raise

    async def _run(self, flow: flows.Flow, request: flows.Request, operation: str) -> Any:
        store = self.store
        try:
            while True:
                # The commonest requests are awaited here, one frame less.
                if request.__class__ is flows.ReadRecord:
                    reply = await store.load(request.key)
                else:
                    reply = await self._answer(request)
                request = flow.send(reply)
        except StopIteration as done:
            return done.value
        except StoreUnavailable:
            flow.close()
            self.core.events.store_error(operation)
            raise

    async def _answer(self, request: flows.Request) -> Any:
        store = self.store
        if isinstance(request, flows.ReadRecord):
            return await store.load(request.key)
        if isinstance(request, flows.ReadEpochs):
            return await store.epochs()
        if isinstance(request, flows.Exchange):
            guard = self.core.guard
            if guard is not None:
                await asyncio.to_thread(guard.exchange, request.now)
            return None
        return await self._apply(request.ops)

    async def _apply(self, ops: list[Op]) -> bool:
        """Run store operations in order; whether all of them found their records.

        Stops at a write that found no place (an update of a vanished record,
        a create over a live one); a :class:`Delete` with ``undo`` whose
        record is gone deletes ``undo`` too. A :class:`Delete` with a
        ``marker`` writes it afterwards (best effort).
        """
        store = self.store
        for op in ops:
            if isinstance(op, Write):
                if not await store.write(op):
                    return False
            elif isinstance(op, Delete):
                if await store.delete(op.key) is False and op.undo is not None:
                    await store.delete(op.undo)
                    return False
                if op.marker is not None:
                    try:
                        await store.write(op.marker)
                    except StoreUnavailable:
                        log.warning("regeneration marker not written: store unavailable")
            else:
                await store.touch(op.key, last_seen=op.last_seen, expires_at=op.expires_at)
        return True

    async def _ops(self, ops: list[Op], operation: str) -> bool:
        """:meth:`_apply`, telling the hooks when the store fails.

        Several steps (a login: write the new record, then delete the old one)
        run to the end even when the request is cancelled meanwhile, so a
        cancellation never leaves a half-moved session behind.
        """
        try:
            if len(ops) > 1:
                task = asyncio.ensure_future(self._apply(ops))
                try:
                    return await asyncio.shield(task)
                except asyncio.CancelledError:
                    # Nobody awaits the steps any more: report their failure.
                    task.add_done_callback(self._late_failure(operation))
                    raise
            return await self._apply(ops)
        except StoreUnavailable:
            self.core.events.store_error(operation)
            raise

    def _late_failure(self, operation: str) -> Callable[[asyncio.Future[Any]], None]:
        """A callback that logs (and tells the hooks) a failure nobody awaits."""

        def report(task: asyncio.Future[Any]) -> None:
            if task.cancelled() or task.exception() is None:
                return
            log.error(
                "session store failed while finishing a cancelled %s",
                operation,
                exc_info=task.exception(),
            )
            if isinstance(task.exception(), StoreUnavailable):
                self.core.events.store_error(operation)

        return report

    async def kill(self, session_class: str, *, at: float | None = None) -> float:
        """Revoke every token of a class issued before now; see ``Engine.kill``."""
        self.core.keyring.snapshot(session_class)
        epoch = self.core.now() if at is None else at
        self.core.keyring.check_epoch(epoch)  # before it reaches the shared store
        stored = await self.store.raise_epoch(session_class, epoch)
        self.core.keyring.set_epoch(session_class, stored)
        audit_log.warning(
            "kill switch: every %s session created before %.3f is revoked", session_class, stored
        )
        return stored

    async def refresh_epochs(self) -> None:
        """Read the shared epochs now."""
        self.core.apply_epochs(await self.store.epochs(), self.core.now())

    async def sessions_of(self, user_id: str) -> list[SessionInfo]:
        """List a user's live sessions."""
        return await self.store.sessions_of(user_id)

    async def revoke_user(self, user_id: str) -> int:
        """End every session of a user; return how many."""
        n = await self.store.revoke_user(user_id)
        audit_log.info("log out everywhere: user=%s sessions=%d", printable(user_id), n)
        return n

    async def revoke_others(self, session: Session) -> int:
        """End every other session of this session's user; return how many.

        For "log out my other devices" and after a password change (ASVS
        7.4.3): the current session stays. A session logged in but not saved
        yet (a reset in a fresh browser) ends all of its user's stored
        sessions; one without a user has no others (0).
        """
        if session.user_id is None:
            return 0
        # A session not saved yet (a password reset in a fresh browser) keeps
        # nothing: every stored session of the user is an "other".
        keep = record_key(session.id) if session.id is not None else None
        n = 0
        for info in await self.store.sessions_of(session.user_id):
            if info.key != keep and await self.store.delete(info.key) is not False:
                n += 1
        audit_log.info("other sessions ended: user=%s sessions=%d", printable(session.user_id), n)
        return n

    async def revoke(self, key: str) -> None:
        """End one session by its record key."""
        await self.store.delete(key)
        audit_log.info("session revoked ref=%s", session_ref(key))

    async def close(self) -> None:
        """Write the summaries of held-back log records, then close the store."""
        self.core.events.flush(self.core.now())
        await self.store.close()
