"""Admin actions in-process: kill a class, rotate a key, list and revoke sessions."""

from __future__ import annotations

import json
import re

import pytest
from starlette.applications import Starlette

from donjon.core._ids import record_key
from donjon.demo._lab import GUESSER

from .conftest import Browser, attr, demo_of, text_of


def verdict(html: str) -> str:
    """The verdict of the incoming cookie, as the profile shows it."""
    return attr(html, "data-verdict", "data-verdict")


def session_keys(html: str) -> list[str]:
    """The record keys listed on the admin page."""
    return re.findall(r'name="key" value="([0-9a-f]{64})"', html)


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/admin/kill", {"class": "user"}),
        ("/admin/rotate", {"class": "user"}),
        ("/admin/revoke-user", {"user": "bob"}),
        ("/admin/revoke", {"user": "bob", "key": "0" * 64}),
        ("/admin/unlock", {"client": GUESSER}),
    ],
)
async def test_admin_actions_need_an_admin_session(
    browser: Browser, app: Starlette, path: str, fields: dict[str, str]
) -> None:
    assert (await browser.get("/admin")).status_code == 403
    await browser.login("alice")
    assert (await browser.get("/admin")).status_code == 403
    response = await browser.post("/lab", path, **fields)
    assert response.status_code == 403
    demo = demo_of(app)
    assert demo.keyring.epoch("user") == 0
    assert demo.keyring.current_key_id("user") == "k1"


async def test_admin_page_lists_keys_and_classes(browser: Browser) -> None:
    await browser.login("root")
    page = await browser.get("/admin")
    assert page.status_code == 200
    assert 'data-current-key="user">k1<' in page.text
    assert 'data-current-key="admin">k1<' in page.text
    assert '<option value="lab">' not in page.text, "the lab's class is not for admins"


async def test_kill_a_class_ends_its_sessions_only(
    browser: Browser, second: Browser, app: Starlette
) -> None:
    await browser.login("root")
    await second.login("alice")
    response = await browser.post("/admin", "/admin/kill", **{"class": "user"})
    assert response.headers["location"] == "/admin"
    admin = (await browser.get("/admin")).text
    assert "Killed the user class" in admin
    assert demo_of(app).keyring.epoch("user") > 0

    dead = await second.get("/profile")
    assert verdict(dead.text) == "revoked"
    assert "Max-Age=0" in dead.headers["set-cookie"], "the revoked cookie is cleared"
    assert verdict((await browser.get("/profile")).text) == "valid", "admins live on"

    # Logging in again after the kill gives a valid session.
    await second.login("alice")
    assert verdict((await second.get("/profile")).text) == "valid"


async def test_kill_the_admin_class_ends_the_admin_session(browser: Browser) -> None:
    await browser.login("root")
    response = await browser.post("/admin", "/admin/kill", **{"class": "admin"})
    assert response.headers["location"] == "/profile?killed=admin"
    profile = await browser.get(response.headers["location"])
    assert verdict(profile.text) == "revoked"
    assert "You killed the admin class" in text_of(profile.text, "flash")
    assert 'id="user"' not in profile.text
    assert (await browser.get("/admin")).status_code == 403


async def test_killed_sessions_are_marked_and_not_counted(
    browser: Browser, second: Browser, app: Starlette
) -> None:
    await second.login("bob")
    await browser.login("root")
    assert (await demo_of(app).signed_in()) == {"user": 1, "admin": 1}
    await browser.post("/admin", "/admin/kill", **{"class": "user"})
    assert (await demo_of(app).signed_in()) == {"user": 0, "admin": 1}
    listing = (await browser.get("/admin?user=bob")).text
    assert "revoked</span>" in listing


async def test_rotate_a_key_saves_it_and_resigns_sessions(browser: Browser, app: Starlette) -> None:
    demo = demo_of(app)
    await browser.login("root")
    response = await browser.post("/admin", "/admin/rotate", **{"class": "admin"})
    assert response.status_code == 303
    assert browser.cookie is not None and browser.cookie.startswith("v1.admin.k1.")

    saved = json.loads(demo.key_file.read_text())
    assert saved["classes"]["admin"]["current"] == "k2"
    assert sorted(saved["classes"]["admin"]["keys"]) == ["k1", "k2"]
    assert "lab" not in saved["classes"]

    # The cookie signed with k1 still verifies, and the next response re-signs it.
    first = await browser.get("/profile")
    assert "key k2 signs" in text_of(first.text, "flash")
    assert text_of(first.text, "key-id") == "k1"
    assert browser.cookie is not None and browser.cookie.startswith("v1.admin.k2.")
    assert text_of((await browser.get("/profile")).text, "key-id") == "k2"


async def test_list_and_revoke_sessions(browser: Browser, second: Browser, app: Starlette) -> None:
    await browser.login("root")
    await second.login("alice")
    listing = (await browser.get("/admin?user=alice")).text
    assert attr(listing, 'id="session-count"', "data-count") == "1"
    [key] = session_keys(listing)

    response = await browser.post("/admin?user=alice", "/admin/revoke", user="alice", key=key)
    assert response.headers["location"] == "/admin?user=alice"
    after = (await browser.get("/admin?user=alice")).text
    assert "No live session." in after
    assert f"Revoked session {key[:12]}" in after
    assert verdict((await second.get("/profile")).text) == "unknown"


async def test_revoke_every_session_of_a_user(
    browser: Browser, second: Browser, app: Starlette
) -> None:
    await browser.login("root")
    await second.login("bob")
    demo = demo_of(app)
    # A second session of bob, straight through the engine.
    session = await demo.engine.load(None)
    session.login("bob")
    await demo.engine.commit(session, presented=False)

    listing = (await browser.get("/admin?user=bob")).text
    assert attr(listing, 'id="session-count"', "data-count") == "2"
    await browser.post("/admin?user=bob", "/admin/revoke-user", user="bob")
    after = (await browser.get("/admin?user=bob")).text
    assert "Revoked 2 sessions of bob." in after
    assert verdict((await second.get("/profile")).text) == "unknown"


async def test_revoking_your_own_session_logs_you_out(browser: Browser) -> None:
    await browser.login("root")
    listing = (await browser.get("/admin?user=root")).text
    [key] = session_keys(listing)
    assert 'class="class-tag">you<' in listing
    assert session_keys(listing) == [key]
    assert browser.cookie is not None
    response = await browser.post("/admin?user=root", "/admin/revoke", user="root", key=key)
    assert response.headers["location"] == "/profile"
    assert verdict((await browser.get("/profile")).text) == "unknown"


async def test_revoke_rejects_a_bad_key(browser: Browser) -> None:
    await browser.login("root")
    response = await browser.post("/admin", "/admin/revoke", user="root", key="not-a-key")
    assert response.status_code == 400


async def test_own_session_is_marked(browser: Browser, app: Starlette) -> None:
    await browser.login("root")
    cookie = browser.cookie
    assert cookie is not None
    session_id = cookie.split(".")[3]
    listing = (await browser.get("/admin?user=root")).text
    assert session_keys(listing) == [record_key(session_id)]


async def test_unlock_a_locked_client(browser: Browser, app: Starlette) -> None:
    await browser.post("/lab", "/lab/guess")
    await browser.login("root")
    listing = (await browser.get("/admin")).text
    assert f"<code>{GUESSER}</code>" in listing
    await browser.post("/admin", "/admin/unlock", client=GUESSER)
    after = (await browser.get("/admin")).text
    assert f"Lifted the lock-out of {GUESSER}." in after
    demo = demo_of(app)
    assert demo.guard.locked_clients(demo.clock.time()) == {}
