"""The demo's Starlette app: pages, forms, and the wiring of one real engine."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast, final

from ..config import CookiePolicy
from ..core import KeyRing, SystemClock, Verdict
from ..core._ids import record_key
from ..engine import AsyncEngine
from ..errors import ConfigurationError, MissingDependency
from ..guard import Guard, GuardPolicy
from ..session import Session
from ..stores import SQLiteStore
from . import _pages as pages
from ._lab import ATTACKS, LAB_CLASS, Lab
from ._stats import VerdictStats
from ._store import CountingStore

try:
    from starlette.applications import Starlette
    from starlette.datastructures import FormData
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Route
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependency("starlette", "demo") from exc

from ..adapters.starlette import SessionMiddleware, session_of

if TYPE_CHECKING:
    from ..typing import Clock

__all__ = ["DEMO_USERS", "Demo", "create_app"]

DEMO_USERS: Final[dict[str, tuple[str, str]]] = {
    "alice": ("user", "An ordinary user."),
    "bob": ("user", "Another ordinary user, handy for a second browser or a private window."),
    "root": (
        "admin",
        "The administrator: an admin-class session that may kill classes, rotate keys and "
        "revoke sessions.",
    ),
}
"""The demo's users: name -> (session class, description). No passwords: a demo of sessions."""

SECURITY_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
"""Headers on every response: no inline script or style, no framing, no referrer."""

