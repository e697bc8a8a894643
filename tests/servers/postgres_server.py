"""A real, throw-away PostgreSQL server for the tests.

``PostgresServer(tmpdir)`` runs ``initdb`` into ``tmpdir`` and starts
``postgres`` on 127.0.0.1 on a free port, with trust authentication for
loopback only, its Unix socket inside ``tmpdir`` and durability switched off
for speed. When the tests run as root, the server runs as the ``postgres``
user (PostgreSQL refuses root) and ``tmpdir`` is handed to that user.

A missing PostgreSQL is an error, never a skip: ``make system-deps`` installs it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psycopg

__all__ = ["PostgresServer", "find_bindir"]

_INSTALL_HINT = (
    "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run `make system-deps`,"
    " which installs it with apt-get"
)


def find_bindir() -> Path:
    """Return the newest PostgreSQL bin directory, or raise RuntimeError saying what to do."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bindir = Path(initdb).parent
        with contextlib.suppress(ValueError):
            found.append((float(bindir.parent.name), bindir))
    if found:
        return max(found)[1]
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).parent
    raise RuntimeError(_INSTALL_HINT)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in ``tmpdir``, with a database named ``donjon``.

    Args:
        tmpdir: An empty directory the server may own (as root it is chowned
            to ``postgres``, so its parents must be traversable: use /tmp).
    """

    DATABASE = "donjon"

    def __init__(self, tmpdir: str | os.PathLike[str]) -> None:
        self.bindir = find_bindir()
        self.base = Path(tmpdir)
        self.data = self.base / "data"
        self.sockets = self.base / "sock"
        self.logfile = self.base / "postgres.log"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/{self.DATABASE}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._initialised = False
        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "PostgreSQL refuses to run as root and there is no `postgres` user:"
                    " run `make system-deps` (or `useradd --system postgres`)"
                ) from None
            self._uid, self._gid = pw.pw_uid, pw.pw_gid

    # -- helpers ----------------------------------------------------------
    def _cmd(self, *args: str | os.PathLike[str]) -> list[str]:
        cmd = [os.fspath(a) for a in args]
        return ["runuser", "-u", "postgres", "--", *cmd] if self._as_root else cmd

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return env

    def _run(self, *args: str | os.PathLike[str]) -> None:
        proc = subprocess.run(
            self._cmd(*args), env=self._env(), capture_output=True, check=False, timeout=120
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{Path(os.fspath(args[0])).name} failed ({proc.returncode}):\n"
                + proc.stdout.decode(errors="replace")
                + proc.stderr.decode(errors="replace")
            )

    def _initdb(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if self._as_root:
            for p in (self.base, self.sockets):
                os.chown(p, self._uid, self._gid)
        self._run(
            self.bindir / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        (self.data / "pg_hba.conf").write_text(
            "# donjon tests: trust, loopback and the private socket only\n"
            "local all all trust\n"
            "host  all all 127.0.0.1/32 trust\n"
        )
        self._initialised = True

    def _log_tail(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    # -- lifecycle ----------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (initdb on first start) and wait until it accepts connections."""
        if self.running:
            return
        if not self._initialised:
            self._initdb()
        log = open(self.logfile, "ab")  # noqa: SIM115 - the server process owns it
        try:
            self._proc = subprocess.Popen(
                self._cmd(
                    self.bindir / "postgres", "-D", self.data,
                    "-p", str(self.port),
                    "-c", "listen_addresses=127.0.0.1",
                    "-c", f"unix_socket_directories={self.sockets}",
                    "-c", "fsync=off",
                    "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off",
                    "-c", "max_connections=200",
                ),
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(
                    host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                    connect_timeout=2, autocommit=True,
                ) as conn:  # fmt: skip
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (self.DATABASE,)
                    ).fetchone()
                    if not exists:
                        conn.execute("CREATE DATABASE donjon")
            except psycopg.OperationalError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"PostgreSQL did not start on port {self.port}:\n{self._log_tail()}"
                    ) from None
                time.sleep(0.05)
            else:
                return

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``: clients are disconnected at once)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            try:
                self._run(self.bindir / "pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w")
            except RuntimeError:
                self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def restart(self) -> None:
        """Stop, then start again on the same port with the same data."""
        self.stop()
        self.start()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"PostgresServer({self.url!r}, {state})"
