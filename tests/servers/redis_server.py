"""Real ``redis-server`` processes for the tests: one standalone, or a 3-node cluster.

Both bind to 127.0.0.1 only, keep nothing on disk (``--save ''``,
``--appendonly no``) and run in a temporary folder. A missing binary is an
error that says how to install it: the Redis tests never skip silently.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Final

__all__ = ["RedisCluster3", "RedisServer", "free_port", "require_binary"]

HOST: Final = "127.0.0.1"
_START_TIMEOUT: Final = 15.0


def require_binary(name: str) -> str:
    """Return the path of ``name`` on PATH, or raise a RuntimeError saying how to get it."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name!r} is not on PATH: the Redis tests run a real server. "
            "Run `make system-deps` (it installs redis-server with apt-get)."
        )
    return path


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(*, with_bus: bool = False) -> int:
    """Return a port free on 127.0.0.1 (and ``port + 10000`` too, with ``with_bus``).

    A cluster node also listens on its port + 10000 (the cluster bus), so
    ports are drawn from 20000-29999 rather than from the ephemeral range.
    """
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 30000)
        if _port_is_free(port) and (not with_bus or _port_is_free(port + 10000)):
            return port
    raise RuntimeError("no free port found on 127.0.0.1")


def _command(port: int, *args: str, timeout: float = 2.0) -> str:
    """Send one command over a raw socket; return the reply's text (no redis-py retries)."""
    parts = [f"*{len(args)}\r\n"] + [f"${len(a.encode())}\r\n{a}\r\n" for a in args]
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall("".join(parts).encode())
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            data = b"".join(chunks)
            if data.startswith((b"+", b"-", b":")) and data.endswith(b"\r\n"):
                break
            if data.startswith(b"$"):
                head, _, rest = data.partition(b"\r\n")
                length = int(head[1:])
                if length < 0 or len(rest) >= length + 2:
                    break
        return b"".join(chunks).decode(errors="replace")


def _pings(port: int) -> bool:
    try:
        return _command(port, "PING", timeout=0.5).startswith("+PONG")
    except OSError:
        return False


class RedisServer:
    """One standalone ``redis-server`` on 127.0.0.1, without persistence.

    Args:
        tmpdir: A folder for the server's working directory and log.
        port: The port; a free one is chosen when ``None``. It is kept across
            :meth:`restart`, so clients can reconnect.
        extra_args: More ``redis-server`` options (e.g. cluster ones).
    """

    def __init__(
        self,
        tmpdir: Path | str,
        port: int | None = None,
        *,
        extra_args: tuple[str, ...] = (),
        with_bus: bool = False,
    ) -> None:
        self.binary = require_binary("redis-server")
        self.port = port if port is not None else free_port(with_bus=with_bus)
        self.dir = Path(tmpdir) / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL of the server."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (for fault tests: SIGSTOP/SIGCONT)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the process is up and answers PING."""
        return self._proc is not None and self._proc.poll() is None and _pings(self.port)

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self._close_log()
        self._log = (self.dir / "redis.log").open("ab")
        self._proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", HOST,
                "--protected-mode", "yes",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.dir),
                "--daemonize", "no",
                *self.extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if _pings(self.port):
                return
            time.sleep(0.02)
        log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")

    def stop(self) -> None:
        """Stop the server (SHUTDOWN NOSAVE, then terminate/kill) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            # A fault test may have frozen it (SIGSTOP): let it hear the shutdown.
            proc.send_signal(signal.SIGCONT)
            with contextlib.suppress(OSError):
                _command(self.port, "SHUTDOWN", "NOSAVE", timeout=1.0)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._close_log()

    def restart(self) -> None:
        """Stop and start again on the same port (an empty data set: no persistence)."""
        self.stop()
        self.start()

    def command(self, *args: str) -> str:
        """Send one raw command; return the raw reply text (for fixtures and checks)."""
        return _command(self.port, *args)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __repr__(self) -> str:
        state = "running" if self._proc is not None and self._proc.poll() is None else "stopped"
        return f"RedisServer(port={self.port}, {state})"


class RedisCluster3:
    """Three ``redis-server`` primaries in cluster mode on 127.0.0.1 (no replicas).

    Args:
        tmpdir: A folder for the nodes' working directories, logs and cluster
            config files.
    """

    def __init__(self, tmpdir: Path | str) -> None:
        require_binary("redis-server")
        self.cli = require_binary("redis-cli")
        self.tmpdir = Path(tmpdir)
        self.nodes: list[RedisServer] = []
        ports: list[int] = []
        while len(ports) < 3:
            p = free_port(with_bus=True)
            if p not in ports:
                ports.append(p)
        for p in ports:
            self.nodes.append(
                RedisServer(
                    self.tmpdir,
                    p,
                    extra_args=(
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", f"nodes-{p}.conf",
                        "--cluster-node-timeout", "3000",
                    ),
                )
            )

    @property
    def ports(self) -> list[int]:
        """The three nodes' ports."""
        return [n.port for n in self.nodes]

    @property
    def url(self) -> str:
        """A URL of one node: enough for a cluster client to discover the others."""
        return self.nodes[0].url

    def start(self) -> None:
        """Start the nodes, create the cluster and wait until every node reports ok."""
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [
                    self.cli, "--cluster", "create",
                    *(f"{HOST}:{p}" for p in self.ports),
                    "--cluster-replicas", "0", "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every node reports ``cluster_state:ok`` and knows all 3 primaries."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = []
            for port in self.ports:
                try:
                    info = _command(port, "CLUSTER", "INFO", timeout=0.5)
                except OSError:
                    info = ""
                states.append(
                    "cluster_state:ok" in info
                    and "cluster_known_nodes:3" in info
                    and "cluster_slots_assigned:16384" in info
                )
            if all(states):
                return
            time.sleep(0.05)
        raise RuntimeError(f"the Redis cluster on ports {self.ports} did not reach state ok")

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    def __repr__(self) -> str:
        return f"RedisCluster3(ports={self.ports})"
