"""Django integration: ``request.session`` is the donjon session.

Replace ``django.contrib.sessions.middleware.SessionMiddleware`` in
``MIDDLEWARE`` with ``donjon.adapters.django.SessionMiddleware`` and name the
engine in the settings::

    MIDDLEWARE = [
        "django.middleware.security.SecurityMiddleware",
        "donjon.adapters.django.SessionMiddleware",
        ...
    ]
    DONJON_ENGINE = "myproject.sessions.engine"  # an Engine, or a function returning one

Optional settings: ``DONJON_TRUSTED_PROXIES`` (addresses or networks whose
``X-Forwarded-For`` is believed), ``DONJON_TRUST_UNIX_SOCKET`` (``True``:
a request without ``REMOTE_ADDR``, from a server on a Unix socket, comes
from a trusted proxy; see :class:`~donjon.adapters.Proxy`) and
``DONJON_BINDING`` (dotted path to a function of the request returning the
context sessions are bound to).

``request.session`` is a :class:`DjangoSession`: the donjon session with
Django's names where Django's own code uses them (``cycle_key()``,
``flush()``, ``aget()``, ``aflush()`` ...), so ``django.contrib.auth``'s
``login``/``logout`` and their async forms (``request.auser()`` too) work
unchanged. The two-credential mode is not served here: an engine with
``two_credentials`` is refused; wrap the WSGI application in
:class:`donjon.adapters.wsgi.SessionMiddleware` instead.
``django.contrib.sessions`` itself (its models, ``SESSION_ENGINE``,
``Client.session``) is not used. If ``django.contrib.admin`` is installed,
its check ``admin.E410`` (which looks for Django's own middleware by name)
can be silenced.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, ItemsView, KeysView, ValuesView
from datetime import UTC, datetime
from typing import Any, Final, final

from ..core import Verdict
from ..engine import AsyncEngine, Engine
from ..errors import ConfigurationError, MissingDependency, StoreUnavailable
from ..session import Session
from ._common import ERROR_BODIES, ClientResolver, Proxy, store_unavailable
from ._cookies import find_cookie
from .wsgi import SessionView, client_of, error_headers

try:
    from django.conf import settings  # type: ignore[import-untyped, unused-ignore]
    from django.core.exceptions import (  # type: ignore[import-untyped, unused-ignore]
        ImproperlyConfigured,
    )
    from django.core.signals import setting_changed  # type: ignore[import-untyped, unused-ignore]
    from django.http import HttpResponse  # type: ignore[import-untyped, unused-ignore]
    from django.utils.cache import patch_vary_headers  # type: ignore[import-untyped, unused-ignore]
    from django.utils.module_loading import (  # type: ignore[import-untyped, unused-ignore]
        import_string,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependency("django", "django") from exc

__all__ = ["DjangoSession", "SessionMiddleware", "engine_from_settings", "get_session"]

log = logging.getLogger("donjon.adapters")

_EXPIRED: Final = "Thu, 01 Jan 1970 00:00:00 GMT"

_AUTH_USER_KEY: Final = "_auth_user_id"
"""Where ``django.contrib.auth`` keeps the logged-in user's id (its ``SESSION_KEY``)."""

_ASYNC_ENGINE: Final = (
    "DONJON_ENGINE={value} gives an AsyncEngine; Django's middleware runs the "
    "synchronous donjon.engine.Engine"
)

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _forget_engines(*, setting: str, **_: Any) -> None:
    if setting == "DONJON_ENGINE":
        with _engines_lock:
            _engines.clear()


setting_changed.connect(_forget_engines, dispatch_uid="donjon.adapters.django")