_STATIC: Final = {
    "demo.css": "text/css; charset=utf-8",
    "demo.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_NO_STORE: Final = {"cache-control": "no-store"}
_RECORD_KEY_RE: Final = re.compile(r"[0-9a-f]{64}")


@final
class Demo:
    """Everything the demo holds: key ring, store, guard, engine, statistics and lab.

    On first use the data folder gets ``keys.json`` (fresh keys for the
    ``user`` and ``admin`` classes, mode 0600) and ``sessions.sqlite3``;
    later runs load them.

    Args:
        data: The data folder (created if missing).
        cookie_secure: Whether the session cookie is ``Secure`` (and named
            ``__Host-donjon``); needs HTTPS, or a browser that treats the
            loopback address as secure.
        clock: The time source (a ``FrozenClock`` in tests).
    """

    def __init__(self, data: Path, *, cookie_secure: bool, clock: Clock | None = None) -> None:
        self.data = Path(data)
        self.data.mkdir(parents=True, exist_ok=True)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.key_file = self.data / "keys.json"
        self.store_file = self.data / "sessions.sqlite3"
        self.generated_keys = not self.key_file.exists()
        if self.generated_keys:
            KeyRing.generate(["user", "admin"]).save(self.key_file)
        self.keyring = KeyRing.from_file(self.key_file)
        missing = {cls for cls, _ in DEMO_USERS.values()} - set(self.keyring.classes)
        if missing:
            raise ConfigurationError(
                f"{self.key_file} has no keys for {sorted(missing)}: "
                "delete it to let the demo generate new keys"
            )
        self.guard = Guard(GuardPolicy())
        self.stats = VerdictStats(guard=self.guard)
        self.store = SQLiteStore(self.store_file, clock=self.clock)
        self.engine = AsyncEngine(
            keyring=self.keyring,
            store=CountingStore(self.store),
            cookie=CookiePolicy(secure=cookie_secure),
            clock=self.clock,
            guard=self.guard,
            events=[self.stats],
        )
        self.lab = Lab(self.engine)

    @property
    def classes(self) -> tuple[str, ...]:
        """The real session classes, ``user`` first (the lab's throwaway class left out)."""
        real = (c for c in self.keyring.classes if c != LAB_CLASS)
        return tuple(sorted(real, key=lambda c: (c != "user", c)))

    def save_keys(self) -> None:
        """Write the key ring to the key file, without the lab's throwaway class."""
        doc = self.keyring.to_dict()
        doc["classes"].pop(LAB_CLASS, None)
        KeyRing.from_dict(doc).save(self.key_file)

    async def signed_in(self) -> dict[str, int]:
        """Live signed-in sessions of the demo users, per class.

        A session created before its class was killed is left out: its
        cookies are all revoked, even though its record lingers until expiry.
        """
        counts: Counter[str] = Counter({cls: 0 for cls in self.classes})
        for user in DEMO_USERS:
            for info in await self.engine.sessions_of(user):
                if not self.killed(info.session_class, info.created_at):
                    counts[info.session_class] += 1
        return dict(counts)

    def killed(self, session_class: str, created_at: float) -> bool:
        """Whether a session created at ``created_at`` predates its class's kill."""
        ck = self.keyring.get(session_class)
        return ck is not None and created_at < ck.epoch

    async def dashboard(self) -> dict[str, str]:
        """Sample the gauges and render the dashboard's live fragments."""
        now = self.clock.time()
        sessions = await self.signed_in()
        locked = self.guard.locked_clients(now)
        self.stats.sample(now, sessions=sessions, locked=len(locked))
        return pages.dashboard_fragments(
            charts=self.stats.charts(now, self.classes),
            totals=self.stats.totals,
            lockouts=self.stats.lockouts,
            signed_in=sum(sessions.values()),
            locked=locked,
            now=now,
        )


@final
class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.extend(SECURITY_HEADERS)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- helpers ---------------------------------------------------------------
def _demo(request: Request) -> Demo:
    return cast(Demo, request.app.state.demo)


def short_hash(value: str) -> str:
    """The first 8 hex digits of a value's SHA-256: enough to tell cookies apart."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:8]


def csrf_token(session: Session) -> str:
    """Return the session's CSRF token, creating one on first use."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


async def checked_form(request: Request) -> FormData | None:
    """Return the posted form if its CSRF token matches the session's, else ``None``."""
    form = await request.form()
    sent = form.get("csrf")
    expected = session_of(request).get("csrf")
    if isinstance(sent, str) and isinstance(expected, str) and hmac.compare_digest(sent, expected):
        return form
    return None


def _is_admin(session: Session) -> bool:
    return (
        session.verdict is Verdict.VALID
        and session.user_id is not None
        and session.session_class == "admin"
    )


def render(
    request: Request,
    *,
    title: str,
    page: str,
    body: str,
    status: int = 200,
    flash: str | None = None,
) -> HTMLResponse:
    """Render a page in the layout; a flash message left in the session is shown once."""
    session = session_of(request)
    if "flash" in session:
        stored = session.pop("flash")
        flash = flash or (stored if isinstance(stored, str) else None)
    csrf = session.get("csrf")
    demo = _demo(request)
    html = pages.layout(
        title=title,
        page=page,
        body=body,
        who=pages.who_box(
            session.user_id,
            session.session_class,
            csrf if isinstance(csrf, str) else None,
        ),
        flash=flash,
        store=str(demo.store_file),
        keys=str(demo.key_file),
    )
    return HTMLResponse(html, status_code=status, headers=_NO_STORE)


def _message(request: Request, status: int, title: str, text: str, page: str = "") -> HTMLResponse:
    link = ("/login", "Log in") if status == 403 else ("/", "Home")
    body = pages.message_body(title, text, link=link)
    return render(request, title=title, page=page, body=body, status=status)


def _refused(request: Request) -> HTMLResponse:
    return _message(
        request,
        403,
        "Form refused",
        "This form's CSRF token is missing or out of date (your session may have ended). "
        "Go back, reload the page and try again.",
    )


def _see(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=_NO_STORE)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def admin_only(handler: Handler) -> Handler:
    """Refuse the request with 403 unless it comes from an admin-class session."""

    async def guarded(request: Request) -> Response:
        if not _is_admin(session_of(request)):
            return _message(
                request,
                403,
                "Admins only",
                "This page is for admin-class sessions: log in as root.",
                page="admin",
            )
        return await handler(request)

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded


def _field(
    form: FormData, name: str, allowed: Mapping[str, object] | tuple[str, ...]
) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) and value in allowed else None


