"""HTML for the demo's pages: stdlib :class:`string.Template` and escaped fragments.

No template engine and no build step. Every value that is not a fixed
string of this module goes through :func:`html.escape` (``e``) before it is
placed in a page. Pages carry no inline script or style, so the
Content-Security-Policy can forbid both.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape as e
from string import Template
from typing import TYPE_CHECKING, Any, Final

from ..core import TOKEN_VERSION, Verdict
from ._lab import ATTACKER, ATTACKS, GUESSER, MAX_GUESSES
from ._stats import STACK_ORDER

if TYPE_CHECKING:
    from ..stores import SessionInfo

__all__ = [
    "VERDICT_HELP",
    "admin_body",
    "dashboard_body",
    "dashboard_fragments",
    "home_body",
    "layout",
    "lab_body",
    "login_body",
    "message_body",
    "profile_body",
    "verdict_badge",
    "when",
]

VERDICT_HELP: Final[dict[Verdict, str]] = {
    Verdict.VALID: "Signature, time, epoch and the store all agree: this is a live session.",
    Verdict.ABSENT: "No session cookie was sent at all.",
    Verdict.MALFORMED: "Not shaped like a token: wrong size, alphabet, field count or version.",
    Verdict.FORGED: "Unknown class or key, a bad MAC, or issued in the future: an attacker.",
    Verdict.EXPIRED: "Signed by us, but past the absolute expiry signed inside it.",
    Verdict.REVOKED: "Issued before its class was killed (the kill switch).",
    Verdict.RETIRED: "Signed with a key id we used to have and have retired.",
    Verdict.UNKNOWN: "Signed by us, but the store holds no session for it (logged out, revoked).",
    Verdict.IDLE_EXPIRED: "The session exists but was not used within the idle timeout.",
    Verdict.BINDING_MISMATCH: "The token is bound to a context this request does not carry.",
    Verdict.LOCKED_OUT: "The client is locked out by the guard; nothing was parsed.",
}
"""One plain sentence per verdict, for the pages."""

PIPELINE: Final[tuple[tuple[str, str, str], ...]] = (
    ("0", "guard", "client locked out? → locked_out (429, nothing parsed)"),
    ("1", "shape", "size cap, alphabet, fields → malformed"),
    ("2", "key", "class and key id known? → forged, or retired"),
    ("3", "MAC", "constant-time HMAC check → forged"),
    ("4", "time", "issued in the future? expired? → forged / expired"),
    ("5", "epoch", "class killed after issue? → revoked"),
    ("6", "binding", "bound context matches? → binding_mismatch"),
    ("7", "store", "record exists, not idle? → unknown / idle_expired / valid"),
)

_NAV: Final = (
    ("home", "/", "Home"),
    ("profile", "/profile", "Your session"),
    ("lab", "/lab", "Attack lab"),
    ("dashboard", "/dashboard", "Dashboard"),
    ("admin", "/admin", "Admin"),
)

LAYOUT: Final = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title · Donjon demo</title>
<link rel="stylesheet" href="/static/demo.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<script src="/static/demo.js" defer></script>
</head>
<body data-page="$page">
<header class="top">
  <div class="bar">
    <a class="brand" href="/"><span class="tower" aria-hidden="true">♜</span>
      Donjon <small>demo</small></a>
    <nav>$nav</nav>
    <div class="who">$who</div>
  </div>
</header>
<main>
$flash$body
</main>
<footer>
  Donjon demo · sessions in <code>$store</code> · keys in <code>$keys</code>
</footer>
</body>
</html>
""")


def layout(
    *,
    title: str,
    page: str,
    body: str,
    who: str,
    flash: str | None,
    store: str,
    keys: str,
) -> str:
    """Wrap a page body in the shared layout.

    Args:
        title: The page title (plain text).
        page: Which navigation entry is current.
        body: The page's HTML (already escaped).
        who: The signed-in box's HTML (already escaped).
        flash: A one-line message to show (plain text), or ``None``.
        store: The store's file, shown in the footer.
        keys: The key file, shown in the footer.
    """
    current = ' aria-current="page"'
    nav = "".join(
        f'<a href="{href}"{current if name == page else ""}>{label}</a>'
        for name, href, label in _NAV
    )
    flash_html = f'<p class="flash" role="status" id="flash">{e(flash)}</p>\n' if flash else ""
    return LAYOUT.substitute(
        title=e(title),
        page=e(page),
        nav=nav,
        who=who,
        flash=flash_html,
        body=body,
        store=e(store),
        keys=e(keys),
    )


