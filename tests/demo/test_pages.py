"""The demo in-process: pages, log-in and log-out, CSRF, security headers, key files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from starlette.applications import Starlette

from donjon import KeyRing, Verdict
from donjon.demo import create_app
from donjon.demo._app import SECURITY_HEADERS, short_hash
from donjon.demo._lab import LAB_CLASS

from .conftest import COOKIE, Browser, attr, demo_of, text_of

PAGES = ["/", "/login", "/profile", "/lab", "/dashboard"]


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_renders(browser: Browser, path: str) -> None:
    response = await browser.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    html = response.text
    assert html.startswith("<!doctype html>")
    assert '<link rel="stylesheet" href="/static/demo.css">' in html
    assert "<script>" not in html and "style=" not in html, "no inline script or style (CSP)"


@pytest.mark.parametrize("path", [*PAGES, "/dashboard/data", "/static/demo.css", "/nowhere"])
async def test_security_headers_everywhere(browser: Browser, path: str) -> None:
    response = await browser.get(path)
    for name, value in SECURITY_HEADERS:
        assert response.headers[name.decode()] == value.decode()


@pytest.mark.parametrize(
    ("name", "kind"),
    [("demo.css", "text/css"), ("demo.js", "text/javascript"), ("favicon.svg", "image/svg+xml")],
)
async def test_static_files(browser: Browser, name: str, kind: str) -> None:
    response = await browser.get(f"/static/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(kind)
    assert response.content


async def test_unknown_paths_get_the_404_page(browser: Browser) -> None:
    for path in ("/nowhere", "/static/../keys.json", "/static/keys.json"):
        response = await browser.get(path)
        assert response.status_code == 404
        assert "Not found" in response.text


async def test_browsing_anonymously_sets_no_cookie(browser: Browser) -> None:
    for path in ("/", "/profile", "/dashboard"):
        response = await browser.get(path)
        assert "set-cookie" not in response.headers
    profile = await browser.get("/profile")
    assert attr(profile.text, "data-verdict", "data-verdict") == "absent"


async def test_first_run_generates_keys_and_later_runs_load_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = create_app(data)
    key_file = data / "keys.json"
    assert demo_of(first).generated_keys
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    saved = json.loads(key_file.read_text())
    assert sorted(saved["classes"]) == ["admin", "user"], "the lab class is never saved"
    assert (data / "sessions.sqlite3").is_file()
    await demo_of(first).engine.close()

    again = create_app(data)
    demo = demo_of(again)
    assert not demo.generated_keys
    assert KeyRing.from_file(key_file).to_dict() == KeyRing.from_dict(saved).to_dict()
    assert demo.keyring.get(LAB_CLASS) is not None, "the lab class lives in memory"
    await demo.engine.close()


async def test_a_key_file_without_the_demo_classes_is_refused(tmp_path: Path) -> None:
    KeyRing.generate(["user"]).save(tmp_path / "keys.json")
    with pytest.raises(ValueError, match="admin"):
        create_app(tmp_path)


async def test_login_regenerates_the_session_id(browser: Browser, second: Browser) -> None:
    await browser.get("/login")  # the form's CSRF token starts an anonymous session
    anonymous = browser.cookie
    assert anonymous is not None

    redirect = await browser.login("alice")
    assert redirect.headers["location"] == "/profile"
    signed_in = browser.cookie
    assert signed_in is not None and signed_in != anonymous
    assert "Max-Age=" in redirect.headers["set-cookie"]
    assert "HttpOnly" in redirect.headers["set-cookie"]
    assert "SameSite=Lax" in redirect.headers["set-cookie"]

    profile = (await browser.get("/profile")).text
    assert text_of(profile, "user") == "alice"
    assert text_of(profile, "session-class") == "user"
    assert text_of(profile, "key-id") == "k1"
    assert text_of(profile, "cookie-before") == f"#{short_hash(anonymous)}"
    assert text_of(profile, "cookie-now") == f"#{short_hash(signed_in)}"
    for field in ("created", "last-seen", "issued", "expires"):
        assert "UTC" in text_of(profile, field)
    assert 'id="anatomy"' in profile

    # The id from before the log-in is dead: a fixated cookie is worthless.
    second.client.cookies.set(COOKIE, anonymous)
    replay = (await second.get("/profile")).text
    assert attr(replay, "data-verdict", "data-verdict") == Verdict.UNKNOWN.value
    assert 'id="user"' not in replay


async def test_profile_shows_the_session_data_without_the_csrf_token(browser: Browser) -> None:
    await browser.login("bob")
    profile = (await browser.get("/profile")).text
    assert attr(profile, "data-verdict", "data-verdict") == "valid"
    data = text_of(profile, "session-data")
    assert "csrf" in data and "hidden" in data
    page_csrf = (await browser.get("/lab")).text
    token = page_csrf.split('name="csrf" value="')[1].split('"')[0]
    assert token not in data


async def test_admin_login_uses_the_admin_class(browser: Browser) -> None:
    await browser.login("root")
    profile = (await browser.get("/profile")).text
    assert text_of(profile, "session-class") == "admin"
    assert browser.cookie is not None and browser.cookie.startswith("v1.admin.")


async def test_logout_ends_the_session(browser: Browser, second: Browser) -> None:
    await browser.login("alice")
    cookie = browser.cookie
    assert cookie is not None
    response = await browser.post("/profile", "/logout")
    assert response.status_code == 303
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert browser.cookie is None
    second.client.cookies.set(COOKIE, cookie)
    replay = (await second.get("/profile")).text
    assert attr(replay, "data-verdict", "data-verdict") == "unknown"


async def test_forms_without_the_sessions_csrf_token_are_refused(
    browser: Browser, second: Browser
) -> None:
    await browser.get("/login")
    no_token = await browser.client.post("/login", data={"user": "root"})
    assert no_token.status_code == 403
    other = (await second.get("/login")).text
    token = other.split('name="csrf" value="')[1].split('"')[0]
    foreign = await browser.client.post("/login", data={"user": "root", "csrf": token})
    assert foreign.status_code == 403
    profile = (await browser.get("/profile")).text
    assert 'id="user"' not in profile


async def test_unknown_user_is_a_bad_request(browser: Browser) -> None:
    response = await browser.post("/login", "/login", user="mallory")
    assert response.status_code == 400


async def test_login_while_signed_in_regenerates_again(browser: Browser) -> None:
    await browser.login("alice")
    first = browser.cookie
    await browser.login("bob")
    assert browser.cookie != first
    assert text_of((await browser.get("/profile")).text, "user") == "bob"


async def test_create_app_returns_a_starlette_app(tmp_path: Path) -> None:
    application = create_app(tmp_path)
    assert isinstance(application, Starlette)
    await demo_of(application).engine.close()


def test_public_surface() -> None:
    import donjon.demo

    assert donjon.demo.__all__ == sorted(donjon.demo.__all__) == ["create_app", "run"]
    assert callable(donjon.demo.run) and callable(donjon.demo.create_app)