# -- pages -----------------------------------------------------------------
async def home(request: Request) -> Response:
    """The welcome page."""
    body = pages.home_body(session_of(request).user_id)
    return render(request, title="Welcome", page="home", body=body)


async def login_page(request: Request) -> Response:
    """The log-in page."""
    session = session_of(request)
    body = pages.login_body(DEMO_USERS, csrf_token(session), session.user_id)
    return render(request, title="Log in", page="login", body=body)


async def login(request: Request) -> Response:
    """Log a demo user in: the session id is regenerated."""
    form = await checked_form(request)
    if form is None:
        return _refused(request)
    user = _field(form, "user", DEMO_USERS)
    if user is None:
        return _message(request, 400, "Unknown user", "Pick one of the demo users.")
    session = session_of(request)
    before = short_hash(session.token) if session.token else None
    session.login(user, session_class=DEMO_USERS[user][0])
    # A new CSRF token too: the pre-login one was handed to an anonymous visitor.
    session["csrf"] = secrets.token_urlsafe(32)
    session["login"] = {"before": before, "at": round(_demo(request).clock.time(), 3)}
    return _see("/profile")


async def logout(request: Request) -> Response:
    """End the session: the record is deleted and the cookie cleared."""
    if await checked_form(request) is None:
        return _refused(request)
    session_of(request).logout()
    return _see("/")


async def profile(request: Request) -> Response:
    """What the server knows about the cookie that came with this request."""
    demo = _demo(request)
    session = session_of(request)
    now = demo.clock.time()
    issued = expires = None
    token = session.token if session.verdict is Verdict.VALID else None
    if token is not None:
        result = demo.engine.core.codec.verify(token, now=now)
        issued, expires = result.issued_at, result.expires_at
    login_info = session.get("login")
    before = login_info.get("before") if isinstance(login_info, dict) else None
    flash = None
    killed = request.query_params.get("killed")
    if killed in demo.classes:
        flash = (
            f"You killed the {killed} class: every {killed} cookie issued before now is "
            "revoked at once, yours included."
        )
    body = pages.profile_body(
        verdict=session.verdict,
        user=session.user_id,
        session_class=session.session_class,
        key_id=session.key_id,
        created=session.created_at,
        last_seen=session.last_seen,
        issued=issued,
        expires=expires,
        cookie_now=short_hash(token) if token and session.user_id else None,
        cookie_before=before if isinstance(before, str) else None,
        token=token if session.user_id else None,
        data=session.data(),
        now=now,
    )
    return render(request, title="Your session", page="profile", body=body, flash=flash)


async def lab_page(request: Request) -> Response:
    """The attack lab."""
    demo = _demo(request)
    session = session_of(request)
    results = session.get("lab")
    campaign = session.get("campaign")
    body = pages.lab_body(
        csrf=csrf_token(session),
        results=results if isinstance(results, dict) else {},
        campaign=campaign if isinstance(campaign, dict) else None,
        locked=demo.lab.locked(),
    )
    return render(request, title="Attack lab", page="lab", body=body)


async def lab_attack(request: Request) -> Response:
    """Run one attack, or all of them, and keep the results in the session."""
    form = await checked_form(request)
    if form is None:
        return _refused(request)
    names = tuple(a.name for a in ATTACKS)
    name = _field(form, "attack", (*names, "all"))
    if name is None:
        return _message(request, 400, "Unknown attack", "Pick one of the lab's attacks.")
    lab = _demo(request).lab
    session = session_of(request)
    stored = session.get("lab")
    results: dict[str, Any] = dict(stored) if isinstance(stored, dict) else {}
    for attack in names if name == "all" else (name,):
        result = await lab.run(attack)
        results[attack] = result.as_json()
    session["lab"] = results
    if name != "all":
        session["flash"] = f"{name}: {results[name]['verdict']} ({results[name]['reason']})"
    return _see("/lab")