def who_box(user: str | None, session_class: str, csrf: str | None) -> str:
    """The top-right box: who is signed in, with a log-out button."""
    if user is None or csrf is None:
        return '<a class="button small" href="/login">Log in</a>'
    return (
        f'<span class="user" id="who" data-user="{e(user)}">{e(user)} '
        f'<span class="class-tag">{e(session_class)}</span></span>'
        f'<form method="post" action="/logout" class="inline">{csrf_field(csrf)}'
        '<button class="small ghost" type="submit" data-action="logout">Log out</button></form>'
    )


def csrf_field(token: str) -> str:
    """The hidden form field carrying the per-session CSRF token."""
    return f'<input type="hidden" name="csrf" value="{e(token)}">'


def verdict_badge(verdict: str | Verdict) -> str:
    """A coloured badge for a verdict, with ``data-verdict`` for tests."""
    v = e(str(verdict))
    return f'<span class="verdict v-{v}" data-verdict="{v}">{v}</span>'


def when(t: float | None, now: float) -> str:
    """Format a Unix time as UTC clock time plus a relative hint."""
    if t is None:
        return "—"
    moment = datetime.fromtimestamp(t, tz=UTC)
    stamp = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    delta = t - now
    span = abs(delta)
    if span < 1:
        rel = "now"
    else:
        if span < 90:
            amount = f"{span:.0f} s"
        elif span < 90 * 60:
            amount = f"{span / 60:.0f} min"
        else:
            hours, minutes = divmod(round(span / 60), 60)
            amount = f"{hours} h {minutes} min"
        rel = f"in {amount}" if delta > 0 else f"{amount} ago"
    return (
        f'<time datetime="{moment.isoformat()}">{stamp}</time> <span class="muted">({rel})</span>'
    )


def clock(t: float) -> str:
    """Format a Unix time as a short UTC clock time."""
    return datetime.fromtimestamp(t, tz=UTC).strftime("%H:%M:%S UTC")


def message_body(title: str, text: str, *, link: tuple[str, str] | None = None) -> str:
    """A page with one message (errors, refusals)."""
    more = f'<p><a class="button" href="{e(link[0])}">{e(link[1])}</a></p>' if link else ""
    return f'<section class="card narrow"><h1>{e(title)}</h1><p>{e(text)}</p>{more}</section>'


# -- home ------------------------------------------------------------------
def home_body(user: str | None) -> str:
    """The welcome page: what to try in the first five minutes."""
    start = (
        f"You are signed in as <strong>{e(user)}</strong>."
        if user
        else '<a class="button" href="/login">Log in to start</a>'
    )
    steps = "".join(
        f"<li>{s}</li>"
        for s in (
            '<a href="/login">Log in</a> as alice, bob or root, and watch the cookie change: '
            "the session id is regenerated at login.",
            '<a href="/profile">Look at your session</a>: data, class, key id, issue and expiry '
            "times, and the verdict of the cookie your browser sent.",
            'In the <a href="/lab">attack lab</a>, send forged, tampered, expired, guessed, '
            "revoked, retired-key and wrong-binding cookies; then run a guessing campaign "
            "until the guard locks the attacker out.",
            'Keep the <a href="/dashboard">dashboard</a> open in another tab: verdicts, '
            "lock-outs and sessions, live.",
            'As root, pull the <a href="/admin">kill switch</a>: kill a class, rotate a key, '
            "list and revoke a user's sessions.",
        )
    )
    rows = "".join(
        f'<li><span class="step">{n}</span><strong>{e(name)}</strong> <span>{e(what)}</span></li>'
        for n, name, what in PIPELINE
    )
    return f"""<section class="hero">
<h1>Every cookie passes the walls of the keep</h1>
<p class="lede">Donjon checks each request's session cookie in layers, cheap to expensive. The first
check that fails ends the trip with a <em>verdict</em>: an expired cookie is an ordinary user,
a forged one is an attacker, and they are counted and answered differently.</p>
<p>{start}</p>
</section>
<div class="columns">
<section class="card"><h2>Your first five minutes</h2><ol class="steps">{steps}</ol></section>
<section class="card"><h2>The verdict pipeline</h2><ol class="pipeline">{rows}</ol>
<p class="muted">Steps 0 to 6 never touch the store: forged cookies cost no database round trip.</p>
</section>
</div>"""


