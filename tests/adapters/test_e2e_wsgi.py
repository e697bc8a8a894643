"""End to end over real HTTP: the Flask and Django examples in a real WSGI server.

Each example runs under waitress in its own process, on the embedded SQLite
store in a temporary folder, and is driven by an ``httpx.Client`` that keeps
cookies like a browser.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ._wsgi_http import cookie_attributes, serve

NAME = "donjon"  # DONJON_COOKIE_SECURE=0: no __Host- prefix over plain HTTP

pytestmark = pytest.mark.slow


def _token(client: httpx.Client) -> str | None:
    return client.cookies.get(NAME)


@pytest.mark.parametrize("target", ["examples.flask_app:app", "examples.django_app:app"])
def test_example_over_http(target: str, tmp_path: Path) -> None:
    env = {"DONJON_DATA": str(tmp_path), "DONJON_COOKIE_SECURE": "0", "DONJON_STORE": "sqlite"}
    with serve(target, env=env) as base, httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/whoami").json() == {"user": None, "verdict": "absent"}
        assert _token(client) is None  # an untouched session costs no cookie

        # A visit before logging in gets a session...
        assert client.get("/count").json() == {"n": 1}
        pre_login = _token(client)
        assert pre_login

        # ...whose id is regenerated at login.
        login = client.post("/login", data={"user": "alice"})
        assert login.status_code == 200
        assert login.json() == {"user": "alice"}
        (header,) = login.headers.get_list("set-cookie")
        name, token, attrs = cookie_attributes(header)
        assert name == NAME
        assert {"path=/", "httponly", "samesite=lax"} <= attrs
        assert login.headers["cache-control"] == "no-store"
        assert token == _token(client)
        assert token != pre_login

        for n in (2, 3, 4):  # the data survived the regeneration
            assert client.get("/count").json() == {"n": n}
        assert client.get("/whoami").json() == {"user": "alice", "verdict": "valid"}

        # The pre-login cookie is dead: a fresh session; superseded moments
        # ago, it is not cleared (the browser may hold the new one already).
        old = httpx.get(f"{base}/whoami", cookies={NAME: pre_login}, timeout=10)
        assert old.json() == {"user": None, "verdict": "unknown"}
        assert "set-cookie" not in old.headers

        logout = client.post("/logout")
        assert logout.status_code == 200
        assert "max-age=0" in cookie_attributes(logout.headers["set-cookie"])[2]
        assert _token(client) is None
        assert client.get("/whoami").json() == {"user": None, "verdict": "absent"}

        # The logged-out cookie is dead too; a forged one never gets in.
        dead = httpx.get(f"{base}/whoami", cookies={NAME: token}, timeout=10)
        assert dead.json() == {"user": None, "verdict": "unknown"}
        flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
        forged = httpx.get(f"{base}/whoami", cookies={NAME: flipped}, timeout=10)
        assert forged.status_code == 200
        assert forged.json()["verdict"] in ("forged", "malformed")
