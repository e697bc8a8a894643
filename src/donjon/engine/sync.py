"""The synchronous engine (for WSGI apps, scripts and the CLI)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, final

from ..core import Verdict
from ..core._ids import record_key
from ..errors import StoreUnavailable
from ..stores._base import SessionInfo, Store, Write
from ._logic import Delete, EngineCore, Op, Outcome, Touch
from ._options import DEFAULT_GUARD, build_core

if TYPE_CHECKING:
    from ..config import CookiePolicy, Timeouts
    from ..core import KeyRing
    from ..events import EventHook, Events
    from ..guard import Guard
    from ..session import Session
    from ..typing import Clock

__all__ = ["Engine"]


@final
class Engine:
    """Loads a session from a presented token and commits it after the request.

    Steps 1-6 of the verdict pipeline (shape, key, MAC, time, epoch, binding)
    run before any store call; only a signature-valid token reaches the store.
    A token whose record is missing is UNKNOWN, and its id is never adopted:
    a fresh session is started instead. An untouched new session is never
    written, so a flood of bad cookies creates nothing.

    Args:
        keyring: Class keys and epochs.
        store: Where records live (:class:`~donjon.stores.SQLiteStore`, ...).
        timeouts: Idle and absolute timeouts.
        cookie: The cookie policy adapters apply.
        clock: Time source.
        genid: The application's own id generator (ids are still signed).
        skew: Tolerated clock skew, in seconds.
        guard: The brute-force guard (step 0). On by default with
            :class:`~donjon.guard.GuardPolicy` defaults; ``None`` disables it.
        rolling: Re-send the cookie (re-signed) on every response.
        default_class: Class of new sessions.
        epoch_refresh: Seconds between reads of the shared class epochs (kill
            switch propagation delay).
        events: Event hooks (or an :class:`~donjon.events.Events`).

    Raises:
        ConfigurationError: A bad option (raised here, at start-up).
    """

    def __init__(
        self,
        *,
        keyring: KeyRing,
        store: Store,
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
        self.store = store

    @property
    def keyring(self) -> KeyRing:
        """The key ring."""
        return self.core.keyring

    @property
    def cookie(self) -> CookiePolicy:
        """The cookie policy."""
        return self.core.cookie

    def load(
        self,
        token: str | bytes | None,
        *,
        binding: bytes | str | None = None,
        client: str | None = None,
        path: str | None = None,
    ) -> Session:
        """Return the session for a presented token (``None``: no cookie).

        Never raises for anything the client sent. Raises
        :class:`~donjon.StoreUnavailable` when the store is down.
        """
        started = time.perf_counter()
        core = self.core
        now = core.now()
        client = core.client_key(client)
        guard = core.guard
        if guard is not None and guard.due(now):
            guard.exchange(now)
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
                    core.apply_epochs(self.store.epochs(), now)
                    result = core.verify(token, binding, now)
                if result.verdict is not Verdict.VALID:
                    session = core.fresh(result)
                else:
                    text = token if isinstance(token, str) else token.decode("ascii")
                    record = self.store.load(record_key(result.session_id or ""))
                    session, ops = core.from_record(result, text, record, now)
                    self._run(ops)
            except StoreUnavailable:
                core.events.store_error("load")
                raise
        return core.finish(session, client=client, path=path, now=now, started=started)

    def commit(
        self, session: Session, *, presented: bool, binding: bytes | str | None = None
    ) -> Outcome:
        """Save what the request changed; return what to tell the client."""
        if self.core.sealed is not None:
            return self.core.plan_sealed(session, presented=presented, now=self.core.now())
        ops, outcome = self.core.plan(
            session, presented=presented, binding=binding, now=self.core.now()
        )
        try:
            if not self._run(ops):
                return Outcome(clear=True, interrupted=True)
        except StoreUnavailable:
            self.core.events.store_error("commit")
            raise
        return outcome

    def _run(self, ops: list[Op]) -> bool:
        ok = True
        for op in ops:
            if isinstance(op, Write):
                ok = self.store.write(op) and ok
            elif isinstance(op, Delete):
                self.store.delete(op.key)
            elif isinstance(op, Touch):
                self.store.touch(op.key, last_seen=op.last_seen, expires_at=op.expires_at)
        return ok

    # -- administration -------------------------------------------------
    def kill(self, session_class: str, *, at: float | None = None) -> float:
        """Revoke every token of a class issued before now, in every process.

        The epoch goes to the shared store; other processes pick it up within
        ``epoch_refresh`` seconds. No session record is touched.

        Returns:
            The class's new epoch.
        """
        self.core.keyring.snapshot(session_class)
        epoch = self.core.now() if at is None else at
        stored = self.store.raise_epoch(session_class, epoch)
        self.core.keyring.set_epoch(session_class, stored)
        return stored

    def refresh_epochs(self) -> None:
        """Read the shared epochs now instead of waiting for ``epoch_refresh``."""
        self.core.apply_epochs(self.store.epochs(), self.core.now())

    def sessions_of(self, user_id: str) -> list[SessionInfo]:
        """List a user's live sessions."""
        return self.store.sessions_of(user_id)

    def revoke_user(self, user_id: str) -> int:
        """End every session of a user ("log out everywhere"); return how many."""
        return self.store.revoke_user(user_id)

    def revoke(self, key: str) -> None:
        """End one session by its record key (from :meth:`sessions_of`)."""
        self.store.delete(key)

    def close(self) -> None:
        """Close the store."""
        self.store.close()