# -- login -----------------------------------------------------------------
def login_body(users: Mapping[str, tuple[str, str]], csrf: str, current: str | None) -> str:
    """The log-in page: one button per demo user."""
    cards = []
    for name, (cls, about) in users.items():
        cards.append(
            f'<form method="post" action="/login" class="card user-card">'
            f"{csrf_field(csrf)}"
            f'<input type="hidden" name="user" value="{e(name)}">'
            f'<h2>{e(name)} <span class="class-tag">{e(cls)}</span></h2>'
            f"<p>{e(about)}</p>"
            f'<button type="submit" data-login="{e(name)}">Log in as {e(name)}</button>'
            "</form>"
        )
    now = (
        f'<p class="note">Signed in as <strong>{e(current)}</strong>. Logging in again, as anyone, '
        "regenerates the session id once more.</p>"
        if current
        else ""
    )
    return f"""<h1>Log in</h1>
<p class="lede">A demo of sessions, not of passwords: pick a user. Logging in calls
<code>session.login(user, session_class=…)</code>, which gives the session a new id and a new
cookie, so an id planted before login (session fixation) is worthless.</p>
{now}<div class="user-grid">{"".join(cards)}</div>"""


# -- profile ---------------------------------------------------------------
_ANATOMY: Final = (
    ("version", "token format version"),
    ("class", "session class: which keys sign it"),
    ("key id", "the key that signed it"),
    ("session id", "256 random bits (cut here)"),
    ("issued", "issue time, ms since 1970"),
    ("expires", "absolute expiry, ms since 1970"),
    ("binding", "_ when not bound"),
    ("MAC", "HMAC-SHA256 of all the above (cut here)"),
)


def _anatomy(token: str) -> str:
    parts = token.split(".")
    if len(parts) != len(_ANATOMY) or parts[0] != TOKEN_VERSION:
        return ""
    parts[3] = parts[3][:4] + "…"
    parts[7] = parts[7][:12] + "…"
    rows = "".join(
        f"<tr><th>{e(label)}</th><td><code>{e(value)}</code></td>"
        f'<td class="muted">{e(what)}</td></tr>'
        for (label, what), value in zip(_ANATOMY, parts, strict=True)
    )
    return (
        '<section class="card"><h2>Anatomy of your cookie</h2>'
        f'<table class="anatomy" id="anatomy">{rows}</table></section>'
    )


def _data_rows(data: Mapping[str, Any]) -> str:
    if not data:
        return '<p class="muted">Empty.</p>'
    rows = []
    for key, value in sorted(data.items()):
        shown = "•••••• (hidden)" if key == "csrf" else json.dumps(value, separators=(",", ":"))
        if len(shown) > 96:
            shown = shown[:95] + "…"
        rows.append(f"<tr><th><code>{e(key)}</code></th><td><code>{e(shown)}</code></td></tr>")
    return f'<table class="data" id="session-data">{"".join(rows)}</table>'


