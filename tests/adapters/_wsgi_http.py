"""Support for the WSGI-side adapter tests.

* :func:`serve` runs a WSGI app in a real server (waitress) in a subprocess;
* :class:`FlakyStore` is a memory store whose operations fail on demand;
* :func:`make_engine` builds a sync engine on it with a frozen clock;
* :func:`cookie_attributes` splits a ``Set-Cookie`` value for comparisons.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from donjon import KeyRing, StoreUnavailable
from donjon.config import CookiePolicy
from donjon.engine import Engine
from donjon.stores import MemoryStore, Record, SessionInfo, Write
from donjon.testing import FrozenClock

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: where ``examples`` is importable from."""


class FlakyStore:
    """A :class:`MemoryStore` whose listed operations raise ``StoreUnavailable``.

    ``fail`` holds operation names (``"load"``, ``"write"``, ``"delete"``,
    ``"touch"``, ``"epochs"``); ``calls`` counts every operation made.
    """

    blocking = False

    def __init__(self, clock: FrozenClock) -> None:
        self.inner = MemoryStore(clock=clock)
        self.fail: set[str] = set()
        self.calls: list[str] = []

    def _op(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise StoreUnavailable(f"{name}: the test says the store is down")

    def load(self, key: str) -> Record | None:
        self._op("load")
        return self.inner.load(key)

    def write(self, write: Write) -> bool:
        self._op("write")
        return self.inner.write(write)

    def delete(self, key: str) -> bool:
        self._op("delete")
        return self.inner.delete(key)

    def touch(self, key: str, *, last_seen: float, expires_at: float) -> None:
        self._op("touch")
        self.inner.touch(key, last_seen=last_seen, expires_at=expires_at)

    def sessions_of(self, user_id: str) -> list[SessionInfo]:
        self._op("sessions_of")
        return self.inner.sessions_of(user_id)

    def revoke_user(self, user_id: str) -> int:
        self._op("revoke_user")
        return self.inner.revoke_user(user_id)

    def epochs(self) -> dict[str, float]:
        self._op("epochs")
        return self.inner.epochs()

    def raise_epoch(self, session_class: str, epoch: float) -> float:
        self._op("raise_epoch")
        return self.inner.raise_epoch(session_class, epoch)

    def close(self) -> None:
        self.inner.close()

    def go_down(self) -> None:
        """Make every operation fail."""
        self.fail |= {"load", "write", "delete", "touch", "epochs"}


def make_engine(cookie: CookiePolicy | None = None) -> tuple[Engine, FlakyStore]:
    """Return an engine on a :class:`FlakyStore`, plain-HTTP cookies by default."""
    clock = FrozenClock()
    store = FlakyStore(clock)
    engine = Engine(
        keyring=KeyRing.generate(["user", "admin"]),
        store=store,
        cookie=cookie if cookie is not None else CookiePolicy(secure=False),
        clock=clock,
    )
    return engine, store


def cookie_attributes(header: str) -> tuple[str, str, set[str]]:
    """Split a ``Set-Cookie`` value into (name, value, lower-cased attributes)."""
    first, *attrs = (part.strip() for part in header.split(";"))
    name, _, value = first.partition("=")
    return name, value, {a.lower() for a in attrs if a}


def free_port() -> int:
    """Return a TCP port on loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_up(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(
        f"server not up after {timeout} s:\n{log.read_text(errors='replace')}"
    )


@contextlib.contextmanager
def serve(
    target: str, *, env: Mapping[str, str] | None = None, timeout: float = 20.0
) -> Iterator[str]:
    """Run ``target`` (``module:app``) under waitress; yield its base URL.

    The server runs in its own process with ``env`` added to the
    environment. It is terminated (then killed if it lingers) at the end,
    also when the body fails; its output is shown if it does not start.
    """
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}", target],
                cwd=ROOT,
                env={
                    **os.environ,
                    "PYTHONPATH": os.pathsep.join(
                        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
                    ),
                    **(env or {}),
                },
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_until_up(proc, port, log, timeout)
            yield f"http://127.0.0.1:{port}"
        except BaseException:
            proc.kill()
            proc.wait(timeout=10)
            raise
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
