"""The synchronous engine (for WSGI apps, scripts and the CLI)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, final

from ..core._ids import record_key
from ..errors import StoreUnavailable
from ..events import printable
from ..stores._base import SessionInfo, Store, Write
from . import _flows as flows
from ._logic import Delete, EngineCore, Outcome, audit_log, session_ref
from ._options import DEFAULT_GUARD, build_core

if TYPE_CHECKING:
    from ..config import CookiePolicy, Timeouts, TwoCredentials
    from ..core import KeyRing
    from ..events import EventHook, Events
    from ..guard import Guard
    from ..session import Session
    from ..typing import Clock

__all__ = ["Engine"]

log = logging.getLogger("donjon.engine")


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
        two_credentials: The two-credential mode (short-lived access cookie,
            long-lived refresh cookie); ``None`` for one session cookie.
        max_sessions_per_user: At most this many live sessions per user
            (ASVS 7.1.2): each login ends the user's least recently used
            other sessions beyond it (they become UNKNOWN). Best effort: a
            store failure while trimming is logged, and the login stands.
            ``None`` (default): no limit. Needs a server-side store.
        record_devices: Keep, with each new record, the device it was made
            on (the ``User-Agent`` the adapter passes to :meth:`load`, at
            most 200 printable characters), so ``sessions_of`` can show it
            (ASVS 3.3.4). ``False``: no device is ever stored.

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
        self.store = store

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

    def refresh(
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
        return self._drive(flow, "refresh")  # type: ignore[no-any-return]

    def load(
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
        flow = flows.load(self.core, token, binding=binding, client=client, path=path)
        session: Session = self._drive(flow, "load")
        session.device = device
        return session

    def commit(
        self, session: Session, *, presented: bool, binding: bytes | str | None = None
    ) -> Outcome:
        """Save what the request changed; return what to tell the client."""
        outcome = self.core.untouched(session, presented=presented)
        if outcome is not None:
            return outcome
        flow = flows.commit(self.core, session, presented=presented, binding=binding)
        outcome = self._drive(flow, "commit")
        if self.core.limits(session, outcome):
            self._limit(session)
        return outcome  # type: ignore[no-any-return]

    def _limit(self, session: Session) -> None:
        """End the user's sessions beyond ``max_sessions_per_user`` (best effort)."""
        user = session.user_id or ""
        try:
            keys = self.core.excess(session, self.store.sessions_of(user), self.core.now())
            ended = sum(self.store.delete(key) is not False for key in keys)
        except StoreUnavailable:
            log.warning(
                "session limit not enforced for user %s: store unavailable", printable(user)
            )
            return
        self.core.audit_limit(session, ended)

    def abandon(self, session: Session, *, presented: bool) -> Outcome:
        """End a failed request (a 5xx): save nothing but a logout; clear a bad cookie.

        See :meth:`EngineCore.abandon`. Raises :class:`~donjon.StoreUnavailable`
        when the store is down while deleting a destroyed session.
        """
        ops, outcome = self.core.abandon(session, presented=presented)
        if ops:
            try:
                self._answer(flows.RunOps(ops))
            except StoreUnavailable:
                self.core.events.store_error("commit")
                raise
        return outcome

    def _drive(self, flow: flows.Flow, operation: str) -> Any:
        reply: Any = None
        try:
            while True:
                reply = self._answer(flow.send(reply))
        except StopIteration as done:
            return done.value
        except StoreUnavailable:
            flow.close()
            self.core.events.store_error(operation)
            raise

    def _answer(self, request: flows.Request) -> Any:
        store = self.store
        if isinstance(request, flows.ReadRecord):
            return store.load(request.key)
        if isinstance(request, flows.ReadEpochs):
            return store.epochs()
        if isinstance(request, flows.Exchange):
            guard = self.core.guard
            if guard is not None:
                guard.exchange(request.now)
            return None
        for op in request.ops:
            if isinstance(op, Write):
                if not store.write(op):
                    return False  # nothing after a write that found no place
            elif isinstance(op, Delete):
                if store.delete(op.key) is False and op.undo is not None:
                    store.delete(op.undo)
                    return False
                if op.marker is not None:
                    try:
                        store.write(op.marker)
                    except StoreUnavailable:
                        log.warning("regeneration marker not written: store unavailable")
            else:
                store.touch(op.key, last_seen=op.last_seen, expires_at=op.expires_at)
        return True

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
        self.core.keyring.check_epoch(epoch)  # before it reaches the shared store
        stored = self.store.raise_epoch(session_class, epoch)
        self.core.keyring.set_epoch(session_class, stored)
        audit_log.warning(
            "kill switch: every %s session created before %.3f is revoked", session_class, stored
        )
        return stored

    def refresh_epochs(self) -> None:
        """Read the shared epochs now instead of waiting for ``epoch_refresh``."""
        self.core.apply_epochs(self.store.epochs(), self.core.now())

    def sessions_of(self, user_id: str) -> list[SessionInfo]:
        """List a user's live sessions."""
        return self.store.sessions_of(user_id)

    def revoke_user(self, user_id: str) -> int:
        """End every session of a user ("log out everywhere"); return how many."""
        n = self.store.revoke_user(user_id)
        audit_log.info("log out everywhere: user=%s sessions=%d", printable(user_id), n)
        return n

    def revoke_others(self, session: Session) -> int:
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
        for info in self.store.sessions_of(session.user_id):
            if info.key != keep and self.store.delete(info.key) is not False:
                n += 1
        audit_log.info("other sessions ended: user=%s sessions=%d", printable(session.user_id), n)
        return n

    def revoke(self, key: str) -> None:
        """End one session by its record key (from :meth:`sessions_of`)."""
        self.store.delete(key)
        audit_log.info("session revoked ref=%s", session_ref(key))

    def close(self) -> None:
        """Write the summaries of held-back log records, then close the store."""
        self.core.events.flush(self.core.now())
        self.store.close()