async def lab_guess(request: Request) -> Response:
    """Run the guessing campaign until the guard locks the guesser out."""
    if await checked_form(request) is None:
        return _refused(request)
    result = await _demo(request).lab.campaign()
    session_of(request)["campaign"] = result.as_json()
    return _see("/lab#campaign")


async def lab_reset(request: Request) -> Response:
    """Forget the lab's results and lift its addresses' lock-outs."""
    if await checked_form(request) is None:
        return _refused(request)
    _demo(request).lab.unlock()
    session = session_of(request)
    for key in ("lab", "campaign"):
        if key in session:
            del session[key]
    session["flash"] = "Results cleared; the lab's attackers are no longer locked out."
    return _see("/lab")


async def dashboard(request: Request) -> Response:
    """The live dashboard."""
    body = pages.dashboard_body(await _demo(request).dashboard())
    return render(request, title="Dashboard", page="dashboard", body=body)


async def dashboard_data(request: Request) -> Response:
    """The dashboard's live fragments, as JSON, for the page's poller."""
    return JSONResponse({"fragments": await _demo(request).dashboard()}, headers=_NO_STORE)


@admin_only
async def admin(request: Request) -> Response:
    """The admin page."""
    demo = _demo(request)
    session = session_of(request)
    now = demo.clock.time()
    selected = request.query_params.get("user")
    if selected not in DEMO_USERS:
        selected = None
    sessions = await demo.engine.sessions_of(selected) if selected else []
    keys = []
    for cls in demo.classes:
        ck = demo.keyring.snapshot(cls)
        older = sorted(set(ck.secrets) - {ck.current})
        keys.append((cls, ck.current, older, sorted(ck.retired), ck.epoch))
    body = pages.admin_body(
        csrf=csrf_token(session),
        classes=demo.classes,
        keys=keys,
        users=DEMO_USERS,
        selected=selected,
        sessions=sessions,
        killed={s.key for s in sessions if demo.killed(s.session_class, s.created_at)},
        own_key=record_key(session.id) if session.id else None,
        locked=demo.guard.locked_clients(now),
        now=now,
    )
    return render(request, title="Admin", page="admin", body=body)


@admin_only
async def admin_kill(request: Request) -> Response:
    """Kill a class: every cookie of it issued before now is revoked."""
    form = await checked_form(request)
    if form is None:
        return _refused(request)
    demo = _demo(request)
    cls = _field(form, "class", demo.classes)
    if cls is None:
        return _message(request, 400, "Unknown class", "Pick one of the session classes.")
    epoch = await demo.engine.kill(cls)
    session = session_of(request)
    if cls == session.session_class:
        # This very session is now revoked: say so on a page it can still see.
        return _see(f"/profile?killed={cls}")
    session["flash"] = f"Killed the {cls} class at {pages.clock(epoch)}."
    return _see("/admin")


@admin_only
async def admin_rotate(request: Request) -> Response:
    """Rotate a class's key and save the key file."""
    form = await checked_form(request)
    if form is None:
        return _refused(request)
    demo = _demo(request)
    cls = _field(form, "class", demo.classes)
    if cls is None:
        return _message(request, 400, "Unknown class", "Pick one of the session classes.")
    old = demo.keyring.current_key_id(cls)
    new = demo.keyring.rotate(cls)
    demo.save_keys()
    session_of(request)["flash"] = (
        f"Class {cls}: key {new} signs from now on; {old} still verifies, and its sessions "
        "get a cookie signed with the new key on their next request."
    )
    return _see("/admin")