def profile_body(
    *,
    verdict: Verdict,
    user: str | None,
    session_class: str,
    key_id: str | None,
    created: float | None,
    last_seen: float | None,
    issued: float | None,
    expires: float | None,
    cookie_now: str | None,
    cookie_before: str | None,
    token: str | None,
    data: Mapping[str, Any],
    now: float,
) -> str:
    """The session page: what the server knows about the cookie that came in."""
    head = f"""<h1>Your session</h1>
<section class="card verdict-card" id="incoming">
<p>The cookie your browser sent with this request got the verdict
{verdict_badge(verdict)}</p>
<p class="muted">{e(VERDICT_HELP[verdict])}</p>
</section>"""
    if user is None:
        hint = (
            "You have an anonymous session, started for the forms' CSRF token."
            if verdict is Verdict.VALID
            else "You have no session now."
        )
        return (
            head
            + f'<section class="card"><p id="anonymous">{e(hint)} '
            + '<a href="/login">Log in</a> to get one with a user.</p></section>'
        )
    facts = (
        ("User", "user", e(user)),
        ("Class", "session-class", e(session_class)),
        ("Key id", "key-id", f"<code>{e(key_id or '—')}</code>"),
        ("Signed in", "created", when(created, now)),
        ("Last seen", "last-seen", when(last_seen, now)),
        ("Cookie issued", "issued", when(issued, now)),
        ("Expires", "expires", when(expires, now)),
    )
    dl = "".join(f'<dt>{label}</dt><dd id="{id_}">{value}</dd>' for label, id_, value in facts)
    regen = ""
    if cookie_now:
        before = (
            f'<code id="cookie-before">#{e(cookie_before)}</code>'
            if cookie_before
            else '<span id="cookie-before" class="muted">none (no cookie yet)</span>'
        )
        regen = f"""<section class="card"><h2>Id regenerated at login</h2>
<p class="regen">Cookie before login {before} <span class="arrow">→</span> now
<code id="cookie-now">#{e(cookie_now)}</code></p>
<p class="muted">Short SHA-256 hashes of the cookie values. Logging in gave the session a new id
and a new cookie, and the record of the old id was emptied: a cookie known before login is
worthless (for a minute it is answered <code>unknown</code>, reason <code>superseded</code>,
without clearing the cookie, so a request racing the login cannot log you out again).
</p></section>"""
    return f"""{head}
<div class="columns">
<section class="card"><h2>Session</h2><dl class="facts">{dl}</dl></section>
{regen}
</div>
{_anatomy(token) if token else ""}
<section class="card"><h2>Session data</h2>{_data_rows(data)}</section>"""


def _short_device(device: str | None) -> str:
    """A device label cut to fit a table cell."""
    if not device:
        return "unknown"
    return device if len(device) <= 60 else device[:59] + "…"


# -- lab -------------------------------------------------------------------
def _result_cells(result: Mapping[str, Any] | None, expect: Verdict) -> str:
    if not result:
        return '<td class="result muted" colspan="4">not run yet</td>'
    verdict = str(result.get("verdict", ""))
    expected = "✓" if verdict == expect.value else ""
    calls = int(result.get("store_calls") or 0)
    retry = result.get("retry_after")
    if verdict == Verdict.LOCKED_OUT.value:
        status, detail = "429", f"Retry-After: {max(1, round(float(retry or 0)))}"
    else:
        status, detail = "200", "new session, bad cookie cleared"
    return (
        f'<td class="result">{verdict_badge(verdict)} <span class="ok">{expected}</span>'
        f'<div class="reason muted">{e(str(result.get("reason", "")))}</div></td>'
        f'<td class="num" data-store-calls="{calls}">{calls}</td>'
        f'<td class="answer"><strong>{status}</strong> <span class="muted">{e(detail)}</span></td>'
        f'<td><code class="cookie">{e(str(result.get("cookie", "")))}</code></td>'
    )


def _campaign(result: Mapping[str, Any] | None) -> str:
    if not result:
        return '<p class="muted" id="campaign-result">Not run yet.</p>'
    counts = result.get("counts") or {}
    parts = ", ".join(f"{e(str(k))} &times; {int(v)}" for k, v in counts.items())
    attempts = int(result.get("attempts") or 0)
    locked_after = result.get("locked_after")
    retry = result.get("retry_after")
    calls = int(result.get("store_calls") or 0)
    if locked_after is not None:
        verdict = Verdict.LOCKED_OUT.value
        retry_s = max(1, round(float(retry or 0)))
        story = (
            f"After <strong>{int(locked_after)}</strong> rejected guesses the guard locked "
            f"{e(GUESSER)} out: guess {attempts} was refused unparsed with "
            f"<strong>429 Too Many Requests</strong>, <code>Retry-After: {retry_s}</code>."
        )
    else:
        verdict = "none"
        retry_s = 0
        story = f"{attempts} guesses and no lock-out."
    return (
        f'<div id="campaign-result" data-attempts="{attempts}" data-verdict="{verdict}" '
        f'data-retry-after="{retry_s}" data-store-calls="{calls}">'
        f"<p>{story}</p>"
        f'<p class="muted">Verdicts: {parts}. Store round trips: {calls}.</p>'
        f"{verdict_badge(verdict) if locked_after is not None else ''}</div>"
    )