def engine_from_settings() -> Engine:
    """Return the engine named by ``settings.DONJON_ENGINE``.

    The setting is an :class:`~donjon.engine.Engine`, or the dotted path of
    one, or of a function returning one. A dotted path is resolved once per
    process (a factory is called once), so every middleware instance shares
    the engine; ``override_settings`` of ``DONJON_ENGINE`` resolves it anew.

    Raises:
        ImproperlyConfigured: The setting is missing or names something else.
    """
    value = getattr(settings, "DONJON_ENGINE", None)
    if isinstance(value, Engine):
        return value
    if isinstance(value, AsyncEngine):
        raise ImproperlyConfigured(_ASYNC_ENGINE.format(value="an AsyncEngine"))
    if not isinstance(value, str) or not value:
        raise ImproperlyConfigured(
            "set DONJON_ENGINE to a donjon Engine or the dotted path of one "
            "(or of a function returning one), e.g. 'myproject.sessions.engine'"
        )
    with _engines_lock:
        engine = _engines.get(value)
        if engine is None:
            obj = import_string(value)
            if callable(obj) and not isinstance(obj, (Engine, AsyncEngine)):
                obj = obj()
            if isinstance(obj, AsyncEngine):
                raise ImproperlyConfigured(_ASYNC_ENGINE.format(value=repr(value)))
            if not isinstance(obj, Engine):
                raise ImproperlyConfigured(
                    f"DONJON_ENGINE={value!r} gave {type(obj).__name__}, not a donjon Engine"
                )
            _engines[value] = engine = obj
    return engine


def _binding_from_settings() -> Callable[[Any], str | bytes | None] | None:
    value = getattr(settings, "DONJON_BINDING", None)
    if value is None:
        return None
    fn = import_string(value) if isinstance(value, str) else value
    if not callable(fn):
        raise ImproperlyConfigured("DONJON_BINDING must name a function of the request")
    return fn  # type: ignore[no-any-return]


_MISSING: Any = object()

_NO_SAVE: Final = (
    "donjon saves the session once, when the response goes back through "
    "donjon.adapters.django.SessionMiddleware (only the keys changed); there is "
    "nothing to save before, and a new session has no session_key until then"
)

_NO_SET_EXPIRY: Final = (
    "donjon sessions have no per-session expiry: the idle and absolute timeouts "
    "are set on the engine (Engine(timeouts=Timeouts(idle=..., absolute=...))), and "
    "CookiePolicy(persistent=False) gives a cookie that ends with the browser"
)