@admin_only
async def admin_revoke(request: Request) -> Response:
    """Revoke one session by its record key."""
    form = await checked_form(request)
    if form is None:
        return _refused(request)
    key = form.get("key")
    user = _field(form, "user", DEMO_USERS)
    if not isinstance(key, str) or not _RECORD_KEY_RE.fullmatch(key) or user is None:
        return _message(request, 400, "Bad request", "Pick a session from the list.")
    session = session_of(request)
    await _demo(request).engine.revoke(key)
    if session.id is not None and key == record_key(session.id):
        return _see("/profile")
    session["flash"] = f"Revoked session {key[:12]}… of {user}."
    return _see(f"/admin?user={user}")


@admin_only
async def admin_revoke_user(request: Request) -> Response:
    """Revoke every session of a user."""
    form = await checked_form(request)
    if form is None:
        return _refused(request)
    user = _field(form, "user", DEMO_USERS)
    if user is None:
        return _message(request, 400, "Unknown user", "Pick one of the demo users.")
    count = await _demo(request).engine.revoke_user(user)
    session = session_of(request)
    if user == session.user_id:
        return _see("/profile")
    session["flash"] = f"Revoked {count} session{'s' if count != 1 else ''} of {user}."
    return _see(f"/admin?user={user}")


@admin_only
async def admin_unlock(request: Request) -> Response:
    """Lift a client's lock-out."""
    form = await checked_form(request)
    if form is None:
        return _refused(request)
    demo = _demo(request)
    client = _field(form, "client", tuple(demo.guard.locked_clients(demo.clock.time())))
    if client is not None:
        demo.guard.unlock(client)
        session_of(request)["flash"] = f"Lifted the lock-out of {client}."
    return _see("/admin")


def _static_files() -> dict[str, bytes]:
    folder = resources.files("donjon.demo").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in _STATIC}


def _static_route(files: Mapping[str, bytes]) -> Handler:
    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files:
            raise HTTPException(404)
        return Response(
            files[name], media_type=_STATIC[name], headers={"cache-control": "no-cache"}
        )

    return static


async def not_found(request: Request, exc: Exception) -> Response:
    """A page for unknown paths."""
    return _message(request, 404, "Not found", "There is no such page in the demo.")


def create_app(data: Path, *, cookie_secure: bool = False, clock: Clock | None = None) -> Starlette:
    """Build the demo app around a real engine whose files live in ``data``.

    The app keeps its own session with Donjon's ASGI
    :class:`~donjon.adapters.asgi.SessionMiddleware`. Its :class:`Demo`
    (engine, key ring, statistics, lab) is ``app.state.demo``.

    Args:
        data: The folder of ``keys.json`` and ``sessions.sqlite3`` (created if missing).
        cookie_secure: Make the session cookie ``Secure`` (named ``__Host-donjon``).
            Off by default: the demo is served over plain HTTP, and HTTP clients
            such as curl and httpx never send a ``Secure`` cookie back over it.
        clock: The time source; the system clock by default.

    Raises:
        ConfigurationError: The key file exists but lacks the demo's classes.
    """
    demo = Demo(data, cookie_secure=cookie_secure, clock=clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await demo.engine.close()

    routes = [
        Route("/", home),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/profile", profile),
        Route("/lab", lab_page),
        Route("/lab/attack", lab_attack, methods=["POST"]),
        Route("/lab/guess", lab_guess, methods=["POST"]),
        Route("/lab/reset", lab_reset, methods=["POST"]),
        Route("/dashboard", dashboard),
        Route("/dashboard/data", dashboard_data),
        Route("/admin", admin),
        Route("/admin/kill", admin_kill, methods=["POST"]),
        Route("/admin/rotate", admin_rotate, methods=["POST"]),
        Route("/admin/revoke", admin_revoke, methods=["POST"]),
        Route("/admin/revoke-user", admin_revoke_user, methods=["POST"]),
        Route("/admin/unlock", admin_unlock, methods=["POST"]),
        Route("/static/{name}", _static_route(_static_files())),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(SessionMiddleware, engine=demo.engine),
        ],
        exception_handlers={404: not_found},
        lifespan=lifespan,
    )
    app.state.demo = demo
    return app
