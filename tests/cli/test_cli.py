"""The donjon command line, in-process and as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from donjon import KeyRing, TokenCodec, Verdict
from donjon.cli import main
from donjon.engine import Engine
from donjon.stores import SQLiteStore


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in list(os.environ):
        if var.startswith("DONJON_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("DONJON_DATA", str(tmp_path / "data"))
    return tmp_path


def test_keygen_env_output_is_loadable(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "--classes", "user,admin"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("DONJON_")]
    env = dict(ln.split("=", 1) for ln in lines)
    ring = KeyRing.from_env(env)
    assert set(ring.classes) == {"user", "admin"}


def test_keygen_file_refuses_to_overwrite(workdir: Path) -> None:
    assert main(["keygen", "-o", "k.json"]) == 0
    first = Path("k.json").read_text()
    assert oct(Path("k.json").stat().st_mode & 0o777) == "0o600"
    assert main(["keygen", "-o", "k.json"]) == 1
    assert Path("k.json").read_text() == first
    assert main(["keygen", "-o", "k.json", "--force"]) == 0
    assert Path("k.json").read_text() != first


def test_inspect_valid_and_bad(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["keygen", "-o", "data/keys.json"])
    token = TokenCodec(KeyRing.from_file("data/keys.json")).issue(ttl=60, session_id="abc")
    capsys.readouterr()
    assert main(["inspect", token, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "valid" and out["session_id"] == "abc"
    assert main(["inspect", token[:-1] + "x", "--json"]) == 3
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "forged" and "session_id" not in out


def test_rotate_then_old_tokens_still_verify(workdir: Path) -> None:
    main(["keygen", "-o", "data/keys.json"])
    token = TokenCodec(KeyRing.from_file("data/keys.json")).issue(ttl=60)
    assert main(["rotate", "user"]) == 0
    ring = KeyRing.from_file("data/keys.json")
    assert ring.current_key_id("user") == "k2"
    assert TokenCodec(ring).verify(token).verdict is Verdict.VALID
    assert main(["rotate", "user", "--retire", "k1"]) == 0
    assert TokenCodec(KeyRing.from_file("data/keys.json")).verify(token).verdict is Verdict.RETIRED


def test_kill_and_sessions_against_sqlite(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["keygen", "-o", "data/keys.json"])
    ring = KeyRing.from_file("data/keys.json")
    engine = Engine(keyring=ring, store=SQLiteStore(workdir / "data" / "sessions.sqlite3"))
    tokens = []
    for _ in range(2):
        s = engine.load(None)
        s.login("alice")
        tokens.append(engine.commit(s, presented=False).token)
    capsys.readouterr()
    assert main(["sessions", "list", "--user", "alice", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["sessions", "revoke", "--user", "alice"]) == 0
    assert "revoked 2" in capsys.readouterr().out
    assert engine.load(tokens[0]).verdict is Verdict.UNKNOWN
    s = engine.load(None)
    s.login("bob")
    token = engine.commit(s, presented=False).token
    assert main(["kill", "user"]) == 0
    engine.refresh_epochs()
    assert engine.load(token).verdict is Verdict.REVOKED


def test_clear_errors_and_exit_codes(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "x", "--keys", "missing.json"]) == 1
    assert "donjon keygen" in capsys.readouterr().err
    assert main(["--store", "ftp://nope", "kill", "user", "--keys", "missing.json"]) == 1
    main(["keygen", "-o", "data/keys.json"])
    assert main(["--store", "ftp://nope", "kill", "user"]) == 1
    assert "unknown store URL" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["rotate"])
    assert exc.value.code == 2


def test_config_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["keygen", "-o", "elsewhere.json"])
    Path("donjon.toml").write_text('[donjon]\nkeys = "elsewhere.json"\n')
    token = TokenCodec(KeyRing.from_file("elsewhere.json")).issue(ttl=60)
    capsys.readouterr()
    assert main(["inspect", token]) == 0


def test_real_subprocess(workdir: Path) -> None:
    env = {**os.environ, "DONJON_DATA": str(workdir / "data")}
    run = [sys.executable, "-m", "donjon.cli"]
    help_ = subprocess.run([*run, "--help"], capture_output=True, text=True, env=env, check=True)
    for command in ("keygen", "inspect", "rotate", "kill", "sessions", "demo", "bench"):
        assert command in help_.stdout
    subprocess.run([*run, "keygen", "-o", "data/keys.json"], env=env, check=True,
                   capture_output=True)
    bad = subprocess.run([*run, "inspect", "nonsense"], capture_output=True, text=True, env=env)
    assert bad.returncode == 3 and "malformed" in bad.stdout
    bench = subprocess.run([*run, "bench", "--seconds", "0.05", "--json"], capture_output=True,
                           text=True, env=env, check=True)
    assert "verify valid" in json.loads(bench.stdout)
