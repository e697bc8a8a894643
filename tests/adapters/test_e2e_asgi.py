"""The example apps over real HTTP: uvicorn in a subprocess, httpx with a cookie jar."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ._http import uvicorn_server

pytestmark = pytest.mark.slow

NAME = "donjon"


def _cookie(response: httpx.Response) -> str:
    [header] = response.headers.get_list("set-cookie")
    name, _, rest = header.partition("=")
    assert name == NAME
    return rest.split(";", 1)[0]


@pytest.mark.parametrize("app", ["starlette_app", "fastapi_app", "litestar_app", "quart_app"])
def test_session_life_cycle(app: str, tmp_path: Path) -> None:
    env = {"DONJON_DATA": str(tmp_path), "DONJON_COOKIE_SECURE": "0", "DONJON_STORE": "sqlite"}
    with (
        uvicorn_server(f"examples.{app}:app", env=env) as (base, log),
        httpx.Client(base_url=base, timeout=10) as client,
    ):
        first = client.get("/count")
        assert first.json() == {"n": 1}
        anonymous = _cookie(first)

        login = client.post("/login", data={"user": "ann"})
        assert login.status_code == 200
        assert login.json() == {"user": "ann"}
        assert _cookie(login) != anonymous, "login regenerates the id"

        assert [client.get("/count").json()["n"] for _ in range(3)] == [2, 3, 4]
        assert client.get("/whoami").json() == {"user": "ann", "verdict": "valid"}

        with httpx.Client(base_url=base, timeout=10) as stranger:
            stale = stranger.get("/whoami", headers={"cookie": f"{NAME}={anonymous}"})
            assert stale.json() == {"user": None, "verdict": "unknown"}
            garbage = stranger.get("/whoami", headers={"cookie": f"{NAME}=garbage"})
            assert garbage.status_code == 200
            assert garbage.json() == {"user": None, "verdict": "malformed"}

        logged_in = client.cookies[NAME]
        logout = client.post("/logout")
        assert logout.status_code == 200
        assert "Max-Age=0" in logout.headers["set-cookie"]
        assert NAME not in client.cookies
        assert client.get("/whoami").json() == {"user": None, "verdict": "absent"}
        replay = client.get("/whoami", headers={"cookie": f"{NAME}={logged_in}"})
        assert replay.json() == {"user": None, "verdict": "unknown"}

        server_log = log.read_text(errors="replace")
    assert "Traceback" not in server_log
    assert (tmp_path / "keys.json").is_file()
    assert (tmp_path / "sessions.sqlite3").is_file()
