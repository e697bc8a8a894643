"""The demo end to end in a real headless Chromium, driven by Playwright.

The demo runs as ``donjon.demo.run()`` under uvicorn in a subprocess on a free
loopback port; Debian's ``chromium`` (``/usr/bin/chromium``) is the browser,
driven by the ``playwright`` package's bundled driver (no browser download).
Screenshots land in ``tests/artifacts/demo/`` for a person to look at.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from donjon.demo._lab import ATTACKS, GUESSER
from donjon.guard import GuardPolicy

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "demo"
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# `make test` installs both (scripts/system-deps.sh, the tests dependency group):
# a missing browser is a broken set-up, never a reason to skip.
try:
    import playwright.sync_api as sync_api
except ImportError as exc:  # pragma: no cover - depends on the machine
    raise RuntimeError("the demo browser test needs playwright: run `make test`") from exc
if not CHROMIUM.exists():  # pragma: no cover - depends on the machine
    raise RuntimeError("the demo browser test needs /usr/bin/chromium: run `make system-deps`")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def demo_server(data: Path, *, cookie_secure: bool | None = None) -> Iterator[tuple[str, Path]]:
    """Run ``donjon.demo.run`` in a subprocess; yield its URL and its log file."""
    log_path = data.parent / f"{data.name}-server.log"
    for _ in range(3):
        port = _free_port()
        code = (
            "from pathlib import Path; import donjon.demo as d; "
            f"d.run(port={port}, data=Path({str(data)!r}), cookie_secure={cookie_secure!r})"
        )
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", code],
                cwd=ROOT,
                env=dict(os.environ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            else:
                if proc.poll() is None:
                    raise RuntimeError("demo not serving after 20 s:\n" + log_path.read_text())
                continue  # lost the port to another process: try another one
            yield url, log_path
            return
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a hung server
                proc.kill()
                proc.wait()
    raise RuntimeError("demo never started:\n" + log_path.read_text())


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One headless Chromium for the module."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def shot(page: Page, name: str) -> None:
    """Save a full-page screenshot as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_first_five_minutes(chromium: Browser, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with demo_server(data) as (url, log_path):
        context = chromium.new_context(base_url=url, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(10_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        page.goto("/")
        assert page.title() == "Welcome · Donjon demo"
        shot(page, "01-home")

        # -- log in: the cookie changes --------------------------------------
        page.goto("/login")
        shot(page, "02-login")
        [anonymous] = [c["value"] for c in context.cookies() if c["name"] == "donjon"]
        page.click('[data-login="root"]')
        page.wait_for_url("**/profile")
        [signed_in] = [c for c in context.cookies() if c["name"] == "donjon"]
        assert signed_in["value"] != anonymous
        assert signed_in["httpOnly"] and signed_in["sameSite"] == "Lax"
        assert page.text_content("#user") == "root"
        assert page.text_content("#session-class") == "admin"
        assert page.get_attribute("#incoming [data-verdict]", "data-verdict") == "valid"
        before = page.text_content("#cookie-before")
        now = page.text_content("#cookie-now")
        assert before and now and before != now
        shot(page, "03-profile")

        # -- the attack lab: every attack, then the guessing campaign --------
        page.goto("/lab")
        for attack in ATTACKS:
            page.click(f'[data-run="{attack.name}"]')
            page.wait_for_load_state()
            got = page.get_attribute(
                f'[data-attack="{attack.name}"] [data-verdict]', "data-verdict"
            )
            assert got == attack.expect.value, attack.name
        page.click('[data-run="campaign"]')
        page.wait_for_selector('#campaign-result[data-verdict="locked_out"]')
        result = page.locator("#campaign-result")
        assert result.get_attribute("data-attempts") == str(GuardPolicy().threshold + 1)
        assert result.get_attribute("data-retry-after") == "60"
        assert page.locator(f'[data-locked="{GUESSER}"]').count() == 1
        shot(page, "04-lab")

        # -- the dashboard updates by itself --------------------------------
        page.goto("/dashboard")
        total = page.locator('[data-total="forged"]')
        forged_before = int(total.text_content() or "0")
        assert forged_before >= GuardPolicy().threshold
        assert page.locator('[data-chart="verdicts"] svg rect').count() > 0
        updated = page.text_content("#updated")
        other = context.new_page()
        other.goto("/lab")
        other.click('[data-run="forged"]')
        other.wait_for_load_state()
        other.close()
        # Locator assertions poll without eval(), which the page's CSP rightly forbids.
        sync_api.expect(total).not_to_have_text(str(forged_before))
        sync_api.expect(page.locator("#updated")).not_to_have_text(updated or "")
        assert int(total.text_content() or "0") > forged_before
        assert page.get_attribute("[data-live-source]", "data-state") == "live"
        shot(page, "05-dashboard")

        # -- admin: list, rotate, then kill the admin class ----------------
        page.goto("/admin?user=root")
        assert page.get_attribute("#session-count", "data-count") == "1"
        shot(page, "06-admin")
        page.select_option('#rotate select[name="class"]', "admin")
        page.click('[data-action="rotate"]')
        page.wait_for_selector("#flash")
        assert page.text_content('[data-current-key="admin"]') == "k2"
        page.goto("/profile")
        assert page.text_content("#key-id") == "k2", "re-signed with the new key"

        page.goto("/admin")
        page.select_option('#kill select[name="class"]', "admin")
        page.click('[data-action="kill"]')
        page.wait_for_url("**/profile?killed=admin")
        assert page.get_attribute("#incoming [data-verdict]", "data-verdict") == "revoked"
        assert page.locator("#user").count() == 0
        assert "killed the admin class" in (page.text_content("#flash") or "")
        shot(page, "07-killed")
        assert not [c for c in context.cookies() if c["name"] == "donjon"], "cookie cleared"
        assert errors == [], errors  # no script error, no CSP violation, no failed load
        response = page.goto("/admin")
        assert response is not None and response.status == 403
        context.close()
        server_log = log_path.read_text(errors="replace")
    assert "Traceback" not in server_log
    assert "donjon guard: client 198.51.100.23 locked out" in server_log
    assert (data / "keys.json").is_file()


def test_secure_cookie_works_on_loopback(chromium: Browser, tmp_path: Path) -> None:
    """Chromium accepts ``__Host-`` cookies from http://127.0.0.1 (a secure context)."""
    with demo_server(tmp_path / "data", cookie_secure=True) as (url, _log):
        context = chromium.new_context(base_url=url)
        context.set_default_timeout(10_000)
        page = context.new_page()
        page.goto("/login")
        page.click('[data-login="alice"]')
        page.wait_for_url("**/profile")
        [cookie] = context.cookies()
        assert cookie["name"] == "__Host-donjon" and cookie["secure"]
        assert page.text_content("#user") == "alice"
        assert re.fullmatch(r"#[0-9a-f]{8}", page.text_content("#cookie-now") or "")
        context.close()
