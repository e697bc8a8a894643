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
``X-Forwarded-For`` is believed) and ``DONJON_BINDING`` (dotted path to a
function of the request returning the context sessions are bound to).

``request.session`` is a :class:`DjangoSession`: the donjon session with
Django's names where Django's own code uses them (``cycle_key()``,
``flush()``), so ``django.contrib.auth.login``/``logout`` work unchanged.
``django.contrib.sessions`` itself (its models, ``SESSION_ENGINE``,
``Client.session``) is not used. If ``django.contrib.admin`` is installed,
its check ``admin.E410`` (which looks for Django's own middleware by name)
can be silenced.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Final, final

from ..core import Verdict
from ..engine import AsyncEngine, Engine
from ..errors import MissingDependency, StoreUnavailable
from ..session import Session
from ._common import ERROR_BODIES, ClientResolver, Proxy
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


class DjangoSession(SessionView):
    """What ``request.session`` is: the donjon session with Django's names.

    ``cycle_key()`` regenerates the id (keeping the data), ``flush()``
    destroys the session (record deleted, cookie cleared). Unlike Django's
    ``flush()``, keys set after it in the same request are not kept: the
    session ends with the request. ``login()``/``logout()`` set and end
    donjon's ``user_id`` (used by "log out everywhere"); Django's auth keys
    are ordinary session keys.
    """

    def cycle_key(self) -> None:
        """Give the session a new id at commit, keeping its data (as Django's)."""
        self.regenerate()

    def flush(self) -> None:
        """End the session: its record is deleted and the cookie cleared at commit."""
        self.destroy()

    def is_empty(self) -> bool:
        """Whether the session holds no data."""
        return len(self.donjon) == 0


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
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.engine = engine_from_settings()
        trusted = tuple(getattr(settings, "DONJON_TRUSTED_PROXIES", ()))
        self._resolver = ClientResolver(Proxy(trusted=trusted))
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
            )
        except StoreUnavailable:
            log.exception("session store unavailable while loading")
            return _answer(503)
        if session.verdict is Verdict.LOCKED_OUT:
            return _answer(429, session.retry_after)
        view = DjangoSession(session)
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
            outcome = engine.commit(view.donjon, presented=presented, binding=binding)
        except StoreUnavailable:
            log.exception("session store unavailable while saving")
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
        # Through response.cookies (not a raw header) so that Django's
        # machinery, its test client included, sees the cookie.
        response.set_cookie(
            policy.cookie_name,
            value,
            max_age=max_age,
            expires=expires,
            path=policy.path,
            domain=policy.domain,
            secure=policy.secure,
            httponly=policy.http_only,
            samesite=policy.same_site.capitalize(),
        )
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
