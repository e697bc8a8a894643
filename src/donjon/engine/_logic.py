"""The engine's logic, sans I/O: both faces (sync and async) drive this."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

from ..config import CookiePolicy, Timeouts, TwoCredentials
from ..core import KeyRing, TokenCodec, Verdict, VerifyResult
from ..core._ids import record_key
from ..errors import ConfigurationError
from ..events import Events, VerdictEvent, printable
from ..guard import Guard
from ..session import Session
from ..stores._base import DEVICE_FIELD, Record, SessionInfo, Write
from ..stores.cookie import Sealed, SealedCodec

if TYPE_CHECKING:
    from ..core._keyring import ClassKeys
    from ..typing import Clock

__all__ = ["Delete", "EngineCore", "Op", "Outcome", "Touch"]

log = logging.getLogger("donjon.engine")
audit_log = logging.getLogger("donjon.audit")
"""Session life-cycle and administration records (ASVS 16.3): logins, logouts,
id regenerations, per-user revocations, kill switches; INFO and WARNING."""

_POST_MAC: Final = frozenset({Verdict.VALID})
NO_SEALED_BINDING: Final = (
    "binding is not supported with CookieStore or two_credentials (a sealed cookie"
    " carries no binding): use a server-side store, or no binding"
)


@final
@dataclass(frozen=True, slots=True)
class Delete:
    """Store operation: delete a record.

    ``undo``: set when the record must still be there (an id regeneration
    moves a session to a new record, then deletes the old one). If it is
    gone, something ended the session meanwhile (a logout, "log out
    everywhere"): the record at ``undo`` (the new one) is deleted too and
    the operations report failure, so the ended session does not come back.
    """

    key: str
    undo: str | None = None
    marker: Write | None = None
    """Set by an id regeneration: once the record is deleted, create this
    short-lived "moved" marker under the old id's :func:`moved_key` (no data,
    no user: a record of its own, so no update or touch of the old record can
    land on it). A request that raced the regeneration with the old cookie
    then learns that its cookie was superseded, rather than telling the
    browser to clear the cookie it may by now hold anew. Best effort: a
    marker that cannot be written is logged, and the regeneration stands."""


@final
@dataclass(frozen=True, slots=True)
class Touch:
    """Store operation: refresh a record's last-seen time."""

    key: str
    last_seen: float
    expires_at: float