def lab_body(
    *,
    csrf: str,
    results: Mapping[str, Any],
    campaign: Mapping[str, Any] | None,
    locked: Mapping[str, float],
) -> str:
    """The attack lab: one row per attack, the guessing campaign, the attackers' state."""
    rows = []
    for a in ATTACKS:
        result = results.get(a.name)
        rows.append(
            f'<tr data-attack="{e(a.name)}" data-expect="{e(a.expect.value)}">'
            f'<th><span class="attack-name">{e(a.title)}</span>'
            f'<div class="muted">{e(a.story)}</div></th>'
            f'<td class="layer">{e(a.layer)}</td>'
            f'<td><form method="post" action="/lab/attack" class="inline">{csrf_field(csrf)}'
            f'<input type="hidden" name="attack" value="{e(a.name)}">'
            f'<button type="submit" class="small" data-run="{e(a.name)}">Send</button></form></td>'
            f"{_result_cells(result if isinstance(result, Mapping) else None, a.expect)}</tr>"
        )
    status = []
    for address, role in ((ATTACKER, "attacker"), (GUESSER, "guesser")):
        wait = locked.get(address)
        state = (
            f'<span class="locked" data-locked="{e(address)}">locked out, {wait:.0f} s left</span>'
            if wait is not None
            else '<span class="free">not locked out</span>'
        )
        status.append(f"<li>{role} <code>{e(address)}</code>: {state}</li>")
    return f"""<h1>Attack lab</h1>
<p class="lede">Each button crafts a hostile cookie on the server with the real codec and key
ring, and hands it to the real engine as if it came from the attacker's address
(<code>engine.load(cookie, client="{e(ATTACKER)}")</code>). The verdicts, reasons and store round
trips below are what the engine did. Attacks on revoked and retired keys act on a throwaway
<code>lab</code> class, never on real users.</p>
<div class="toolbar">
<form method="post" action="/lab/attack" class="inline">{csrf_field(csrf)}
<input type="hidden" name="attack" value="all">
<button type="submit" data-run="all">Send every attack</button></form>
<form method="post" action="/lab/reset" class="inline">{csrf_field(csrf)}
<button type="submit" class="ghost" data-action="reset">Clear results and lift lock-outs</button>
</form>
</div>
<section class="card flush">
<table class="lab" id="attacks">
<thead><tr><th>Attack</th><th>Layer</th><th></th><th>Verdict</th>
<th class="num" title="store round trips">Store</th><th>Answer</th><th>Cookie sent</th></tr></thead>
<tbody>{"".join(rows)}</tbody>
</table>
</section>
<div class="columns">
<section class="card" id="campaign">
<h2>Guessing campaign</h2>
<p>Sends guessed cookies from <code>{e(GUESSER)}</code>, one after another (at most {MAX_GUESSES}),
until the guard's lock-out fires. Each guess is FORGED at the MAC, without a store round trip;
the guard counts them per client.</p>
<form method="post" action="/lab/guess">{csrf_field(csrf)}
<button type="submit" class="danger" data-run="campaign">Start guessing</button></form>
{_campaign(campaign)}
</section>
<section class="card"><h2>The attackers</h2><ul class="plain" id="attackers">{"".join(status)}</ul>
<p class="muted">Lock-outs start at one minute and double with each repeat, up to an hour.
The guard counts malformed, forged and binding-mismatch verdicts (and bursts of unknown ones);
expired, revoked and retired cookies are ordinary users and never count.</p></section>
</div>"""


