"""donjon.compat.express against the real Node packages.

(a) The cookie codec agrees byte for byte with express-session 1.19.0 (its own
    cookie-signature 1.0.7 and `cookie` 0.7.2) and with cookie-signature
    1.2.2, run by tests/compat/node_express_signature.js in batches.
(b) A real Express app (tests/compat/node_express_app.js: express,
    express-session, connect-redis, redis) and a donjon app (:func:`make_app`,
    Starlette under uvicorn) run side by side as subprocesses on one real
    Redis with one secret list, and share logins over real HTTP.

A missing ``node`` fails these tests with a message saying what to install;
they never skip.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from donjon import KeyRing, Verdict
from donjon.adapters import find_cookie
from donjon.adapters.starlette import session_of
from donjon.compat.express import (
    AsyncExpressEngine,
    ExpressContext,
    ExpressCookie,
    ExpressEngine,
    ExpressSessionMiddleware,
    ExpressSigner,
    decode_uri_component,
    encode_uri_component,
)
from donjon.config import CookiePolicy
from donjon.engine import AsyncEngine
from donjon.errors import ConfigurationError, StoreUnavailable, WeakSecret
from donjon.events import VerdictEvent
from donjon.guard import Guard, GuardPolicy
from donjon.session import Session
from donjon.stores import MemoryStore
from tests.servers.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NODE_DIR = ROOT / "tests" / "node"
SIGNATURE_JS = HERE / "node_express_signature.js"
APP_JS = HERE / "node_express_app.js"

NAME = "connect.sid"
STRONG = "a strong secret, rotated in: 0123456789abcdef"
WEAK = "keyboard cat"  # the Express app's old secret, still verifying
SECRETS = [STRONG, WEAK]
MAX_AGE = 3600

# --------------------------------------------------------------------------
# Node
# --------------------------------------------------------------------------


def require_node() -> str:
    """Return the path of ``node``, or fail (never skip) saying what to install."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "`node` is not on PATH: the express-session interoperability tests run the real"
            " Node packages. Install Node.js 20+ and run `make node-deps`.",
            pytrace=False,
        )
    if not (NODE_DIR / "node_modules" / "express-session" / "package.json").is_file():
        pytest.fail(
            "the Node packages are not installed in tests/node/node_modules:"
            " run `make node-deps` (npm ci).",
            pytrace=False,
        )
    return node


