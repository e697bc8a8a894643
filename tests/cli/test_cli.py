"""The donjon command line, in-process and as a real subprocess."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
    tampered = token[:-1] + ("0" if token[-1] != "0" else "1")  # still hex: a MAC mismatch
    assert main(["inspect", tampered, "--json"]) == 3
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
    assert help_.stderr == ""  # no RuntimeWarning from runpy about donjon.cli.__main__
    for command in ("keygen", "inspect", "rotate", "kill", "sessions", "demo", "bench"):
        assert command in help_.stdout
    subprocess.run(
        [*run, "keygen", "-o", "data/keys.json"], env=env, check=True, capture_output=True
    )
    bad = subprocess.run([*run, "inspect", "nonsense"], capture_output=True, text=True, env=env)
    assert bad.returncode == 3 and "malformed" in bad.stdout
    bench = subprocess.run(
        [*run, "bench", "--seconds", "0.05", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "verify valid" in json.loads(bench.stdout)


# -- audit regressions: every bad input is one "donjon: ..." line, never a traceback --
def one_error_line(err: str) -> str:
    """Assert that stderr is exactly one ``donjon:`` line; return it."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("donjon: ") and "Traceback" not in err
    return lines[0]


def make_store(workdir: Path) -> tuple[Engine, str]:
    """Keys in data/keys.json, a SQLite store holding one session; return the engine, token."""
    main(["keygen", "-o", "data/keys.json"])
    ring = KeyRing.from_file("data/keys.json")
    engine = Engine(keyring=ring, store=SQLiteStore(workdir / "data" / "sessions.sqlite3"))
    s = engine.load(None)
    s.login("alice")
    return engine, engine.commit(s, presented=False).token