# -- dashboard -------------------------------------------------------------
def _totals(totals: Mapping[Verdict, int], lockouts: int, signed_in: int) -> str:
    verdicts = "".join(
        f'<li>{verdict_badge(v)} <span class="value" data-total="{v.value}">'
        f"{totals.get(v, 0)}</span></li>"
        for v in STACK_ORDER
    )
    return (
        f'<div class="stat"><span class="value" id="signed-in">{signed_in}</span>'
        '<span class="label">signed-in sessions</span></div>'
        f'<div class="stat"><span class="value" id="lockouts">{lockouts}</span>'
        '<span class="label">lock-outs started</span></div>'
        '<div class="stat wide"><span class="label">verdicts since start</span>'
        f'<ul class="totals">{verdicts}</ul></div>'
    )


def _locked_list(locked: Mapping[str, float]) -> str:
    if not locked:
        return '<p class="muted">No client is locked out.</p>'
    items = "".join(
        f'<li data-locked="{e(k)}"><code>{e(k)}</code> · {v:.0f} s left</li>'
        for k, v in sorted(locked.items())
    )
    return f'<ul class="plain">{items}</ul>'


def dashboard_fragments(
    *,
    charts: Mapping[str, str],
    totals: Mapping[Verdict, int],
    lockouts: int,
    signed_in: int,
    locked: Mapping[str, float],
    now: float,
) -> dict[str, str]:
    """The live parts of the dashboard, as HTML fragments keyed by ``data-live`` name."""
    return {
        **charts,
        "totals": _totals(totals, lockouts, signed_in),
        "locked": _locked_list(locked),
        "updated": e(clock(now)),
    }


def dashboard_body(fragments: Mapping[str, str]) -> str:
    """The dashboard page, with the first rendering of its live parts."""
    return f"""<h1>Dashboard</h1>
<p class="lede">Every verdict the engine reaches goes through an event hook that counts it per
second in memory. The charts are SVG drawn on the server; the page asks for new ones every two
seconds. <span class="live" data-live-source="/dashboard/data">updated
<span data-live="updated" id="updated">{fragments["updated"]}</span></span></p>
<section class="stats" data-live="totals">{fragments["totals"]}</section>
<section class="card chart-card"><h2>Verdicts per second</h2>
<div data-live="verdicts" data-chart="verdicts">{fragments["verdicts"]}</div></section>
<div class="columns">
<section class="card chart-card"><h2>Lock-outs</h2>
<div data-live="lockouts" data-chart="lockouts">{fragments["lockouts"]}</div>
<div data-live="locked">{fragments["locked"]}</div></section>
<section class="card chart-card"><h2>Signed-in sessions</h2>
<div data-live="sessions" data-chart="sessions">{fragments["sessions"]}</div></section>
</div>"""


# -- admin -----------------------------------------------------------------
def _class_options(classes: Iterable[str]) -> str:
    return "".join(f'<option value="{e(c)}">{e(c)}</option>' for c in classes)