class DjangoSession(SessionView):
    """What ``request.session`` is: the donjon session with Django's names.

    Django's own code (``django.contrib.auth``'s ``login``/``logout``,
    ``aget_user`` ...) calls the session by the names of Django's
    ``SessionBase``, sync and async; those that map onto donjon are here:

    * ``cycle_key()`` regenerates the id (keeping the data);
    * ``flush()`` (and ``clear()``) end the session: its record is deleted
      and the user dropped at commit. Keys set after it in the same request
      start a new session (new id, new cookie), so ``auth.login()`` switching
      users (flush, then set the auth keys) works;
    * ``session_key`` is the record's id (``None`` until first saved);
    * the test-cookie methods, ``get_expiry_age()``/``get_expiry_date()``
      (until the absolute timeout) and ``get_expire_at_browser_close()``
      (the cookie policy's ``persistent``);
    * the async variants (``aget``, ``aset``, ``aflush``, ``acycle_key`` ...).

    ``set_expiry()`` raises :class:`NotImplementedError`: timeouts are the
    engine's; so does ``save()``: the middleware commits the session with
    the response. ``login()``/``logout()`` set and end donjon's ``user_id``
    (used by "log out everywhere", ``sessions_of`` and
    ``max_sessions_per_user``). So does ``django.contrib.auth``: when its
    ``login()`` stores the user's id in the session (``_auth_user_id``),
    donjon's ``user_id`` becomes that id as text (a donjon login: the id is
    regenerated, the absolute timeout starts again); its ``logout()``
    flushes the session.
    """

    TEST_COOKIE_NAME: Final = "testcookie"
    TEST_COOKIE_VALUE: Final = "worked"

    def __init__(self, session: Session, *, engine: Engine | None = None) -> None:
        super().__init__(session)
        self._engine = engine

    @property
    def session_key(self) -> str | None:
        """The session record's id, or ``None`` for a session not saved yet."""
        return self.donjon.id

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if key == _AUTH_USER_KEY and value is not None:
            # Set by django.contrib.auth's login(). Logging in again as the
            # same user keeps the session, as Django does.
            user = str(value)
            if user and user != self.donjon.user_id:
                self.donjon.login(user)

    def cycle_key(self) -> None:
        """Give the session a new id at commit, keeping its data (as Django's)."""
        self.regenerate()

    def flush(self) -> None:
        """End the session: record deleted and user dropped at commit.

        Keys set afterwards in the same request start a new session.
        """
        self.clear()

    def is_empty(self) -> bool:
        """Whether the session holds no data."""
        return len(self.donjon) == 0

    def save(self, must_create: bool = False) -> None:
        """Not supported: the middleware commits the session with the response.

        Raises:
            NotImplementedError: Always, naming the donjon way.
        """
        raise NotImplementedError(_NO_SAVE)

    def has_key(self, key: str) -> bool:
        """Whether ``key`` is set (Django's spelling of ``key in session``)."""
        return key in self

    # -- the test cookie (Django's names and values) ---------------------
    def set_test_cookie(self) -> None:
        """Set Django's test key, to check on the next request that cookies work."""
        self[self.TEST_COOKIE_NAME] = self.TEST_COOKIE_VALUE

    def test_cookie_worked(self) -> bool:
        """Whether the test key set by :meth:`set_test_cookie` came back."""
        return self.get(self.TEST_COOKIE_NAME) == self.TEST_COOKIE_VALUE

    def delete_test_cookie(self) -> None:
        """Remove the test key."""
        del self[self.TEST_COOKIE_NAME]

    # -- expiry: the engine's timeouts ------------------------------------
    def _engine_for(self, what: str) -> Engine:
        if self._engine is None:
            raise RuntimeError(f"{what} needs the engine: this session was built without one")
        return self._engine

    def get_session_cookie_age(self) -> int:
        """The engine's absolute timeout in seconds (Django's ``SESSION_COOKIE_AGE``)."""
        return int(self._engine_for("get_session_cookie_age()").core.timeouts.absolute)

    def get_expiry_age(self) -> int:
        """Seconds until the session's absolute timeout.

        A new session, or one logged in during this request, gets the whole
        absolute timeout. The idle timeout may end the session sooner.
        """
        core = self._engine_for("get_expiry_age()").core
        expires = self.donjon.expires_at
        if expires is None or self.donjon.user_changed:
            return int(core.timeouts.absolute)
        return max(0, math.ceil(expires - core.now()))

    def get_expiry_date(self) -> datetime:
        """When the session's absolute timeout ends (an aware UTC datetime)."""
        core = self._engine_for("get_expiry_date()").core
        return datetime.fromtimestamp(core.now() + self.get_expiry_age(), tz=UTC)

    def get_expire_at_browser_close(self) -> bool:
        """Whether the cookie ends with the browser (``CookiePolicy(persistent=False)``)."""
        return not self._engine_for("get_expire_at_browser_close()").cookie.persistent

    def set_expiry(self, value: Any) -> None:
        """Not supported, except ``None`` (the default policy): timeouts are the engine's.

        Raises:
            NotImplementedError: For any value but ``None``.
        """
        if value is not None:
            raise NotImplementedError(_NO_SET_EXPIRY)

    # -- the async API Django's auth uses (nothing here waits) -------------
    async def aget(self, key: str, default: Any = None) -> Any:
        """Async :meth:`get`."""
        return self.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        """Async ``session[key] = value``."""
        self[key] = value

    async def asetdefault(self, key: str, value: Any) -> Any:
        """Async :meth:`setdefault`."""
        return self.setdefault(key, value)

    async def apop(self, key: str, default: Any = _MISSING) -> Any:
        """Async :meth:`pop`: ``KeyError`` for a missing key without a default."""
        if default is _MISSING:
            return self.pop(key)
        return self.pop(key, default)

    async def aupdate(self, other: Any) -> None:
        """Async :meth:`update`."""
        self.update(other)

    async def ahas_key(self, key: str) -> bool:
        """Async :meth:`has_key`."""
        return key in self

    async def akeys(self) -> KeysView[str]:
        """Async :meth:`keys`."""
        return self.keys()

    async def avalues(self) -> ValuesView[Any]:
        """Async :meth:`values`."""
        return self.values()

    async def aitems(self) -> ItemsView[str, Any]:
        """Async :meth:`items`."""
        return self.items()

    async def aclear(self) -> None:
        """Async :meth:`clear` (ends the session)."""
        self.clear()

    async def aflush(self) -> None:
        """Async :meth:`flush`."""
        self.flush()

    async def acycle_key(self) -> None:
        """Async :meth:`cycle_key`."""
        self.cycle_key()

    async def aset_test_cookie(self) -> None:
        """Async :meth:`set_test_cookie`."""
        self.set_test_cookie()

    async def atest_cookie_worked(self) -> bool:
        """Async :meth:`test_cookie_worked`."""
        return self.test_cookie_worked()

    async def adelete_test_cookie(self) -> None:
        """Async :meth:`delete_test_cookie`."""
        self.delete_test_cookie()

    async def aget_expiry_age(self) -> int:
        """Async :meth:`get_expiry_age`."""
        return self.get_expiry_age()

    async def aget_expiry_date(self) -> datetime:
        """Async :meth:`get_expiry_date`."""
        return self.get_expiry_date()

    async def aget_expire_at_browser_close(self) -> bool:
        """Async :meth:`get_expire_at_browser_close`."""
        return self.get_expire_at_browser_close()

    async def aset_expiry(self, value: Any) -> None:
        """Async :meth:`set_expiry` (not supported but for ``None``)."""
        self.set_expiry(value)

    async def asave(self, must_create: bool = False) -> None:
        """Async :meth:`save` (not supported)."""
        self.save(must_create)