def run_node(script: Path, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run ``script`` once over a batch of JSON-line requests; return its answers."""
    proc = subprocess.run(
        [require_node(), str(script)],
        input="".join(json.dumps(r) + "\n" for r in requests),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = [json.loads(line) for line in proc.stdout.split("\n") if line.strip()]
    assert len(answers) == len(requests), proc.stderr[-3000:]
    for request, answer in zip(requests, answers, strict=True):
        assert "error" not in answer, (request, answer)
    return answers


def test_missing_node_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(pytest.fail.Exception, match="`node` is not on PATH"):
        require_node()


# --------------------------------------------------------------------------
# (a) The codec, alone and against Node
# --------------------------------------------------------------------------


def js_secret(secret: str | bytes) -> dict[str, str]:
    return {"hex": secret.hex()} if isinstance(secret, bytes) else {"s": secret}


def signer_for(secrets: list[str | bytes]) -> ExpressSigner:
    return ExpressSigner(secrets, allow_weak_secrets=True)


ODD_IDS = [
    "a", "abc", "x.y", "a.b.c", ".", "..", "id with space", "semi;colon", "comma,",
    "pct%41", "%", "%%", "quote\"", "'", "café", "日本語", "emoji😀", "plus+slash/eq=",
    "tab\there", "s:nested", "-_!~*'()", "A" * 200, "new\nline", "back\\slash", "=",
    "\x7f", "ÿ", "\u2028", "\ufeffbom",
]  # fmt: skip


def random_ids(rng: random.Random) -> list[str]:
    """Ids as uid-safe makes them, and random text (ASCII, Latin-1, BMP, astral)."""
    alphabet = "abcXYZ019-_.!~*'()%;, \"=+/:?#[]@&$" + "éñÿ" + "Ωж中文" + "😀𝄞"
    ids = [base64.urlsafe_b64encode(rng.randbytes(24)).decode().rstrip("=") for _ in range(30)]
    ids += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(60)]
    return ids


SECRET_LISTS: list[list[str | bytes]] = [
    [WEAK],
    [STRONG],
    [STRONG, WEAK],
    [bytes(range(40)), "another secret of enough length, 32+ bytes"],
    ["clé secrète ☃ 😀 with some more bytes to be long", WEAK, "third"],
    ["k"],
]


def test_known_answer() -> None:
    # Made by express-session 1.19.0 (cookie-signature 1.0.7) with secret "keyboard cat".
    signer = signer_for([WEAK])
    assert signer.sign("abc") == "s:abc.BpxCrWRpvZMh/wk/djl34N+m+VQEU7K/5WenLwJCgFU"
    value = "s%3Aabc.BpxCrWRpvZMh%2Fwk%2Fdjl34N%2Bm%2BVQEU7K%2F5WenLwJCgFU"
    assert signer.cookie_value("abc") == value
    result = signer.verify(value)
    assert result.verdict is Verdict.VALID
    assert (result.session_id, result.key_id, result.session_class) == ("abc", "0", "express")


def test_signing_agrees_with_node_byte_for_byte() -> None:
    rng = random.Random(1)
    cases = [(i, secrets) for secrets in SECRET_LISTS for i in ODD_IDS + random_ids(rng)]
    requests = [
        {"op": "sign", "id": i, "secrets": [js_secret(s) for s in secrets], "name": NAME}
        for i, secrets in cases
    ]
    answers = run_node(SIGNATURE_JS, requests)
    signers = {id(s): signer_for(s) for s in SECRET_LISTS}
    for (sid, secrets), answer in zip(cases, answers, strict=True):
        signer = signers[id(secrets)]
        signed = signer.sign(sid)
        assert signed == "s:" + answer["v10"] == "s:" + answer["v12"], sid
        # The Set-Cookie of the real express-session middleware for a new session with this id.
        (set_cookie,) = answer["setCookie"]
        assert set_cookie.split(";")[0] == f"{NAME}={signer.cookie_value(sid)}", sid
    assert len(cases) > 500


def tamper(rng: random.Random, text: str) -> str:
    pos = rng.randrange(len(text))
    choices = "ABCabc0129+/-_"
    new = rng.choice([c for c in choices if c != text[pos]])
    return text[:pos] + new + text[pos + 1 :]


def unsign_cases(rng: random.Random) -> list[tuple[str | None, list[str | bytes]]]:
    """Cookie headers and secret lists: valid, tampered, foreign, odd encodings."""
    cases: list[tuple[str | None, list[str | bytes]]] = []
    foreign = signer_for(["a secret nobody configured here at all"])
    for secrets in SECRET_LISTS:
        ids = ODD_IDS + random_ids(rng)
        for sid in ids:
            k = rng.randrange(len(secrets))
            by_k = signer_for([secrets[k]])
            signed = by_k.sign(sid)
            value = encode_uri_component(signed)
            mac = signed.rsplit(".", 1)[1]
            body = signed[: -len(mac) - 1]
            variants = [
                value,
                f'"{value}"',
                value.replace("s%3A", "s%3a", 1),
                encode_uri_component(f"{body}.{tamper(rng, mac)}"),
                encode_uri_component(f"s:{tamper(rng, sid)}.{mac}"),
                encode_uri_component(f"{body}.{mac[:-1]}"),
                encode_uri_component(f"{body}.{mac}="),
                encode_uri_component(f"{body}.{mac}") + "%3D",
                foreign.cookie_value(sid),
                encode_uri_component(sid),
                encode_uri_component(f"{sid}.{mac}"),
            ]
            if signed.isascii() and "%" not in signed and ";" not in signed:
                variants.append(signed)  # unencoded, as a hand-made client might send it
            for v in variants:
                cases.append((f"{NAME}={v}", secrets))
            cases.append((f"other=1; {NAME}={value}; more=2", secrets))
            cases.append((f"{NAME}={value}; {NAME}={foreign.cookie_value(sid)}", secrets))
            cases.append((f"{NAME}={foreign.cookie_value(sid)}; {NAME}={value}", secrets))
    for junk in ["", "s:", "s%3A", "s%3A.", "s:.", "garbage", "s%3Aabc", "s%3A%2E" * 3, "%"]:
        cases.append((f"{NAME}={junk}", [WEAK]))
    cases.append((None, [WEAK]))
    return cases


def python_get(header: str | None, signer: ExpressSigner) -> str | None:
    lookup = find_cookie([header] if header is not None else [], NAME)
    if lookup.value is None:
        return None
    result = signer.verify(lookup.value)
    return result.session_id if result.verdict is Verdict.VALID else None


def test_unsigning_agrees_with_real_express_session() -> None:
    rng = random.Random(2)
    cases = unsign_cases(rng)
    requests = [
        {"op": "get", "header": h, "secrets": [js_secret(s) for s in secrets], "name": NAME}
        for h, secrets in cases
    ]
    answers = run_node(SIGNATURE_JS, requests)
    signers = {id(s): signer_for(s) for s in SECRET_LISTS}
    accepted = 0
    for (header, secrets), answer in zip(cases, answers, strict=True):
        signer = signers.get(id(secrets)) or signer_for(secrets)
        mine = python_get(header, signer)
        assert mine == answer["id"], (header, secrets, mine, answer["id"])
        accepted += mine is not None
    assert len(cases) > 2000
    assert accepted > 600  # the agreement is not only on rejections


def test_unsign_agrees_with_both_cookie_signature_versions() -> None:
    rng = random.Random(3)
    requests = []
    expected = []
    for secrets in SECRET_LISTS:
        signer = signer_for(secrets)
        for sid in random_ids(rng) + ODD_IDS:
            signed = signer_for([rng.choice(secrets)]).sign(sid)[2:]
            for text in (signed, tamper(rng, signed), signed + "x", signed[:-1]):
                requests.append(
                    {"op": "unsign", "input": text, "secrets": [js_secret(s) for s in secrets]}
                )
                result = signer.verify("s:" + text) if text.isascii() and "%" not in text else None
                expected.append(result)
    answers = run_node(SIGNATURE_JS, requests)
    compared = 0
    for request, answer, result in zip(requests, answers, expected, strict=True):
        assert answer["v10"] == answer["v12"], request
        if result is None:
            continue  # non-ASCII input: covered through the real cookie path above
        compared += 1
        mine = result.session_id if result.verdict is Verdict.VALID else False
        assert mine == answer["v10"], (request, result)
    assert compared > 300


def test_documented_differences_from_express_session() -> None:
    """What express-session accepts and donjon rejects as MALFORMED, on purpose."""
    signer = signer_for([WEAK])
    long_id = "é" * 200  # 1 200 characters once URL-encoded
    bad_escape_id = "ab%ZZ"
    # An app's own genid may make longer ids; sign() refuses them, so verify must too.
    huge_id = "x" * 300
    cases = {
        "too_long": f"{NAME}={signer.cookie_value(long_id)}",
        "bad_encoding": f"{NAME}={signer.sign(bad_escape_id)}",  # raw: Node falls back to it
        "not_ascii": f"{NAME}={signer.sign('é')}",  # a raw Latin-1 character
        "id_too_long": f"{NAME}={encode_uri_component(f's:{huge_id}.{signer._mac(0, huge_id)}')}",
    }
    answers = run_node(
        SIGNATURE_JS,
        [
            {"op": "get", "header": h, "secrets": [js_secret(WEAK)], "name": NAME}
            for h in cases.values()
        ],
    )
    assert [a["id"] for a in answers] == [long_id, bad_escape_id, "é", huge_id]
    for reason, header in cases.items():
        value = find_cookie([header], NAME).value
        result = signer.verify(value)
        assert (result.verdict, result.reason) == (Verdict.MALFORMED, reason)


COOKIE_OPTIONS: list[tuple[dict[str, Any], ExpressCookie]] = [
    ({}, ExpressCookie()),
    ({"maxAge": 3600000}, ExpressCookie(max_age=3600)),
    (
        {"maxAge": 60000, "secure": False, "sameSite": "strict", "domain": "example.com"},
        ExpressCookie(max_age=60, secure=False, same_site="strict", domain="example.com"),
    ),
    (
        {"maxAge": 1500, "httpOnly": False, "path": "/app", "priority": "high"},
        ExpressCookie(max_age=1.5, http_only=False, path="/app", priority="high"),
    ),
    (
        {"maxAge": 86400000, "secure": True, "sameSite": "none", "partitioned": True},
        ExpressCookie(max_age=86400, secure=True, same_site="none", partitioned=True),
    ),
]


def test_new_records_and_set_cookie_match_express_session() -> None:
    """A new session's record and Set-Cookie, option by option, against the real middleware."""
    requests = [
        {
            "op": "record", "id": "the-id", "secrets": [js_secret(WEAK)], "name": NAME,
            "cookie": options,
        }
        for options, _ in COOKIE_OPTIONS
    ]  # fmt: skip
    answers = run_node(SIGNATURE_JS, requests)
    for (options, cookie), answer in zip(COOKIE_OPTIONS, answers, strict=True):
        engine = AsyncExpressEngine(
            object(),  # type: ignore[arg-type]  # planning needs no Redis
            signer=signer_for([WEAK]),
            cookie=cookie,
            genid=lambda: "the-id",
        )
        ctx = ExpressContext(Session(), cookie=None, presented=False, secure=True)
        ctx.session["n"] = 1
        ops, outcome = engine.core.plan(ctx, time.time())
        mine = json.loads(ops[0].value)  # type: ignore[union-attr]
        theirs = json.loads(answer["record"])
        # express-session's touch() re-reads the clock when it sets expires, so its
        # originalMaxAge loses a millisecond when the clock ticks in between.
        assert (
            0
            <= (mine["cookie"]["originalMaxAge"] or 0) - (theirs["cookie"]["originalMaxAge"] or 0)
            <= 1
        )
        theirs["cookie"]["originalMaxAge"] = mine["cookie"]["originalMaxAge"]
        for record in (mine, theirs):
            expires = record["cookie"].pop("expires")
            if "maxAge" in options:
                stamp = datetime.fromisoformat(expires).timestamp()
                assert abs(stamp - time.time() - options["maxAge"] / 1000) < 5
            else:
                assert expires is None
        assert json.dumps(mine) == json.dumps(theirs), options  # same keys, order, values
        (header,) = answer["setCookie"]
        assert outcome.set_cookie is not None
        strip = re.compile(r"; Expires=[^;]+")
        assert strip.sub("", outcome.set_cookie) == strip.sub("", header), options
        assert ("Expires=" in outcome.set_cookie) == ("Expires=" in header)


class TestCodec:
    signer = ExpressSigner([STRONG, WEAK], allow_weak_secrets=True)

    @pytest.mark.parametrize(
        ("value", "verdict", "reason"),
        [
            ("", Verdict.MALFORMED, "empty"),
            ("abc", Verdict.MALFORMED, "unsigned"),
            ("s%3Aabc", Verdict.MALFORMED, "no_signature"),
            ("s%3Aabc.short", Verdict.MALFORMED, "mac_shape"),
            ("s%3Aabc." + "!" * 43, Verdict.MALFORMED, "mac_shape"),
            ("s%3Aabc%ZZ.x", Verdict.MALFORMED, "bad_encoding"),
            ("s%3Aabc%C3.x", Verdict.MALFORMED, "bad_encoding"),
            ("s%3Aabc%ED%A0%80.x", Verdict.MALFORMED, "bad_encoding"),
            ("s%3Aabc." + "A" * 43, Verdict.FORGED, "bad_mac"),
            ("s%3A" + "x" * 600, Verdict.MALFORMED, "too_long"),
            (b"s%3A" + b"x" * 600, Verdict.MALFORMED, "too_long"),
            ("s:é.x", Verdict.MALFORMED, "not_ascii"),
            (b"\xff", Verdict.MALFORMED, "not_ascii"),
            (None, Verdict.MALFORMED, "not_text"),
            (12, Verdict.MALFORMED, "not_text"),
        ],
    )
    def test_verdicts(self, value: object, verdict: Verdict, reason: str) -> None:
        result = self.signer.verify(value)
        assert (result.verdict, result.reason) == (verdict, reason)
        assert result.session_id is None

    def test_empty_id_is_not_a_session(self) -> None:
        # express-session treats a validly signed empty id as no cookie at all.
        empty = self.signer._mac(0, "")
        value = encode_uri_component(f"s:.{empty}")
        assert self.signer.verify(value).reason == "empty_id"

    def test_every_secret_verifies_the_first_signs(self) -> None:
        old = ExpressSigner([WEAK], allow_weak_secrets=True).cookie_value("sid")
        new = self.signer.cookie_value("sid")
        assert self.signer.verify(old).key_id == "1"
        assert self.signer.verify(new).key_id == "0"
        assert self.signer.verify(new.encode()).session_id == "sid"
        assert self.signer.verify(f'"{new}"').session_id == "sid"

    def test_never_raises_on_junk(self) -> None:
        rng = random.Random(4)
        good = self.signer.cookie_value("abc")
        for _ in range(3000):
            kind = rng.randrange(4)
            if kind == 0:
                value: object = rng.randbytes(rng.randrange(0, 120))
            elif kind == 1:
                value = "".join(chr(rng.randrange(0, 0x2FFFF)) for _ in range(rng.randrange(0, 60)))
            elif kind == 2:
                value = tamper(rng, good)
            else:
                value = good[: rng.randrange(len(good))]
            if isinstance(value, str):
                value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
                if decode_uri_component(value) == decode_uri_component(good):
                    continue  # e.g. "%2F" -> "%2f": the same cookie, rightly VALID
            result = self.signer.verify(value)
            assert result.verdict in (Verdict.MALFORMED, Verdict.FORGED)

    def test_secrets_are_checked(self) -> None:
        with pytest.raises(WeakSecret):
            ExpressSigner([WEAK])
        with pytest.raises(ConfigurationError):
            ExpressSigner([])
        with pytest.raises(ConfigurationError):
            ExpressSigner([""], allow_weak_secrets=True)
        with pytest.raises(ConfigurationError):
            ExpressSigner([STRONG], max_length=10)
        assert "cat" not in repr(self.signer)
        with pytest.raises(ValueError, match="express-session id"):
            self.signer.sign("")
        with pytest.raises(ValueError, match="express-session id"):
            self.signer.sign("\ud800")

    def test_uri_component(self) -> None:
        assert encode_uri_component("s:a b/c+é-_.!~*'()") == "s%3Aa%20b%2Fc%2B%C3%A9-_.!~*'()"
        assert decode_uri_component("s%3Aa%20b%2Fc%2B%C3%A9") == "s:a b/c+é"
        assert decode_uri_component("plain") == "plain"
        for bad in ("%", "%4", "%ZZ", "%C3", "%C0%80", "%ED%A0%80", "a%F4%90%80%80"):
            assert decode_uri_component(bad) is None, bad


# --------------------------------------------------------------------------
# (b) Real servers
# --------------------------------------------------------------------------


def make_app(
    engine: AsyncExpressEngine | None = None, upgrade: AsyncEngine | None = None
) -> Starlette:
    """The donjon twin of node_express_app.js (uvicorn runs it with ``--factory``)."""
    if engine is None:
        engine = AsyncExpressEngine.from_url(
            os.environ["DONJON_EXPRESS_REDIS_URL"],
            signer=ExpressSigner(
                json.loads(os.environ["DONJON_EXPRESS_SECRETS"]), allow_weak_secrets=True
            ),
            cookie=ExpressCookie(max_age=float(os.environ.get("DONJON_EXPRESS_MAX_AGE", MAX_AGE))),
            user_field="user",
        )

    async def count(request: Request) -> JSONResponse:
        session = session_of(request)
        n = session.get("n")
        session["n"] = (n if isinstance(n, int) else 0) + 1
        return JSONResponse({"n": session["n"], "user": session.user_id})

    async def login(request: Request) -> JSONResponse:
        session = session_of(request)
        session.login(request.query_params["user"])
        return JSONResponse({"user": session.user_id})

    async def logout(request: Request) -> JSONResponse:
        session_of(request).logout()
        return JSONResponse({"ok": True})

    async def whoami(request: Request) -> JSONResponse:
        session = session_of(request)
        return JSONResponse(
            {"user": session.user_id, "n": session.get("n") or 0, "verdict": session.verdict}
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await engine.close()

    return Starlette(
        routes=[
            Route("/count", count),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/whoami", whoami),
        ],
        middleware=[Middleware(ExpressSessionMiddleware, engine=engine, upgrade=upgrade)],
        lifespan=lifespan,
    )


class Server:
    """A server subprocess on 127.0.0.1, ready once it answers GET /whoami."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [a.replace("{port}", str(self.port)) for a in args],
                env={**os.environ, **env, "PORT": str(self.port)},
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(self.url + "/whoami", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"{name} did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Pair:
    express: Server
    python: Server
    redis: redis.Redis
    redis_url: str


@pytest.fixture(scope="module")
def pair(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """The Express app and the donjon app on one Redis, one secret list; stopped at the end."""
    node = require_node()
    if not redis_server.running:
        redis_server.restart()
    logs = tmp_path_factory.mktemp("express-interop")
    secrets = json.dumps(SECRETS)
    express = Server(
        "the Express app",
        [node, str(APP_JS)],
        {"REDIS_URL": redis_server.url, "SECRETS": secrets, "MAX_AGE_MS": str(MAX_AGE * 1000)},
        logs / "express.log",
    )
    try:
        python = Server(
            "the donjon app",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.compat.test_express:make_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            {
                "DONJON_EXPRESS_REDIS_URL": redis_server.url,
                "DONJON_EXPRESS_SECRETS": secrets,
                "DONJON_EXPRESS_MAX_AGE": str(MAX_AGE),
            },
            logs / "python.log",
        )
    except BaseException:
        express.stop()
        raise
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield Pair(express, python, client, redis_server.url)
    finally:
        client.close()
        python.stop()
        express.stop()


class Browser:
    """One browser on one host: cookies ignore the port, as RFC 6265 says."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}
        self.http = httpx.Client(timeout=10)
        self.set_cookies: list[str] = []

    def __call__(self, method: str, server: Server, path: str) -> dict[str, Any]:
        headers = {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        response = self.http.request(method, server.url + path, headers=headers)
        assert response.status_code == 200, (server.name, path, response.text)
        self.set_cookies = response.headers.get_list("set-cookie")
        for header in self.set_cookies:
            pair, *attrs = header.split(";")
            name, _, value = pair.strip().partition("=")
            gone = any(a.strip().lower() == "expires=thu, 01 jan 1970 00:00:00 gmt" for a in attrs)
            if gone or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        body: dict[str, Any] = response.json()
        return body

    @property
    def sid(self) -> str:
        result = ExpressSigner(SECRETS, allow_weak_secrets=True).verify(self.cookies[NAME])
        assert result.session_id is not None
        return result.session_id

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = Browser()
    yield b
    b.close()


def test_login_on_express_is_seen_by_python(pair: Pair, browser: Browser) -> None:
    assert browser("POST", pair.express, "/login?user=alice") == {"user": "alice"}
    assert browser("GET", pair.python, "/whoami") == {"user": "alice", "n": 0, "verdict": "valid"}
    assert browser("GET", pair.express, "/whoami") == {"user": "alice", "n": 0}


def test_login_on_python_is_seen_by_express(pair: Pair, browser: Browser) -> None:
    assert browser("POST", pair.python, "/login?user=bob") == {"user": "bob"}
    assert browser.cookies[NAME].startswith("s%3A")
    assert browser("GET", pair.express, "/whoami") == {"user": "bob", "n": 0}
    assert browser("GET", pair.python, "/whoami")["user"] == "bob"


def test_counter_is_shared(pair: Pair, browser: Browser) -> None:
    browser("POST", pair.express, "/login?user=carol")
    seen = [browser("GET", side, "/count")["n"] for side in [pair.python, pair.express] * 3]
    assert seen == [1, 2, 3, 4, 5, 6]
    assert browser("GET", pair.express, "/whoami") == {"user": "carol", "n": 6}
    # An anonymous session started on either side is shared too.
    other = Browser()
    try:
        assert other("GET", pair.express, "/count")["n"] == 1
        assert other("GET", pair.python, "/count") == {"n": 2, "user": None}
        assert other("GET", pair.express, "/count")["n"] == 3
    finally:
        other.close()


@pytest.mark.parametrize("side", ["express", "python"])
def test_logout_on_either_side_ends_both(pair: Pair, browser: Browser, side: str) -> None:
    login_on, logout_on = (
        (pair.python, pair.express) if side == "express" else (pair.express, pair.python)
    )
    browser("POST", login_on, "/login?user=dave")
    key = f"sess:{browser.sid}"
    cookie = browser.cookies[NAME]
    assert pair.redis.exists(key)
    assert browser("POST", logout_on, "/logout") == {"ok": True}
    assert NAME not in browser.cookies  # cleared by the side that logged out
    assert not pair.redis.exists(key)
    # The old cookie, replayed, is a dead session on both sides.
    browser.cookies[NAME] = cookie
    assert browser("GET", pair.python, "/whoami") == {"user": None, "n": 0, "verdict": "unknown"}
    browser.cookies[NAME] = cookie
    assert browser("GET", pair.express, "/whoami") == {"user": None, "n": 0}


def test_records_and_ttls_match_connect_redis(pair: Pair) -> None:
    records = {}
    for server in (pair.express, pair.python):
        b = Browser()
        try:
            b("POST", server, "/login?user=erin")
            b("GET", server, "/count")
            key = f"sess:{b.sid}"
            records[server.name] = (json.loads(pair.redis.get(key) or "null"), pair.redis.ttl(key))
            headers = b.set_cookies
        finally:
            b.close()
        (header,) = headers
        attrs = [a.strip().split("=")[0] for a in header.split(";")[1:]]
        assert attrs == ["Path", "Expires", "HttpOnly"], (server.name, header)
    (node_rec, node_ttl), (py_rec, py_ttl) = records.values()
    assert list(py_rec) == list(node_rec) == ["cookie", "user", "n"]
    assert list(py_rec["cookie"]) == list(node_rec["cookie"])
    assert py_rec["cookie"]["originalMaxAge"] == 3600000
    assert node_rec["cookie"]["originalMaxAge"] in (3600000, 3599999)  # see the test above
    assert py_rec["cookie"]["expires"].endswith("Z")
    assert abs(node_ttl - MAX_AGE) <= 2
    assert abs(py_ttl - MAX_AGE) <= 2


def test_python_touches_unchanged_sessions_like_express(pair: Pair, browser: Browser) -> None:
    browser("POST", pair.express, "/login?user=frank")
    key = f"sess:{browser.sid}"
    pair.redis.expire(key, 100)
    before = pair.redis.get(key)
    browser("GET", pair.python, "/whoami")
    assert abs(pair.redis.ttl(key) - MAX_AGE) <= 2  # EXPIRE, as connect-redis's touch
    assert pair.redis.get(key) == before  # not rewritten: resave false
    assert browser.set_cookies == []  # not rolling, nothing changed


# --------------------------------------------------------------------------
# In-process engines on the same real Redis
# --------------------------------------------------------------------------


class Counting:
    """Wraps a redis client and counts the commands sent through it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name in ("aclose", "close"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attr(*args, **kwargs)

        return call


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def engine_on(client: Any, **kw: Any) -> AsyncExpressEngine:
    kw.setdefault("signer", ExpressSigner(SECRETS, allow_weak_secrets=True))
    kw.setdefault("cookie", ExpressCookie(max_age=MAX_AGE))
    kw.setdefault("user_field", "user")
    return AsyncExpressEngine(client, **kw)


async def test_forged_cookies_cost_no_redis_command_and_feed_the_guard(
    aredis: redis.asyncio.Redis,
) -> None:
    counting = Counting(aredis)
    events: list[VerdictEvent] = []
    guard = Guard(GuardPolicy(threshold=5))
    engine = engine_on(counting, guard=guard, events=[events.append])
    forger = ExpressSigner(["not the secret, but long enough to pass 32"])
    cookies = [
        forger.cookie_value("victim-id"),
        "s%3Avictim-id." + "A" * 43,
        "garbage",
        "s%3A" + "x" * 5000,
    ]
    for value in cookies:
        ctx = await engine.load(value, client="203.0.113.9")
        assert ctx.session.verdict in (Verdict.FORGED, Verdict.MALFORMED)
        outcome = await engine.commit(ctx)
        assert outcome.set_cookie is not None and "Expires=Thu, 01 Jan 1970" in outcome.set_cookie
    assert counting.calls == []
    assert [e.verdict for e in events] == [
        Verdict.FORGED, Verdict.FORGED, Verdict.MALFORMED, Verdict.MALFORMED,
    ]  # fmt: skip
    assert all(e.session_ref is None for e in events)
    ctx = await engine.load(forger.cookie_value("x"), client="203.0.113.9")
    assert ctx.session.verdict is Verdict.FORGED  # the fifth: locks the client out
    ctx = await engine.load(engine.signer.cookie_value("x"), client="203.0.113.9")
    assert ctx.session.verdict is Verdict.LOCKED_OUT
    assert counting.calls == []
    assert guard.retry_after("203.0.113.9", time.time()) is not None


CORRUPT_RECORDS = [
    b"not json",
    b"[1, 2]",
    b'{"n": 1}',
    b'{"cookie": 3}',
    b"\xff\xfe",
    b'"text"',
    # JSON.parse refuses these three; json.loads took them and the save raised ValueError.
    b'{"cookie": {"originalMaxAge": null, "expires": null}, "x": NaN}',
    b'{"cookie": {"originalMaxAge": null, "expires": null}, "x": Infinity}',
    b'{"cookie": {"originalMaxAge": null, "expires": -Infinity}}',
    # Deeper than Python's recursion limit (Node reads it): RecursionError before.
    b'{"cookie": {"originalMaxAge": null, "expires": null}, "x": '
    + b"[" * 1200
    + b"]" * 1200
    + b"}",
    b'{"cookie": {"originalMaxAge": null, "expires": null}, "x": 1' + b"0" * 5000 + b"}",
]


CORRUPT_IDS = [
    "not-json", "array", "no-cookie", "cookie-int", "utf-8", "string",
    "nan", "infinity", "minus-infinity", "nested-1200", "int-5000-digits",
]  # fmt: skip


@pytest.mark.parametrize("raw", CORRUPT_RECORDS, ids=CORRUPT_IDS)
async def test_corrupt_records_are_unknown(aredis: redis.asyncio.Redis, raw: bytes) -> None:
    await aredis.set("sess:bad", raw)
    engine = engine_on(aredis)
    ctx = await engine.load(engine.signer.cookie_value("bad"))
    assert (ctx.session.verdict, ctx.session.id, dict(ctx.session)) == (Verdict.UNKNOWN, None, {})


class DictRedis:
    """The four commands the sync engine sends, on a dict (no server needed)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any, ex: int | None = None, xx: bool = False) -> bool:
        if xx and key not in self.data:
            return False
        self.data[key] = value
        return True

    def expire(self, key: str, ttl: int) -> bool:
        return key in self.data

    def delete(self, key: str) -> int:
        return 1 if self.data.pop(key, None) is not None else 0


@pytest.mark.parametrize("raw", CORRUPT_RECORDS, ids=CORRUPT_IDS)
def test_sync_engine_treats_corrupt_records_as_unknown(raw: bytes) -> None:
    signer = ExpressSigner([STRONG])
    client: Any = DictRedis({"sess:sid1": raw})
    engine = ExpressEngine(client, signer=signer, guard=None)
    ctx = engine.load(signer.cookie_value("sid1"))
    assert (ctx.session.verdict, ctx.session.id, dict(ctx.session)) == (Verdict.UNKNOWN, None, {})
    ctx.session["n"] = 1
    outcome = engine.commit(ctx)
    assert outcome.set_cookie is not None and ctx.session.id != "sid1", "a new session"


@pytest.mark.parametrize("rolling", [False, True])
def test_ids_sign_refuses_are_never_valid(rolling: bool) -> None:
    # express-session signs ids of any length; sign() refuses over 256 characters,
    # so a VALID verdict for one made commit raise ValueError (re-sign or rolling).
    old = ExpressSigner([WEAK], allow_weak_secrets=True)
    signer = ExpressSigner([STRONG, WEAK], allow_weak_secrets=True)
    record = json.dumps({"cookie": {"originalMaxAge": None, "expires": None, "path": "/"}})
    for length, verdict in [(256, Verdict.VALID), (257, Verdict.MALFORMED)]:
        sid = "x" * length
        value = encode_uri_component(f"s:{sid}.{old._mac(0, sid)}")
        result = signer.verify(value)
        assert result.verdict is verdict
        if verdict is Verdict.MALFORMED:
            assert (result.reason, result.session_id) == ("id_too_long", None)
        client: Any = DictRedis({f"sess:{sid}": record})
        engine = ExpressEngine(client, signer=signer, guard=None, rolling=rolling)
        ctx = engine.load(value)
        assert ctx.session.verdict is verdict
        outcome = engine.commit(ctx)  # raised ValueError for 257 before
        if verdict is Verdict.VALID:
            assert outcome.set_cookie is not None
            assert outcome.set_cookie.startswith(f"{NAME}={signer.cookie_value(sid)};")


async def test_middleware_clears_bad_cookies_and_locks_out_guessers(
    aredis: redis.asyncio.Redis,
) -> None:
    engine = engine_on(aredis, guard=Guard(GuardPolicy(threshold=2)))
    transport = httpx.ASGITransport(app=make_app(engine), client=("198.51.100.7", 4000))
    forged = f"{NAME}=s%3Aguess.{'A' * 43}"
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/whoami", headers={"cookie": forged})
        assert r.json() == {"user": None, "n": 0, "verdict": "forged"}
        assert r.headers["set-cookie"].startswith(f"{NAME}=; Path=/; Expires=Thu, 01 Jan 1970")
        assert r.headers["cache-control"] == "no-store"
        await client.get("/whoami", headers={"cookie": forged})
        r = await client.get("/whoami", headers={"cookie": forged})
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.json() == {"error": "too many requests"}
    assert await aredis.dbsize() == 0


async def test_unknown_id_is_not_adopted(aredis: redis.asyncio.Redis) -> None:
    counting = Counting(aredis)
    engine = engine_on(counting)
    ctx = await engine.load(engine.signer.cookie_value("no-such-session"))
    assert ctx.session.verdict is Verdict.UNKNOWN
    assert ctx.session.id is None
    ctx.session["n"] = 1
    outcome = await engine.commit(ctx)
    assert ctx.session.id != "no-such-session"
    assert outcome.set_cookie is not None
    assert outcome.set_cookie.startswith(
        f"{NAME}={engine.signer.cookie_value(ctx.session.id or '')};"
    )
    assert counting.calls == ["get", "set"]
    assert not await aredis.exists("sess:no-such-session")


async def test_old_secret_verifies_and_is_resigned(aredis: redis.asyncio.Redis) -> None:
    await aredis.set(
        "sess:legacy",
        json.dumps(
            {
                "cookie": {"originalMaxAge": None, "expires": None, "httpOnly": True, "path": "/"},
                "user": 7,
            }
        ),
    )
    engine = engine_on(aredis)
    old_value = ExpressSigner([WEAK], allow_weak_secrets=True).cookie_value("legacy")
    ctx = await engine.load(old_value)
    assert ctx.session.verdict is Verdict.VALID
    assert ctx.session.key_id == "1"
    assert ctx.session.user_id == "7"
    outcome = await engine.commit(ctx)
    assert outcome.set_cookie == f"{NAME}={engine.signer.cookie_value('legacy')}; Path=/; HttpOnly"
    # A browser-session cookie: connect-redis's default TTL of one day.
    assert 86398 <= await aredis.ttl("sess:legacy") <= 86400


async def test_update_never_brings_back_a_deleted_record(aredis: redis.asyncio.Redis) -> None:
    engine = engine_on(aredis)
    ctx = await engine.load(None)
    ctx.session["n"] = 1
    await engine.commit(ctx)
    sid = ctx.session.id or ""
    ctx = await engine.load(engine.signer.cookie_value(sid))
    ctx.session["n"] = 2
    await aredis.delete(f"sess:{sid}")  # a logout elsewhere, mid-request
    outcome = await engine.commit(ctx)
    assert outcome.interrupted
    assert outcome.set_cookie is not None and "Expires=Thu, 01 Jan 1970" in outcome.set_cookie
    assert not await aredis.exists(f"sess:{sid}")


async def test_rolling_and_secure_cookies(aredis: redis.asyncio.Redis) -> None:
    engine = engine_on(
        aredis, rolling=True, cookie=ExpressCookie(max_age=60, secure="auto", same_site="lax")
    )
    ctx = await engine.load(None, secure=True)
    ctx.session["n"] = 1
    first = await engine.commit(ctx)
    assert first.set_cookie is not None
    assert first.set_cookie.endswith("; HttpOnly; Secure; SameSite=Lax")
    record = json.loads(await aredis.get(f"sess:{ctx.session.id}") or "null")
    assert record["cookie"]["secure"] is True and record["cookie"]["sameSite"] == "lax"
    value = engine.signer.cookie_value(ctx.session.id or "")
    again = await engine.commit(await engine.load(value, secure=True))
    assert again.set_cookie is not None  # rolling: every response
    # A secure cookie is never sent over plain HTTP (express-session does the same).
    assert (await engine.commit(await engine.load(value, secure=False))).set_cookie is None


async def test_store_down_raises_store_unavailable() -> None:
    dead = redis.asyncio.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    engine = engine_on(dead)
    with pytest.raises(StoreUnavailable):
        await engine.load(engine.signer.cookie_value("x"))
    app = make_app(engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get(
            "/whoami", headers={"cookie": f"{NAME}={engine.signer.cookie_value('x')}"}
        )
        assert r.status_code == 503
        assert r.json() == {"error": "service unavailable"}
    await dead.aclose()


def test_sync_engine_shares_sessions_with_express(pair: Pair, browser: Browser) -> None:
    browser("POST", pair.express, "/login?user=gina")
    client = redis.Redis.from_url(pair.redis_url)
    engine = ExpressEngine(
        client,
        signer=ExpressSigner(SECRETS, allow_weak_secrets=True),
        cookie=ExpressCookie(max_age=MAX_AGE),
        user_field="user",
    )
    try:
        ctx = engine.load(browser.cookies[NAME])
        assert isinstance(ctx, ExpressContext)
        assert (ctx.session.verdict, ctx.session.user_id) == (Verdict.VALID, "gina")
        ctx.session["n"] = 41
        outcome = engine.commit(ctx)
        assert outcome.set_cookie is not None  # a persistent cookie, changed: re-sent
        assert browser("GET", pair.express, "/count") == {"n": 42, "user": "gina"}
        ctx = engine.load(browser.cookies[NAME])
        ctx.session.logout()
        assert (
            engine.commit(ctx).set_cookie
            == f"{NAME}=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly"
        )
        assert browser("GET", pair.express, "/whoami") == {"user": None, "n": 0}
    finally:
        client.close()


async def test_upgrade_moves_a_valid_express_session_to_a_native_token(
    pair: Pair, browser: Browser
) -> None:
    browser("POST", pair.express, "/login?user=hana")
    browser("GET", pair.express, "/count")
    sid = browser.sid
    aclient = redis.asyncio.Redis.from_url(pair.redis_url)
    native = AsyncEngine(
        keyring=KeyRing.generate(["user"]),
        store=MemoryStore(),
        cookie=CookiePolicy(secure=False),
    )
    engine = engine_on(aclient, guard=native.core.guard)
    app = make_app(engine, upgrade=native)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/whoami", headers={"cookie": f"{NAME}={browser.cookies[NAME]}"})
            assert r.json() == {"user": "hana", "n": 1, "verdict": "valid"}
            set_cookies = r.headers.get_list("set-cookie")
            assert len(set_cookies) == 2
            native_cookie = next(c for c in set_cookies if c.startswith("donjon="))
            assert any(c.startswith(f"{NAME}=;") and "1970" in c for c in set_cookies)
            assert not await aclient.exists(f"sess:{sid}")  # moved, not copied
            token = native_cookie.split(";")[0].split("=", 1)[1]
            r = await client.get("/count", headers={"cookie": f"donjon={token}"})
            assert r.json() == {"n": 2, "user": "hana"}
            # A forged connect.sid with upgrade on: a fresh native visitor, the cookie cleared.
            r = await client.get("/whoami", headers={"cookie": f"{NAME}=s%3Ax.{'A' * 43}"})
            assert r.json() == {"user": None, "n": 0, "verdict": "absent"}
            assert any(c.startswith(f"{NAME}=;") for c in r.headers.get_list("set-cookie"))
        # The Express side no longer has it.
        assert browser("GET", pair.express, "/whoami") == {"user": None, "n": 0}
    finally:
        await aclient.aclose()


def test_cookie_options_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        ExpressCookie(same_site="none")
    with pytest.raises(ConfigurationError):
        ExpressCookie(name="bad name")
    with pytest.raises(ConfigurationError):
        ExpressCookie(path="/a;b")
    with pytest.raises(ConfigurationError):
        ExpressCookie(max_age=0)
    with pytest.raises(ConfigurationError):
        engine_on(object(), user_field="cookie")
    assert ExpressCookie(same_site="none", secure=True).same_site == "none"


def test_guard_events_do_not_leak_ids(pair: Pair) -> None:
    # The security log carries a short hash of the id, never the id or the cookie.
    events: list[VerdictEvent] = []
    signer = ExpressSigner(SECRETS, allow_weak_secrets=True)
    client = redis.Redis.from_url(pair.redis_url)
    engine = ExpressEngine(client, signer=signer, events=[events.append])
    try:
        ctx = engine.load(None)
        ctx.session["x"] = 1
        engine.commit(ctx)
        sid = ctx.session.id or ""
        engine.load(signer.cookie_value(sid))
        (_, valid) = events
        assert valid.verdict is Verdict.VALID
        assert valid.session_ref and sid not in json.dumps(valid.as_dict())
        client.delete(f"sess:{sid}")
    finally:
        client.close()
