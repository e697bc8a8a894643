"""Run an ASGI app under a real uvicorn process on a free loopback port."""

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

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: uvicorn imports ``examples.*`` from here."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class ServerStartError(RuntimeError):
    """The server exited or never started listening; carries its output."""


@contextlib.contextmanager
def uvicorn_server(
    app: str,
    *,
    env: Mapping[str, str],
    startup_timeout: float = 20.0,
    attempts: int = 3,
) -> Iterator[tuple[str, Path]]:
    """Start ``uvicorn <app>`` and yield ``(base_url, log_path)``.

    uvicorn listens only once the app's lifespan start-up is done, so a port
    that accepts connections means a ready server. The port is picked free
    and released just before uvicorn binds it; if another process wins that
    race, uvicorn exits and a new port is tried. The server is always
    stopped (SIGTERM, then SIGKILL after 10 s) when the block ends.
    """
    with tempfile.TemporaryDirectory(prefix="donjon-uvicorn-") as tmp:
        log_path = Path(tmp) / "server.log"
        for _ in range(attempts):
            port = free_port()
            cmd = [
                sys.executable, "-m", "uvicorn", app,
                "--host", "127.0.0.1", "--port", str(port),
                "--no-access-log", "--log-level", "warning",
            ]
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    cmd, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
                )
            try:
                deadline = time.monotonic() + startup_timeout
                while proc.poll() is None and not _accepting(port):
                    if time.monotonic() > deadline:
                        raise ServerStartError(
                            f"{app} not listening after {startup_timeout} s:\n"
                            + log_path.read_text(errors="replace")
                        )
                    time.sleep(0.05)
                if proc.poll() is not None:
                    continue  # lost the port race (or crashed): try again, report below
                yield f"http://127.0.0.1:{port}", log_path
                return
            finally:
                _stop(proc)
        raise ServerStartError(f"{app} did not start:\n" + log_path.read_text(errors="replace"))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
