"""The attack lab in-process: every attack gets its verdict from the real engine."""

from __future__ import annotations

import re

import pytest
from starlette.applications import Starlette

from donjon import Verdict
from donjon.demo._lab import (
    ATTACKER,
    ATTACKS,
    GUESSER,
    LAB_CLASS,
    Attack,
    abbreviate,
    guess,
)
from donjon.guard import GuardPolicy

from .conftest import Browser, attr, demo_of

THRESHOLD = GuardPolicy().threshold


def row(html: str, attack: str) -> str:
    """The lab table's row of one attack."""
    match = re.search(rf'<tr data-attack="{re.escape(attack)}".*?</tr>', html, re.S)
    assert match, f"no row for {attack}"
    return match.group(0)


def verdict_of(html: str, attack: str) -> str:
    """The verdict shown for an attack."""
    return attr(row(html, attack), "data-verdict", "data-verdict")


def store_calls_of(html: str, attack: str) -> int:
    """The store round trips shown for an attack."""
    return int(attr(row(html, attack), "data-store-calls", "data-store-calls"))


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
async def test_each_attack_gets_its_verdict(browser: Browser, attack: Attack) -> None:
    before = (await browser.get("/lab")).text
    assert "not run yet" in row(before, attack.name)
    response = await browser.post("/lab", "/lab/attack", attack=attack.name)
    assert response.status_code == 303
    page = (await browser.get("/lab")).text
    assert verdict_of(page, attack.name) == attack.expect.value
    assert f"{attack.name}: {attack.expect.value}" in page, "flash message"
    calls = store_calls_of(page, attack.name)
    if attack.expect is Verdict.UNKNOWN:
        assert calls >= 1, "only a signature-valid cookie reaches the store"
    else:
        assert calls == 0, "steps 0-6 never touch the store"


async def test_send_every_attack(browser: Browser, app: Starlette) -> None:
    await browser.post("/lab", "/lab/attack", attack="all")
    page = (await browser.get("/lab")).text
    for attack in ATTACKS:
        assert verdict_of(page, attack.name) == attack.expect.value, attack.name
    totals = demo_of(app).stats.totals
    assert totals[Verdict.FORGED] >= 4
    assert totals[Verdict.BINDING_MISMATCH] == 1


async def test_attacks_do_not_touch_the_visitors_session(browser: Browser) -> None:
    await browser.login("alice")
    cookie = browser.cookie
    await browser.post("/lab", "/lab/attack", attack="all")
    assert browser.cookie == cookie
    profile = (await browser.get("/profile")).text
    assert attr(profile, "data-verdict", "data-verdict") == "valid"


async def test_the_guessing_campaign_ends_locked_out(browser: Browser, app: Starlette) -> None:
    response = await browser.post("/lab", "/lab/guess")
    assert response.status_code == 303
    page = (await browser.get("/lab")).text
    result = attr(page, 'id="campaign-result"', "data-verdict")
    assert result == Verdict.LOCKED_OUT.value
    assert attr(page, 'id="campaign-result"', "data-attempts") == str(THRESHOLD + 1)
    assert attr(page, 'id="campaign-result"', "data-retry-after") == "60"
    assert attr(page, 'id="campaign-result"', "data-store-calls") == "0"
    assert "429 Too Many Requests" in page
    assert f'data-locked="{GUESSER}"' in page
    guard = demo_of(app).guard
    assert guard.lockouts == 1
    # The single-attack address is a different client: not locked out.
    assert f'data-locked="{ATTACKER}"' not in page

    # Still locked out: the next campaign is refused at its first guess.
    await browser.post("/lab", "/lab/guess")
    again = (await browser.get("/lab")).text
    assert attr(again, 'id="campaign-result"', "data-attempts") == "1"

    # Lifting the lock-out starts over.
    await browser.post("/lab", "/lab/reset")
    reset = (await browser.get("/lab")).text
    assert 'id="campaign-result" data' not in reset
    assert f'data-locked="{GUESSER}"' not in reset
    await browser.post("/lab", "/lab/guess")
    fresh = (await browser.get("/lab")).text
    assert attr(fresh, 'id="campaign-result"', "data-attempts") == str(THRESHOLD + 1)


async def test_a_persistent_attacker_is_locked_out_too(browser: Browser) -> None:
    # Six of the ten attacks count towards the guard (expired, revoked... do not).
    for _ in range(4):
        await browser.post("/lab", "/lab/attack", attack="all")
    page = (await browser.get("/lab")).text
    # 3 x 6 + malformed + forged = 20 attack verdicts: the lock-out starts after forged.
    assert verdict_of(page, "forged") == Verdict.FORGED.value
    for attack in ("tampered", "expired", "replayed"):
        assert verdict_of(page, attack) == Verdict.LOCKED_OUT.value, attack
        assert "<strong>429</strong>" in row(page, attack)
    assert f'data-locked="{ATTACKER}"' in page


async def test_unknown_attack_is_a_bad_request(browser: Browser) -> None:
    response = await browser.post("/lab", "/lab/attack", attack="rm -rf")
    assert response.status_code == 400


async def test_lab_attacks_use_only_the_throwaway_class(app: Starlette) -> None:
    demo = demo_of(app)
    user_epoch = demo.keyring.epoch("user")
    admin_keys = demo.keyring.snapshot("admin")
    for attack in ATTACKS:
        await demo.lab.run(attack.name)
    assert demo.keyring.epoch("user") == user_epoch
    assert demo.keyring.snapshot("admin") == admin_keys
    assert demo.keyring.epoch(LAB_CLASS) > 0
    assert demo.keyring.snapshot(LAB_CLASS).retired


def test_guess_is_well_formed_but_never_valid() -> None:
    token = guess("k1", 1_800_000_000.0)
    parts = token.split(".")
    assert len(parts) == 8 and parts[0] == "v1" and parts[1] == "user"
    assert len(parts[7]) == 64


def test_abbreviate_cuts_the_id_and_mac() -> None:
    token = guess("k1", 1_800_000_000.0)
    short = abbreviate(token)
    assert short.startswith("v1.user.k1.") and "…" in short
    assert len(short) < len(token) // 2
    assert abbreviate("x" * 100).endswith("…")
    assert abbreviate("short") == "short"


async def test_the_retired_attack_keeps_the_throwaway_class_small(app: Starlette) -> None:
    demo = demo_of(app)
    for _ in range(30):
        result = await demo.lab.run("retired")
        assert result.verdict is Verdict.RETIRED
    assert len(demo.keyring.snapshot(LAB_CLASS).retired) <= 8