def test_malformed_redis_url_is_one_line(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["keygen", "-o", "k.json"])
    capsys.readouterr()
    for url in ("redis://:hunter2@host:notaport/0", "redis+cluster://host:xx", "rediss://[bad/0"):
        argv = ["--keys", "k.json", "--store", url, "sessions", "list", "--user", "a"]
        assert main(argv) == 1
        line = one_error_line(capsys.readouterr().err)
        assert "invalid store URL" in line and "hunter2" not in line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"data = [1]\n", "'data' must be a string (a folder path), not an array"),
        (b"[donjon]\nkeys = 5\n", "'keys' must be a string (a key-file path), not an integer"),
        (b'[donjon]\nstore = ["x"]\n', "'store' must be a string (a store URL), not an array"),
        (b'[donjon]\nkeys = ""\n', "'keys' is empty"),
        (b'[donjon]\nkey = "k.json"\n', "unknown setting(s) 'key'"),
        (b"\xff\xfe = 1\n", "is not UTF-8 text"),
    ],
)
def test_config_values_are_checked(
    workdir: Path, capsys: pytest.CaptureFixture[str], text: bytes, message: str
) -> None:
    main(["keygen", "-o", "data/keys.json"])
    Path("c.toml").write_bytes(text)
    capsys.readouterr()
    assert main(["--config", "c.toml", "kill", "user"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "config file c.toml" in line and message in line


def test_empty_settings_are_refused(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_store(workdir)
    capsys.readouterr()
    assert main(["--store", "", "kill", "user"]) == 1
    assert "--store is empty" in one_error_line(capsys.readouterr().err)
    assert main(["--config", "", "kill", "user"]) == 1
    assert "--config is empty" in one_error_line(capsys.readouterr().err)
    monkeypatch.setenv("DONJON_STORE_URL", "")
    assert main(["kill", "user"]) == 1
    assert "DONJON_STORE_URL is empty" in one_error_line(capsys.readouterr().err)


def test_inspect_applies_the_kill_switch(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, token = make_store(workdir)
    time.sleep(0.01)
    assert main(["kill", "user"]) == 0
    capsys.readouterr()
    assert main(["inspect", token, "--json"]) == 3
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "revoked"
    assert out["epochs"] == f"key ring + store sqlite:///{workdir / 'data' / 'sessions.sqlite3'}"
    # No readable store: the verdict is the key ring's, and the output says so.
    assert main(["inspect", token, "--json", "--store", "sqlite:///elsewhere.db"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "valid" and "no SQLite store at elsewhere.db" in out["epochs"]
    assert not Path("elsewhere.db").exists()  # inspect never creates a store
    assert main(["inspect", token, "--json", "--store", "redis://:pw@127.0.0.1:1/0"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["epochs"] == "key ring only: store redis://:***@127.0.0.1:1/0 unavailable"
    warning = one_error_line(captured.err)
    assert "warning: cannot read the kill-switch epochs" in warning and ":pw@" not in warning


@pytest.mark.parametrize(
    "command",
    [["kill", "user"], ["sessions", "list", "--user", "a"], ["sessions", "revoke", "--user", "a"]],
)
def test_admin_commands_need_an_existing_store(
    workdir: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    main(["keygen", "-o", "data/keys.json"])
    capsys.readouterr()
    assert main(command) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"no SQLite store at {workdir / 'data' / 'sessions.sqlite3'}" in line
    assert not (workdir / "data" / "sessions.sqlite3").exists()
    assert main(["--store", "sqlite:///tmp/x.db", *command]) == 1
    assert "sqlite:////tmp/x.db is /tmp/x.db" in one_error_line(capsys.readouterr().err)
    assert not Path("tmp").exists()
    assert main(["--store", "memory:", *command]) == 1
    assert "in-memory" in one_error_line(capsys.readouterr().err)


def test_sqlite_urls_relative_and_absolute(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_store(workdir)
    absolute = str(workdir / "data" / "sessions.sqlite3")
    assert absolute.startswith("/")
    assert main(["--store", "sqlite:///data/sessions.sqlite3", "kill", "user"]) == 0
    assert main(["--store", f"sqlite:///{absolute}", "kill", "user"]) == 0  # four slashes
    assert main(["--store", f"sqlite://{absolute}", "kill", "user"]) == 1  # three: relative
    assert not Path(absolute.lstrip("/")).exists()
    assert main(["--store", "sqlite://data/sessions.sqlite3", "kill", "user"]) == 1
    assert "sqlite:////absolute/path" in capsys.readouterr().err
    help_text = subprocess.run(
        [sys.executable, "-m", "donjon.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "sqlite:////var/db/s.db" in help_text and "RELATIVE" in help_text


def test_rotate_refuses_keys_from_the_environment(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    main(["keygen", "--classes", "user"])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("DONJON_"))
    name, value = line.split("=", 1)
    monkeypatch.setenv(name, value)
    Path("data").mkdir()
    assert main(["rotate", "user"]) == 1
    err = one_error_line(capsys.readouterr().err)
    assert "keys come from the environment (DONJON_KEY_USER)" in err
    assert value.split(":", 1)[1] not in err  # the secret is never shown
    assert list(Path("data").iterdir()) == []


def test_key_file_writes_fail_cleanly(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from donjon.cli._config import CommandError
    from donjon.cli._keyfile import write_key_file

    ring = KeyRing.generate(["user"])
    with pytest.raises(CommandError, match="folder nodir does not exist"):
        write_key_file(ring, Path("nodir/keys.json"))
    Path("keys.json").write_text("old")

    def failing_replace(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(CommandError, match="No space left on device"):
        write_key_file(ring, Path("keys.json"))
    assert Path("keys.json").read_text() == "old"
    assert sorted(p.name for p in workdir.iterdir()) == ["keys.json"]  # no temp file left


def test_keygen_into_a_folder_leaves_no_secrets(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("outdir").mkdir()
    assert main(["keygen", "--output", "outdir", "--force"]) == 1
    assert "outdir is a folder" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in workdir.iterdir()) == ["outdir"]
    assert list(Path("outdir").iterdir()) == []
    assert main(["keygen", "--output", ""]) == 2  # never falls back to printing the secrets
    captured = capsys.readouterr()
    assert captured.out == "" and "--output is empty" in one_error_line(captured.err)


def test_rotate_rejects_conflicting_flags_and_bad_grace(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["keygen", "-o", "data/keys.json"])
    assert main(["rotate", "user", "--stage"]) == 0
    before = Path("data/keys.json").read_text()
    capsys.readouterr()
    for extra in (
        ["--stage", "--promote", "k2"],
        ["--grace", "-100"],
        ["--grace", "nan"],
        ["--grace", "inf"],
        ["--grace", "1e400"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(["rotate", "user", *extra])
        assert exc.value.code == 2
        one_error_line(capsys.readouterr().err)
    assert main(["rotate", "user", "--stage", "--grace", "60"]) == 2
    assert "--grace" in one_error_line(capsys.readouterr().err)
    assert Path("data/keys.json").read_text() == before
    assert main(["rotate", "user", "--promote", "k2", "--grace", "0"]) == 0
    assert "'k2' is current" in capsys.readouterr().out


@pytest.fixture
def fake_demo(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace the demo server: record how it would be started."""
    import donjon.demo

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(donjon.demo, "run", lambda **kw: calls.append(kw))
    return calls


@pytest.mark.parametrize("port", ["99999", "-1", "65536", "http"])
def test_demo_rejects_bad_ports(
    workdir: Path, capsys: pytest.CaptureFixture[str], fake_demo: list[dict[str, Any]], port: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--port", port])
    assert exc.value.code == 2
    assert "--port" in one_error_line(capsys.readouterr().err)
    assert fake_demo == []


def test_demo_bind_failures_are_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str], fake_demo: list[dict[str, Any]]
) -> None:
    assert main(["demo", "--host", "no such host!"]) == 1
    assert "cannot listen on host 'no such host!'" in one_error_line(capsys.readouterr().err)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["demo", "--port", str(port)]) == 1
    assert f"cannot listen on http://127.0.0.1:{port}/" in one_error_line(capsys.readouterr().err)
    assert fake_demo == []
    assert not Path("data").exists()  # nothing created before the check


def test_demo_port_zero_serves_on_the_port_it_prints(
    workdir: Path, capsys: pytest.CaptureFixture[str], fake_demo: list[dict[str, Any]]
) -> None:
    assert main(["demo", "--port", "0"]) == 0
    (call,) = fake_demo
    assert 0 < call["port"] <= 65535
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", call["port"]))


def test_demo_startup_failure_is_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import donjon.demo

    def exits(**kw: Any) -> None:
        sys.exit(3)  # what uvicorn does when it cannot start

    monkeypatch.setattr(donjon.demo, "run", exits)
    assert main(["demo", "--port", "0"]) == 1
    assert "could not start" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("seconds", ["inf", "-1", "nan", "0", "1000", "soon"])
def test_bench_rejects_bad_durations(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    seconds: str,
) -> None:
    import donjon.cli._bench

    calls: list[float] = []
    monkeypatch.setattr(
        donjon.cli._bench, "run_bench", lambda *, seconds, as_json: calls.append(seconds) or 0
    )
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--seconds", seconds])
    assert exc.value.code == 2
    assert "--seconds" in one_error_line(capsys.readouterr().err)
    assert calls == []
    assert main(["bench", "--seconds", "0.01"]) == 0 and math.isclose(calls[0], 0.01)


def test_unreachable_postgres_is_one_line(workdir: Path) -> None:
    pytest.importorskip("psycopg_pool")
    env = {**os.environ, "DONJON_DATA": str(workdir / "data")}
    run = [sys.executable, "-m", "donjon.cli"]
    subprocess.run([*run, "keygen", "-o", "data/keys.json"], env=env, check=True)
    url = "postgresql://nobody:pw@127.0.0.1:1/db"
    for command in (["kill", "user"], ["sessions", "list", "--user", "a"]):
        done = subprocess.run(
            [*run, "--store", url, *command], capture_output=True, text=True, env=env
        )
        assert done.returncode == 1
        line = one_error_line(done.stderr)
        assert "PostgreSQL store 127.0.0.1:1/db" in line and "Connection refused" in line


def test_library_warnings_and_surprises_are_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    import donjon.cli._main as cli

    def warns(args: Any, settings: Any) -> int:
        logging.getLogger("donjon.core").warning("key file %r is\nodd", "k.json")
        return 0

    def breaks(args: Any, settings: Any) -> int:
        raise LookupError("a bug\nsomewhere")

    monkeypatch.setattr(cli, "cmd_inspect", warns)
    assert main(["inspect", "x"]) == 0
    assert capsys.readouterr().err == "donjon: warning: key file 'k.json' is odd\n"
    monkeypatch.setattr(cli, "cmd_inspect", breaks)
    assert main(["inspect", "x"]) == 1
    assert "unexpected LookupError: a bug somewhere" in one_error_line(capsys.readouterr().err)