Op = Write | Delete | Touch


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What the response must tell the client about its cookie.

    ``token`` set: send it with ``max_age``. ``clear``: delete the cookie.
    Neither: send nothing.
    """

    token: str | None = None
    max_age: int | None = None
    clear: bool = False
    interrupted: bool = False
    """The record vanished during the request (revoked or logged out elsewhere)."""
    refresh_token: str | None = None
    """Two-credential mode: a new refresh credential to send."""
    refresh_max_age: int | None = None
    clear_refresh: bool = False
    """Two-credential mode: delete the refresh cookie."""
    retry_after: float | None = None
    """Set when the client is locked out: answer 429 with ``Retry-After``; no
    cookie is touched (a shared address must not wipe other users' cookies)."""

    def set_cookie_header(self, policy: CookiePolicy) -> str | None:
        """Return the ``Set-Cookie`` value for this outcome, or ``None``."""
        if self.token is not None:
            return policy.header(self.token, max_age=self.max_age if policy.persistent else None)
        if self.clear:
            return policy.clear_header()
        return None

    def set_cookie_headers(
        self, policy: CookiePolicy, refresh: CookiePolicy | None = None
    ) -> list[str]:
        """Return every ``Set-Cookie`` value for this outcome (session and refresh)."""
        out = []
        main = self.set_cookie_header(policy)
        if main is not None:
            out.append(main)
        if refresh is not None:
            if self.refresh_token is not None:
                age = self.refresh_max_age if refresh.persistent else None
                out.append(refresh.header(self.refresh_token, max_age=age))
            elif self.clear_refresh:
                out.append(refresh.clear_header())
        return out


NOTHING: Final = Outcome()
CLEAR: Final = Outcome(clear=True)
CLEAR_BOTH: Final = Outcome(clear=True, clear_refresh=True)
INTERRUPTED: Final = Outcome(clear=True, interrupted=True)
"""The record vanished while the request ran: the cookie is cleared."""
REFRESH_PURPOSE: Final = "donjon/refresh-credential"
"""Refresh credentials are bound to this purpose: presented as a session
cookie (to any engine sharing the key ring), one is a BINDING_MISMATCH."""
REFRESH_FIELD: Final = "__donjon_rt"
"""Reserved record field: issue time (ms) of the current refresh credential."""
MOVED_FIELD: Final = "__donjon_moved"
"""Reserved record field: the record is the marker an id regeneration left."""
MOVED_GRACE: Final = 60.0
"""Seconds a regenerated-away id stays recognisable as such (its marker's life)."""
LIMIT_GRACE: Final = 10.0
"""Seconds during which a new session is never ended by another login's limit."""
_MOVED_SUFFIX: Final = "\x00moved"


def moved_key(session_id: str) -> str:
    """The store key of the marker a regeneration leaves for ``session_id``.

    No session id contains NUL, so it never names a real session's record.
    """
    return record_key(session_id + _MOVED_SUFFIX)


SUPERSEDED: Final = "superseded"
"""The reason of an UNKNOWN verdict for the old cookie of a regenerated session:
the cookie is not cleared (the browser may already hold the new one) and the
guard does not count it."""


DEVICE_LABEL_MAX: Final = 200
"""The longest device label kept (characters of the User-Agent)."""


def device_label(user_agent: str) -> str:
    """A ``User-Agent`` made safe to store and show: printable ASCII, trimmed.

    Other characters become ``?``; at most :data:`DEVICE_LABEL_MAX` characters.
    """
    text = user_agent[:DEVICE_LABEL_MAX]
    if not text.isascii() or not text.isprintable():
        text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text.strip()


def session_ref(key: str) -> str:
    """A short, non-reversible reference to a record key, for logs."""
    return key[:12]


@final
class EngineCore:
    """Everything the engine decides, with no I/O.

    The faces call :meth:`verify`, then the store, then :meth:`from_record`;
    at the end :meth:`plan` lists the store operations and the cookie outcome.
    """

    __slots__ = (
        "_epochs_at",
        "codec",
        "cookie",
        "default_class",
        "epoch_refresh",
        "events",
        "guard",
        "keyring",
        "max_sessions_per_user",
        "now",
        "record_devices",
        "refresh_cookie",
        "rolling",
        "sealed",
        "timeouts",
        "two",
    )

    def __init__(
        self,
        *,
        keyring: KeyRing,
        timeouts: Timeouts,
        cookie: CookiePolicy,
        clock: Clock,
        genid: Callable[[], str] | None,
        skew: float,
        rolling: bool,
        default_class: str,
        epoch_refresh: float,
        events: Events,
        guard: Guard | None,
        sealed: bool = False,
        two: TwoCredentials | None = None,
        max_sessions_per_user: int | None = None,
        record_devices: bool = True,
    ) -> None:
        if default_class not in keyring.classes:
            raise ConfigurationError(
                f"default_class {default_class!r} has no keys; ring has {list(keyring.classes)}"
            )
        if epoch_refresh <= 0:
            raise ConfigurationError("epoch_refresh must be > 0 seconds")
        if max_sessions_per_user is not None:
            if type(max_sessions_per_user) is not int or max_sessions_per_user < 1:
                raise ConfigurationError("max_sessions_per_user must be an int >= 1, or None")
            if sealed and two is None:
                raise ConfigurationError(
                    "max_sessions_per_user needs a server-side store: CookieStore keeps no"
                    " list of a user's sessions"
                )
        self.max_sessions_per_user = max_sessions_per_user
        self.record_devices = record_devices
        """Whether a new record keeps the device (User-Agent) of the request that made it."""
        """At most this many sessions per user: a login ends the least recently
        used others beyond it. ``None``: no limit."""
        self.keyring = keyring
        self.codec = TokenCodec(keyring, clock=clock, skew=skew, genid=genid)
        self.timeouts = timeouts
        self.cookie = cookie
        self.rolling = rolling
        self.default_class = default_class
        self.epoch_refresh = epoch_refresh
        self.events = events
        self.guard = guard
        if sealed and two is not None:
            raise ConfigurationError(
                "the two-credential mode keeps refresh sessions in a server-side store, "
                "not in CookieStore"
            )
        self.two = two
        self.refresh_cookie = two.refresh_cookie(cookie) if two is not None else None
        self.sealed = (
            SealedCodec(keyring, clock=clock, skew=skew, cookie_name_length=len(cookie.cookie_name))
            if sealed or two is not None
            else None
        )
        self._epochs_at = float("-inf")
        self.now: Callable[[], float] = clock.time
        """Read the engine's clock (the clock's own method: no extra call)."""

    # -- loading --------------------------------------------------------
    def client_key(self, client: str | None) -> str | None:
        """The guard's key for a client address (the address when unguarded)."""
        return self.guard.key_of(client) if self.guard is not None else client

    def locked_out(self, client: str | None, now: float) -> Session | None:
        """Step 0: a LOCKED_OUT session when the client is locked out, else ``None``."""
        if self.guard is None:
            return None
        wait = self.guard.retry_after(client, now)
        if wait is None:
            return None
        session = self.fresh(None, verdict=Verdict.LOCKED_OUT)
        session.reason = "locked_out"
        session.retry_after = wait
        return session

    def finish(
        self,
        session: Session,
        *,
        client: str | None,
        path: str | None,
        now: float,
        started: float | None = None,
    ) -> Session:
        """Count the verdict in the guard and emit its event."""
        if (
            self.guard is not None
            and session.reason is not SUPERSEDED
            and self.guard.record(client, session.verdict, now)
        ):
            log.warning("donjon guard: client %s locked out", printable(client))
        events = self.events
        log_it = events.should_log(session.verdict, client, now)
        if log_it or events._hooks:  # else nobody would see the event: not built
            duration = time.perf_counter() - started if started is not None else None
            events.deliver(
                self.event(session, client=client, path=path, now=now, duration=duration),
                log_it=log_it,
            )
        return session

    def admit(
        self,
        token: object,
        binding: bytes | str | None,
        client: str | None,
        now: float,
        *,
        epochs_read: bool = False,
    ) -> Session | VerifyResult | None:
        """Steps 0-6 of the pipeline, without I/O.

        Returns the decided session (locked out, no cookie, a bad cookie, or
        a whole session from a sealed cookie), not yet counted by
        :meth:`finish`; or the VALID result whose record is to be read next;
        or ``None`` when the shared epochs must be re-read before a MAC-valid
        token can be trusted (then call again). Only a token that passed its
        MAC can ask for the epochs, so a forged cookie never causes store I/O.
        ``epochs_read``: they were just read; never ask again.
        """
        if self.guard is not None:
            locked = self.locked_out(client, now)
            if locked is not None:
                return locked
        if binding is not None and self.sealed is not None:
            raise ConfigurationError(NO_SEALED_BINDING)
        if token is None:
            return self.fresh(None)
        if self.two is not None:
            session = self.load_access(token, now)
            if (
                session.verdict is Verdict.VALID
                and not epochs_read
                and now - self._epochs_at >= self.epoch_refresh
            ):
                return None  # the kill switch must reach access credentials too
            return session
        if self.sealed is not None:
            return self.load_sealed(token, now)
        result = self.codec.verify(token, binding=binding, now=now)
        if result.verdict is not Verdict.VALID:
            return self.fresh(result)
        if not epochs_read and now - self._epochs_at >= self.epoch_refresh:
            return None
        return result

    def verify(self, token: object, binding: bytes | str | None, now: float) -> VerifyResult:
        """Run steps 1-6 of the pipeline: no store involved."""
        return self.codec.verify(token, binding=binding, now=now)

    def epochs_stale(self, result: VerifyResult, now: float) -> bool:
        """Whether shared epochs must be re-read before trusting ``result``.

        Only a token that passed its MAC can be affected, so forged and
        malformed cookies never cause a store call.
        """
        return result.verdict in _POST_MAC and now - self._epochs_at >= self.epoch_refresh

    def apply_epochs(self, epochs: dict[str, float], now: float) -> None:
        """Adopt epochs read from the shared store."""
        for cls, epoch in epochs.items():
            if self.keyring.get(cls) is not None:
                self.keyring.set_epoch(cls, epoch)
        self._epochs_at = now

    def fresh(
        self, result: VerifyResult | Sealed | None, *, verdict: Verdict | None = None
    ) -> Session:
        """Return a new empty session carrying the verdict of what was presented."""
        v = verdict if verdict is not None else (result.verdict if result else Verdict.ABSENT)
        return Session(
            session_class=self.default_class,
            verdict=v,
            reason=result.reason if result else "",
            key_id=result.key_id if result else None,
        )

    def from_record(
        self, result: VerifyResult, token: str, record: Record | None, now: float
    ) -> tuple[Session, list[Op]]:
        """Turn a signature-valid token and its record into a session (step 7)."""
        sid = result.session_id or ""
        key = record_key(sid)
        if record is None:
            return self.fresh(result, verdict=Verdict.UNKNOWN), []
        if record.session_class != result.session_class:
            # Never adopt a record under another class's keys.
            return self.fresh(result, verdict=Verdict.UNKNOWN), []
        ck = self.keyring.get(record.session_class)
        if ck is not None and round(record.created_at * 1000) < ck.epoch_ms:  # see _killed
            return self._revoked(result), []
        idle = self.timeouts.idle
        if idle is not None and now - record.last_seen > idle:
            return self.fresh(result, verdict=Verdict.IDLE_EXPIRED), [Delete(key)]
        try:
            data = {k: json.loads(v) for k, v in record.fields.items()}
            data.pop(DEVICE_FIELD, None)  # bookkeeping, not session data
        except (ValueError, TypeError):
            log.error(  # noqa: TRY400 - no traceback: the record, not the code, is at fault
                "session record %s cannot be decoded; treated as missing", key[:12]
            )
            return self.fresh(result, verdict=Verdict.UNKNOWN), []
        session = Session(
            data=data,
            raw=record.fields,
            session_id=sid,
            session_class=record.session_class,
            user_id=record.user_id,
            verdict=Verdict.VALID,
            key_id=result.key_id,
            token=token,
            created_at=record.created_at,
            last_seen=record.last_seen,
            expires_at=result.expires_at,
        )
        if ck is not None and ck.current != result.key_id:
            # Signed with an older key still in its grace period: re-sign it.
            session.reissue()
        return session, []

    def missing(self, result: VerifyResult, marker: Record | None) -> Session:
        """The session of a signature-valid token whose record is gone (step 7).

        ``marker``: what the store holds at the id's :func:`moved_key`. With
        a marker, the id was regenerated moments ago (a request racing a
        login): UNKNOWN with reason ``superseded``, and the cookie is left
        alone. Either way nothing of the old session is served.
        """
        session = self.fresh(result, verdict=Verdict.UNKNOWN)
        if marker is not None and MOVED_FIELD in marker.fields:
            session.reason = SUPERSEDED
        return session

    @staticmethod
    def moved_probe(session: Session) -> str | None:
        """After a commit found its record gone: the marker key to look for, if any.

        Only for a plain update of an existing session (a request that loaded
        the session before a regeneration moved it): with a marker there, the
        update is dropped without clearing the cookie.
        """
        if session.id is None or session.life_changed:
            return None
        return moved_key(session.id)

    @staticmethod
    def is_marker(record: Record | None) -> bool:
        """Whether a record read at a :func:`moved_key` is a regeneration's marker."""
        return record is not None and MOVED_FIELD in record.fields

    @staticmethod
    def _killed(ck: ClassKeys | None, created_at: float) -> bool:
        """Whether a session created at ``created_at`` predates its class epoch.

        Checked on the session's creation time, not only on its token's: a
        token signed anew after the kill (rolling, a key rotation, an id
        regeneration in a process that had not yet seen the epoch) must not
        resurrect a killed session.
        """
        return ck is not None and round(created_at * 1000) < ck.epoch_ms

    def _revoked(self, result: VerifyResult | Sealed) -> Session:
        session = self.fresh(result, verdict=Verdict.REVOKED)
        session.reason = "class_epoch"
        return session

    def event(
        self,
        session: Session,
        *,
        client: str | None,
        path: str | None,
        now: float,
        duration: float | None = None,
    ) -> VerdictEvent:
        """Build the verdict event of a loaded session."""
        ref = session_ref(record_key(session.id)) if session.id else None
        return VerdictEvent(
            verdict=session.verdict,
            reason=session.reason,
            session_class=session.session_class if session.verdict is Verdict.VALID else None,
            key_id=session.key_id,
            client=client,
            path=path,
            session_ref=ref,
            time=now,
            duration=duration,
        )

    # -- two-credential mode -----------------------------------------------
    def load_access(self, token: object, now: float) -> Session:
        """Check an access credential: a seal, no store call."""
        if self.sealed is None:  # pragma: no cover - the faces check the mode
            raise RuntimeError("not an engine in a sealed mode")
        res = self.sealed.unseal(token, now=now)
        if res.verdict is Verdict.EXPIRED:
            session = self.fresh(res)
            session.reason = "access_expired"
            return session
        if res.verdict is not Verdict.VALID or res.payload is None:
            return self.fresh(res)
        p = res.payload
        data, sid, created, absolute_at = p.get("d"), p.get("i"), p.get("c"), p.get("x")
        if (
            p.get("a") != 1
            or not isinstance(data, dict)
            or not isinstance(sid, str)
            or not isinstance(created, (int, float))
            or not isinstance(absolute_at, (int, float))
        ):
            return self.fresh(res, verdict=Verdict.MALFORMED)
        ck = self.keyring.get(res.session_class or self.default_class)
        if self._killed(ck, float(created)):
            return self._revoked(res)
        user = p.get("u")
        session = Session(
            data=data,
            session_id=sid,
            session_class=res.session_class or self.default_class,
            user_id=user if isinstance(user, str) else None,
            verdict=Verdict.VALID,
            key_id=res.key_id,
            token=token if isinstance(token, str) else None,
            created_at=float(created),
            last_seen=now,
            expires_at=float(absolute_at),
        )
        session.access_expires_at = res.expires_at
        if ck is not None and ck.current != res.key_id:
            session.reissue()
        return session

    def _access_seal(
        self,
        *,
        sid: str,
        session_class: str,
        user_id: str | None,
        created: float,
        absolute_at: float,
        data: dict[str, object],
        access_until: float,
        now: float,
    ) -> str:
        if self.sealed is None:  # pragma: no cover - the faces check the mode
            raise RuntimeError("not an engine in a sealed mode")
        payload = {"a": 1, "i": sid, "u": user_id, "c": created, "x": absolute_at, "d": data}
        return self.sealed.seal(
            payload, session_class=session_class, ttl=max(0.001, access_until - now), now=now
        )

    def plan_access(
        self, session: Session, *, presented: bool, now: float
    ) -> tuple[list[Op], Outcome]:
        """Commit in the two-credential mode: store writes plus both cookies."""
        if self.two is None:  # pragma: no cover - the faces check the mode
            raise RuntimeError("not an engine in the two-credential mode")
        ops: list[Op] = []
        old_key = record_key(session.id) if session.id is not None else None
        destroyed = session.destroyed
        if destroyed:
            ops.extend(self._doomed(session))
            if not session.modified:
                return ops, (CLEAR_BOTH if presented or old_key else NOTHING)
            # Keys set after destroy(): a brand-new session (the old one is gone).
        if destroyed or session.is_new:
            if not session.modified:
                return ops, (CLEAR if presented else NOTHING)
            sid = self.codec.new_session_id()
            created = session.created_at if session.created_at is not None else now
            absolute_at = created + self.timeouts.absolute
            if absolute_at <= now:
                return ops, CLEAR_BOTH
            refresh = self.codec.issue(
                session_class=session.session_class,
                ttl=absolute_at - now,
                session_id=sid,
                binding=REFRESH_PURPOSE,
                now=now,
            )
            fields = self._new_fields(session)
            fields[REFRESH_FIELD] = str(round(now * 1000))  # the token's own rounding
            ops.append(
                Write(
                    key=record_key(sid),
                    fields=fields,
                    session_class=session.session_class,
                    user_id=session.user_id,
                    created_at=created,
                    last_seen=now,
                    expires_at=self._store_expiry(absolute_at, now),
                    create=True,
                )
            )
            if session.regenerated and old_key is not None and not destroyed:
                # Written first, deleted second: a store failure in between
                # leaves the old session alive, never the user with none.
                ops.append(Delete(old_key, undo=record_key(sid)))
            access_until = min(absolute_at, now + self.two.access_ttl)
            token = self._access_seal(
                sid=sid,
                session_class=session.session_class,
                user_id=session.user_id,
                created=created,
                absolute_at=absolute_at,
                data=session.data(),
                access_until=access_until,
                now=now,
            )
            session.id, session.created_at, session.last_seen = sid, created, now
            session.expires_at, session.token = absolute_at, token
            session.access_expires_at = access_until
            max_age = int(absolute_at - now)
            return ops, Outcome(
                token=token, max_age=max_age, refresh_token=refresh, refresh_max_age=max_age
            )
        if old_key is None or session.id is None:  # pragma: no cover - is_new covers it
            raise RuntimeError("an existing session without an id")
        absolute_at = session.expires_at if session.expires_at is not None else now
        changed, deleted = session.changes()
        if changed or deleted or session.user_changed:
            changed.pop(REFRESH_FIELD, None)
            ops.append(
                Write(
                    key=old_key,
                    fields=changed,
                    deleted=deleted - {REFRESH_FIELD},
                    session_class=session.session_class,
                    user_id=session.user_id,
                    created_at=session.created_at if session.created_at is not None else now,
                    last_seen=now,
                    expires_at=self._store_expiry(absolute_at, now),
                    create=False,
                )
            )
        elif not session.wants_reissue:
            return ops, NOTHING
        access_until = session.access_expires_at or now
        token = self._access_seal(
            sid=session.id,
            session_class=session.session_class,
            user_id=session.user_id,
            created=session.created_at or now,
            absolute_at=absolute_at,
            data=session.data(),
            access_until=access_until,
            now=now,
        )
        session.token = token
        return ops, Outcome(token=token, max_age=int(absolute_at - now))

    def plan_refresh(
        self, result: VerifyResult, record: Record | None, now: float
    ) -> tuple[list[Op], Outcome, Verdict, str]:
        """Exchange a refresh credential: rotate it and issue a new access credential.

        Returns the store operations, the cookies, and the verdict and reason
        for the event. A refresh credential older than the current one is a
        reuse: the whole session is killed.
        """
        if self.two is None:  # pragma: no cover - the faces check the mode
            raise RuntimeError("not an engine in the two-credential mode")
        sid = result.session_id or ""
        key = record_key(sid)
        if record is None or record.session_class != result.session_class:
            return [], CLEAR_BOTH, Verdict.UNKNOWN, "no_record"
        if self._killed(self.keyring.get(record.session_class), record.created_at):
            return [Delete(key)], CLEAR_BOTH, Verdict.REVOKED, "class_epoch"
        idle = self.timeouts.idle
        if idle is not None and now - record.last_seen > idle:
            return [Delete(key)], CLEAR_BOTH, Verdict.IDLE_EXPIRED, "idle"
        try:
            current = int(record.fields[REFRESH_FIELD])
            data = {
                k: json.loads(v)
                for k, v in record.fields.items()
                if k != REFRESH_FIELD and k != DEVICE_FIELD
            }
        except (KeyError, ValueError, TypeError):
            return [], CLEAR_BOTH, Verdict.UNKNOWN, "undecodable"
        presented = round((result.issued_at or 0) * 1000)
        if presented < current:
            log.warning("refresh credential reused: session %s killed", key[:12])
            return [Delete(key)], CLEAR_BOTH, Verdict.REVOKED, "refresh_reuse"
        if presented > current:
            return [], CLEAR_BOTH, Verdict.FORGED, "refresh_ahead"
        absolute_at = result.expires_at or now
        issue_at = max(now, (current + 1) / 1000)
        refresh = self.codec.issue(
            session_class=record.session_class,
            ttl=max(0.001, absolute_at - issue_at),
            session_id=sid,
            binding=REFRESH_PURPOSE,
            now=issue_at,
        )
        access_until = min(absolute_at, now + self.two.access_ttl)
        token = self._access_seal(
            sid=sid,
            session_class=record.session_class,
            user_id=record.user_id,
            created=record.created_at,
            absolute_at=absolute_at,
            data=data,
            access_until=access_until,
            now=now,
        )
        write = Write(
            key=key,
            fields={REFRESH_FIELD: str(round(issue_at * 1000))},
            session_class=record.session_class,
            user_id=record.user_id,
            created_at=record.created_at,
            last_seen=now,
            expires_at=self._store_expiry(absolute_at, now),
            create=False,
            # Only if nobody rotated it since we read it: two concurrent uses
            # of one credential cannot both succeed.
            expect=(REFRESH_FIELD, record.fields[REFRESH_FIELD]),
        )
        max_age = int(absolute_at - now)
        return (
            [write],
            Outcome(token=token, max_age=max_age, refresh_token=refresh, refresh_max_age=max_age),
            Verdict.VALID,
            "",
        )

    # -- client-side (sealed cookie) mode --------------------------------
    def load_sealed(self, token: object, now: float) -> Session:
        """Open a sealed-cookie session (no store at all)."""
        if self.sealed is None:  # pragma: no cover - the faces check the mode
            raise RuntimeError("not an engine in a sealed mode")
        res = self.sealed.unseal(token, now=now)
        if res.verdict is not Verdict.VALID or res.payload is None:
            return self.fresh(res)
        p = res.payload
        data, sid = p.get("d"), p.get("i")
        last_seen, created = p.get("s"), p.get("c")
        if (
            not isinstance(data, dict)
            or not isinstance(sid, str)
            or not isinstance(last_seen, (int, float))
            or not isinstance(created, (int, float))
        ):
            return self.fresh(res, verdict=Verdict.MALFORMED)
        ck = self.keyring.get(res.session_class or self.default_class)
        if self._killed(ck, float(created)):
            return self._revoked(res)
        idle = self.timeouts.idle
        if idle is not None and now - last_seen > idle:
            return self.fresh(res, verdict=Verdict.IDLE_EXPIRED)
        user = p.get("u")
        session = Session(
            data=data,
            session_id=sid,
            session_class=res.session_class or self.default_class,
            user_id=user if isinstance(user, str) else None,
            verdict=Verdict.VALID,
            key_id=res.key_id,
            token=token if isinstance(token, str) else None,
            created_at=float(created),
            last_seen=float(last_seen),
            expires_at=res.expires_at,
        )
        if ck is not None and ck.current != res.key_id:
            session.reissue()
        return session

    def plan_sealed(self, session: Session, *, presented: bool, now: float) -> Outcome:
        """Re-seal the cookie when the session changed (no store operations)."""
        if self.sealed is None:  # pragma: no cover - the faces check the mode
            raise RuntimeError("not an engine in a sealed mode")
        if (session.destroyed or session.is_new) and not session.modified:
            return CLEAR if presented else NOTHING
        if session.destroyed or session.is_new:
            created = session.created_at if session.created_at is not None else now
            absolute_at = created + self.timeouts.absolute
            session.id = self.codec.new_session_id()
        else:
            created = session.created_at if session.created_at is not None else now
            absolute_at = session.expires_at or created + self.timeouts.absolute
            due = session.last_seen is None or now - session.last_seen >= self.timeouts.touch_every
            if not (session.modified or session.wants_reissue or self.rolling or due):
                return NOTHING
        ttl = absolute_at - now
        if ttl <= 0:
            return CLEAR
        payload = {
            "i": session.id,
            "u": session.user_id,
            "c": created,
            "s": now,
            "d": session.data(),
        }
        token = self.sealed.seal(payload, session_class=session.session_class, ttl=ttl, now=now)
        session.token, session.created_at, session.last_seen = token, created, now
        session.expires_at = absolute_at
        return Outcome(token=token, max_age=int(ttl))

    # -- committing -----------------------------------------------------
    def _store_expiry(self, absolute_at: float, now: float) -> float:
        # Records outlive their idle deadline by one more idle period, so a
        # late request is told IDLE_EXPIRED (a user) rather than UNKNOWN.
        idle = self.timeouts.idle
        return absolute_at if idle is None else min(absolute_at, now + 2 * idle)

    def _issue(
        self,
        session: Session,
        sid: str,
        absolute_at: float,
        now: float,
        binding: bytes | str | None,
    ) -> Outcome:
        ttl = absolute_at - now
        if ttl <= 0:
            return CLEAR
        token = self.codec.issue(
            session_class=session.session_class,
            ttl=ttl,
            session_id=sid,
            binding=binding,
            now=now,
        )
        session.token = token
        return Outcome(token=token, max_age=int(ttl))

    def settle(
        self, session: Session, *, presented: bool, binding: bytes | str | None, now: float
    ) -> tuple[list[Op], Outcome]:
        """The store operations and cookie outcome ending a request, in any mode.

        ``binding`` is the middleware's; ``session.bind_to`` overrides it.
        """
        if session.bind_to is not None:
            binding = session.bind_to
            if self.sealed is not None:
                raise ConfigurationError(NO_SEALED_BINDING)
        if self.two is not None:
            return self.plan_access(session, presented=presented, now=now)
        if self.sealed is not None:
            return [], self.plan_sealed(session, presented=presented, now=now)
        return self.plan(session, presented=presented, binding=binding, now=now)

    @staticmethod
    def audit(session: Session, old_id: str | None, outcome: Outcome) -> None:
        """Log what a saved commit did to the session's life cycle, if anything.

        Called after the store operations succeeded. Records carry the user,
        the class and short record references, never an id or a token.
        """
        if not session.life_changed:
            return
        if not audit_log.isEnabledFor(logging.INFO):
            return
        old = session_ref(record_key(old_id)) if old_id else None
        new = session_ref(record_key(session.id)) if session.id and outcome.token else None
        user = printable(session.user_id)
        if session.destroyed:
            audit_log.info("session ended (logout) ref=%s", old)
        if session.user_changed and session.user_id is not None:
            audit_log.info(
                "session login user=%s class=%s ref=%s (was %s)",
                user,
                session.session_class,
                new,
                old,
            )
        elif session.regenerated and not session.destroyed:
            audit_log.info(
                "session id regenerated user=%s class=%s ref=%s (was %s)",
                user,
                session.session_class,
                new,
                old,
            )

    def abandon(self, session: Session, *, presented: bool) -> tuple[list[Op], Outcome]:
        """What a failed request (a server error) still does, instead of :meth:`settle`.

        Nothing the request changed is saved (a half-done login is not kept),
        except what only lowers privilege: a destroyed session is still
        deleted and its cookie cleared. A bad cookie is still cleared, so the
        browser stops presenting it (and the guard stops counting it).
        """
        both = self.two is not None
        if session.destroyed:
            ops = [] if self.sealed is not None and not both else self._doomed(session)
            if presented or ops:
                return ops, CLEAR_BOTH if both else CLEAR
            return ops, NOTHING
        if session.verdict is not Verdict.VALID and presented and session.reason is not SUPERSEDED:
            return [], CLEAR_BOTH if both else CLEAR
        return [], NOTHING

    def untouched(self, session: Session, *, presented: bool) -> Outcome | None:
        """The outcome of a new session the request never touched, else ``None``.

        Most bad cookies end here: nothing to store, the cookie cleared. The
        answer is the one :meth:`plan` would give, without building a flow.
        """
        if session.untouched and self.two is None and self.sealed is None:
            return CLEAR if presented and session.reason is not SUPERSEDED else NOTHING
        return None

    def _new_fields(self, session: Session) -> dict[str, str]:
        """Every field of a new record: the session's keys, and its device label."""
        fields = session.all_fields()
        if self.record_devices and session.device:
            label = device_label(session.device)
            if label:
                fields[DEVICE_FIELD] = json.dumps(label)
        return fields

    def limits(self, session: Session, outcome: Outcome) -> bool:
        """Whether this commit (a login that went through) must enforce the limit."""
        return (
            self.max_sessions_per_user is not None
            and session.user_changed
            and session.user_id is not None
            and outcome.token is not None
            and session.id is not None
        )

    def excess(self, session: Session, infos: list[SessionInfo], now: float) -> list[str]:
        """The record keys to end so the user keeps ``max_sessions_per_user`` sessions.

        The session just logged in stays; of the others, the most recently
        used stay and the rest go. Sessions created in the last
        :data:`LIMIT_GRACE` seconds are spared: two logins racing each other
        must not end each other (the next login trims what they left).
        """
        limit = self.max_sessions_per_user
        if limit is None or session.id is None:
            return []
        keep = record_key(session.id)
        others = sorted(
            (i for i in infos if i.key != keep), key=lambda i: i.last_seen, reverse=True
        )
        return [i.key for i in others[limit - 1 :] if i.created_at < now - LIMIT_GRACE]

    def audit_limit(self, session: Session, ended: int) -> None:
        """Record the sessions a login ended for being over the limit."""
        if ended:
            audit_log.info(
                "sessions over the limit ended: user=%s limit=%s sessions=%d",
                printable(session.user_id),
                self.max_sessions_per_user,
                ended,
            )

    @staticmethod
    def _moved(session_id: str, session_class: str, now: float) -> Write:
        """The marker a regeneration leaves for the old id, for :data:`MOVED_GRACE` s.

        Only the marker field: no data and no user, so nothing of the old
        session can be served or listed.
        """
        return Write(
            key=moved_key(session_id),
            fields={MOVED_FIELD: "1"},
            session_class=session_class,
            user_id=None,
            created_at=now,
            last_seen=now,
            expires_at=now + MOVED_GRACE,
            create=True,
        )

    @staticmethod
    def _doomed(session: Session) -> list[Op]:
        """Deletes for a destroyed session: its record and a regenerated-away one."""
        ops: list[Op] = []
        if session.id is not None:
            ops.append(Delete(record_key(session.id)))
        if session.previous_id is not None and session.previous_id != session.id:
            ops.append(Delete(record_key(session.previous_id)))
        return ops

    def plan(
        self,
        session: Session,
        *,
        presented: bool,
        binding: bytes | str | None,
        now: float,
    ) -> tuple[list[Op], Outcome]:
        """List the store operations and cookie outcome that end a request.

        Args:
            session: The request's session.
            presented: Whether the request carried a session cookie at all.
            binding: The context to bind a newly issued token to.
            now: The commit time.
        """
        ops: list[Op] = []
        old_id = session.id
        old_key = record_key(old_id) if old_id is not None else None
        if session.reason is SUPERSEDED:
            presented = False  # the browser may hold the new cookie by now
        destroyed = session.destroyed
        if destroyed:
            ops.extend(self._doomed(session))
            if not session.modified:
                return ops, (CLEAR if presented or old_key else NOTHING)
            # Keys set after destroy(): a brand-new session (the old one is gone).

        if destroyed or session.is_new:
            if not session.modified and not session.regenerated:
                # An untouched new session costs nothing: no record, no cookie.
                return ops, (CLEAR if presented else NOTHING)
            sid = self.codec.new_session_id()
            created = session.created_at if session.created_at is not None else now
            absolute_at = created + self.timeouts.absolute
            if absolute_at <= now:
                return ops, CLEAR
            ops.append(
                Write(
                    key=record_key(sid),
                    fields=self._new_fields(session),
                    session_class=session.session_class,
                    user_id=session.user_id,
                    created_at=created,
                    last_seen=now,
                    expires_at=self._store_expiry(absolute_at, now),
                    create=True,
                )
            )
            if session.regenerated and old_key is not None and not destroyed:
                # Written first, deleted second: a store failure in between
                # leaves the old session alive, never the user with none.
                marker = self._moved(old_id or "", session.session_class, now)
                ops.append(Delete(old_key, undo=record_key(sid), marker=marker))
            session.id, session.created_at, session.last_seen = sid, created, now
            session.expires_at = absolute_at
            return ops, self._issue(session, sid, absolute_at, now, binding)

        if old_key is None or session.id is None:  # pragma: no cover - is_new covers it
            raise RuntimeError("an existing session without an id")
        absolute_at = (
            session.expires_at if session.expires_at is not None else now + self.timeouts.absolute
        )
        changed, deleted = session.changes()
        if changed or deleted or session.user_changed:
            ops.append(
                Write(
                    key=old_key,
                    fields=changed,
                    deleted=deleted,
                    session_class=session.session_class,
                    user_id=session.user_id,
                    created_at=session.created_at if session.created_at is not None else now,
                    last_seen=now,
                    expires_at=self._store_expiry(absolute_at, now),
                    create=False,
                )
            )
        elif session.last_seen is None or now - session.last_seen >= self.timeouts.touch_every:
            ops.append(Touch(old_key, now, self._store_expiry(absolute_at, now)))
        if session.wants_reissue or self.rolling:
            return ops, self._issue(session, session.id, absolute_at, now, binding)
        return ops, NOTHING