def admin_body(
    *,
    csrf: str,
    classes: Sequence[str],
    keys: Sequence[tuple[str, str, Sequence[str], Sequence[str], float]],
    users: Iterable[str],
    selected: str | None,
    sessions: Sequence[SessionInfo],
    killed: Collection[str],
    own_key: str | None,
    locked: Mapping[str, float],
    now: float,
) -> str:
    """The admin page: kill switch, key rotation, sessions of a user, lock-outs."""
    key_rows = "".join(
        f'<tr data-class="{e(cls)}"><th>{e(cls)}</th>'
        f'<td><code data-current-key="{e(cls)}">{e(current)}</code></td>'
        f"<td>{e(', '.join(older) or '—')}</td><td>{e(', '.join(retired) or '—')}</td>"
        f"<td>{when(epoch, now) if epoch else '—'}</td></tr>"
        for cls, current, older, retired, epoch in keys
    )
    user_opts = "".join(
        f'<option value="{e(u)}"{" selected" if u == selected else ""}>{e(u)}</option>'
        for u in users
    )
    sessions_html = ""
    you = ' <span class="class-tag">you</span>'
    dead = (
        ' <span class="class-tag dead" title="created before its class was killed">revoked</span>'
    )
    if selected is not None:
        rows = "".join(
            f'<tr data-session="{e(s.key[:12])}"><td><code>{e(s.key[:12])}…</code>'
            f"{you if s.key == own_key else ''}{dead if s.key in killed else ''}</td>"
            f"<td>{e(s.session_class)}</td>"
            f'<td class="device">{e(_short_device(s.device))}</td>'
            f"<td>{when(s.created_at, now)}</td>"
            f"<td>{when(s.last_seen, now)}</td><td>{when(s.expires_at, now)}</td>"
            f'<td><form method="post" action="/admin/revoke" class="inline">{csrf_field(csrf)}'
            f'<input type="hidden" name="key" value="{e(s.key)}">'
            f'<input type="hidden" name="user" value="{e(selected)}">'
            f'<button type="submit" class="small danger" data-revoke="{e(s.key[:12])}">'
            "Revoke</button></form></td></tr>"
            for s in sessions
        )
        table = (
            '<table class="sessions" id="sessions"><thead><tr><th>Record key</th><th>Class</th>'
            '<th title="the User-Agent of the request that created the session">Device</th>'
            "<th>Created</th><th>Last seen</th>"
            '<th title="the store forgets the record then (idle or absolute timeout)">'
            "Record kept until</th><th></th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
            if sessions
            else '<p class="muted" id="sessions">No live session.</p>'
        )
        sessions_html = f"""<h3>Sessions of {e(selected)}
<span class="count" id="session-count" data-count="{len(sessions)}">{len(sessions)}</span></h3>
{table}
<form method="post" action="/admin/revoke-user">{csrf_field(csrf)}
<input type="hidden" name="user" value="{e(selected)}">
<button type="submit" class="danger" data-action="revoke-user">Revoke all of {e(selected)}'s
sessions</button></form>
<p class="muted">Listings show the record key, a hash of the session id: enough to revoke,
useless as a cookie.</p>"""
    locked_rows = "".join(
        f'<li><code>{e(k)}</code> · {v:.0f} s left <form method="post" action="/admin/unlock" '
        f'class="inline">{csrf_field(csrf)}<input type="hidden" name="client" value="{e(k)}">'
        '<button type="submit" class="small ghost">Unlock</button></form></li>'
        for k, v in sorted(locked.items())
    )
    # HTML, not SQL: "<select>" and "from now on" look like a query to ruff's S608.
    return f"""<h1>Admin</h1>
<p class="lede">Only sessions of the <code>admin</code> class see this page. Every action is the
engine's public API, as an operator or the <code>donjon</code> command would call it.</p>
<div class="columns">
<section class="card" id="kill">
<h2>Kill switch</h2>
<p>Moves a class's epoch to now (<code>engine.kill(cls)</code>): every cookie of the class issued
before is <strong>revoked</strong> at once, without touching a single session record. Killing
<code>admin</code> ends your own session too.</p>
<form method="post" action="/admin/kill" class="row">{csrf_field(csrf)}
<label>Class <select name="class">{_class_options(classes)}</select></label>
<button type="submit" class="danger" data-action="kill">Kill class</button></form>
</section>
<section class="card" id="rotate">
<h2>Rotate a key</h2>
<p>A new key signs from now on (<code>keyring.rotate(cls)</code>, saved to the key file); older
keys still verify, and sessions signed with one get a new cookie on their next request.</p>
<form method="post" action="/admin/rotate" class="row">{csrf_field(csrf)}
<label>Class <select name="class">{_class_options(classes)}</select></label>
<button type="submit" data-action="rotate">Rotate key</button></form>
</section>
</div>
<section class="card">
<h2>Keys</h2>
<table class="keys" id="keys"><thead><tr><th>Class</th><th>Signs</th><th>Also verify</th>
<th>Retired</th><th>Epoch (killed at)</th></tr></thead><tbody>{key_rows}</tbody></table>
</section>
<section class="card" id="user-sessions">
<h2>Sessions of a user</h2>
<form method="get" action="/admin" class="row">
<label>User <select name="user">{user_opts}</select></label>
<button type="submit" data-action="list">List sessions</button></form>
{sessions_html}
</section>
<section class="card"><h2>Locked-out clients</h2>
{f'<ul class="plain">{locked_rows}</ul>' if locked_rows else '<p class="muted">None.</p>'}
</section>"""  # noqa: S608
