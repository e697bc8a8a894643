"""``donjon demo``: serve the demo app with uvicorn."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from ..errors import MissingDependency

__all__ = ["run"]


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def run(
    host: str = "127.0.0.1",
    port: int = 8000,
    data: Path = Path("data"),
    cookie_secure: bool | None = None,
) -> None:
    """Serve the demo until interrupted (Ctrl+C).

    The first run creates ``data/keys.json`` (fresh keys for the ``user`` and
    ``admin`` classes) and ``data/sessions.sqlite3``; later runs reuse them,
    so sessions survive a restart. Where it serves and what it uses is
    printed first.

    Args:
        host: The address to listen on. Keep the default loopback address:
            the demo serves plain HTTP.
        port: The TCP port.
        data: The data folder (created if missing).
        cookie_secure: Whether the session cookie is ``Secure`` (then named
            ``__Host-donjon``). ``None`` means off, because the demo serves
            plain HTTP: Chromium and Firefox accept a ``Secure`` cookie from
            ``http://127.0.0.1`` but other clients (curl, httpx, some Safari
            versions) never send it back over HTTP, and the demo must work
            for all of them. Pass ``True`` to see the production cookie in
            Chromium or Firefox.

    Raises:
        MissingDependency: The ``demo`` extra is not installed.
    """
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency("uvicorn", "demo") from exc
    from ._app import create_app

    secure = bool(cookie_secure)
    folder = Path(data).resolve()
    app = create_app(folder, cookie_secure=secure)
    demo = app.state.demo
    cookie = demo.engine.cookie
    print(f"Donjon demo: {_url(host, port)}", flush=True)
    print(f"  data folder: {folder}", flush=True)
    state = "generated now" if demo.generated_keys else "loaded"
    print(f"  key file:    {demo.key_file} ({state}; keep it secret)", flush=True)
    print(f"  sessions:    {demo.store_file}", flush=True)
    print(
        f"  cookie:      {cookie.cookie_name} ("
        + ("Secure, " if cookie.secure else "not Secure: plain HTTP, ")
        + "HttpOnly, SameSite=Lax)",
        flush=True,
    )
    print("  Ctrl+C stops it.", flush=True)
    # Verdict events are the point of the demo: show them in the terminal.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    donjon_log = logging.getLogger("donjon")
    donjon_log.addHandler(handler)
    donjon_log.setLevel(logging.INFO)
    uvicorn.run(
        app,
        host=host,
        port=port,
        # Trust no forwarding header: the guard keys clients by their real TCP address.
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_level="info",
    )