def _answer(status: int, retry_after: float | None = None) -> Any:
    response = HttpResponse(ERROR_BODIES[status], status=status)
    for name, value in error_headers(status, retry_after):
        response.headers[name] = value
    return response


@final
class SessionMiddleware:
    """Put the donjon session in ``request.session``; commit it after the view.

    Guarantees, the same as the WSGI middleware's:

    * the cookie is read from the raw ``Cookie`` header with the rules of
      :func:`~donjon.adapters.find_cookie`; the client key is
      ``REMOTE_ADDR``, or ``X-Forwarded-For`` only via trusted proxies;
    * a locked-out client gets ``429`` with ``Retry-After`` and no view (nor
      any later middleware) runs;
    * a store that is down gives ``503``: while loading, nothing else runs;
      while saving, the response is replaced (and closed); a view that lets
      :class:`~donjon.StoreUnavailable` escape gets the same ``503``;
    * any other bad cookie gives a fresh session and the cookie is cleared;
    * a response that sets or clears the cookie carries
      ``Cache-Control: no-store``; an untouched new session sets no cookie;
      ``Vary: Cookie`` is added when the session was used.

    The session is committed when the response comes back through this
    middleware, whatever its status.

    Raises:
        ConfigurationError: The engine uses the two-credential mode (use
            :class:`donjon.adapters.wsgi.SessionMiddleware`, which serves
            the refresh path).
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.engine = engine_from_settings()
        if self.engine.core.two is not None:
            raise ConfigurationError(
                "donjon's Django middleware does not serve the two-credential refresh "
                "path: wrap the WSGI application instead, application = donjon.adapters."
                "wsgi.SessionMiddleware(get_wsgi_application(), engine=engine), and read "
                "the session with donjon.adapters.wsgi.get_session(request.META)"
            )
        trusted = tuple(getattr(settings, "DONJON_TRUSTED_PROXIES", ()))
        self._resolver = ClientResolver(
            Proxy(
                trusted=trusted,
                trust_unix_socket=bool(getattr(settings, "DONJON_TRUST_UNIX_SOCKET", False)),
            ),
            guarded=self.engine.core.guard is not None,
        )
        self._binding = _binding_from_settings()

    def __call__(self, request: Any) -> Any:
        engine = self.engine
        raw = request.META.get("HTTP_COOKIE")
        lookup = find_cookie([raw] if raw else [], engine.cookie.cookie_name)
        binding = self._binding(request) if self._binding is not None else None
        try:
            session = engine.load(
                lookup.value,
                binding=binding,
                client=client_of(self._resolver, request.META),
                path=request.path,
                device=request.META.get("HTTP_USER_AGENT"),
            )
        except StoreUnavailable:
            store_unavailable(log, "session store unavailable while loading")
            return _answer(503)
        if session.verdict is Verdict.LOCKED_OUT:
            return _answer(429, session.retry_after)
        view = DjangoSession(session, engine=engine)
        request.session = view
        response = self.get_response(request)
        return self._commit(view, response, presented=lookup.presented, binding=binding)

    def process_exception(self, request: Any, exception: Exception) -> Any:
        """Answer ``StoreUnavailable`` escaping a view with the opaque ``503``."""
        if isinstance(exception, StoreUnavailable):
            log.error("session store unavailable in a view: %s", type(exception).__name__)
            return _answer(503)
        return None

    def _commit(
        self,
        view: DjangoSession,
        response: Any,
        *,
        presented: bool,
        binding: str | bytes | None,
    ) -> Any:
        engine = self.engine
        try:
            outcome = (
                # A server error saves nothing but a logout: a half-done change is not kept.
                engine.abandon(view.donjon, presented=presented)
                if response.status_code >= 500
                else engine.commit(view.donjon, presented=presented, binding=binding)
            )
        except StoreUnavailable:
            store_unavailable(log, "session store unavailable while saving")
            # Releases what the discarded response held (a streaming
            # generator, an open file); it also sends request_finished early,
            # which Django's receivers tolerate.
            response.close()
            return _answer(503)
        if view.accessed:
            patch_vary_headers(response, ("Cookie",))
        policy = engine.cookie
        if outcome.token is not None:
            max_age = outcome.max_age if policy.persistent else None
            value, expires = outcome.token, None
        elif outcome.clear:
            max_age, value, expires = 0, "", _EXPIRED
        else:
            return response
        name = policy.cookie_name
        # Through response.cookies (not a raw header) so that Django's
        # machinery, its test client included, sees the cookie.
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            expires=expires,
            path=policy.path,
            domain=policy.domain,
            secure=policy.secure,
            httponly=policy.http_only,
            samesite=policy.same_site.capitalize(),
        )
        if not value:
            # Django writes an empty value as "" (its delete_cookie too): a
            # client that keeps a deleted cookie would send donjon="" back.
            # An empty value is what every other adapter sends.
            response.cookies[name].set(name, "", "")
        response.headers["Cache-Control"] = "no-store"
        return response


def get_session(request: Any) -> Session:
    """Return the donjon session of a Django request (typed, unlike ``request.session``).

    The session counts as used (the response gets ``Vary: Cookie``).

    Raises:
        LookupError: :class:`SessionMiddleware` is not in ``MIDDLEWARE``.
    """
    view = getattr(request, "session", None)
    if isinstance(view, DjangoSession):
        view.accessed = True
        return view.donjon
    raise LookupError(
        "request.session is not a donjon session: put "
        "'donjon.adapters.django.SessionMiddleware' in MIDDLEWARE"
    )
