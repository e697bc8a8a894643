"""Helpers of the store, adapter and guard sections: servers, load, counters.

* :func:`redis_server` and :func:`postgres_server` start the test suite's real
  servers (``tests/servers``) on free 127.0.0.1 ports, for one section;
* :class:`RedisStats` reads ``INFO commandstats`` and ``DBSIZE`` deltas;
* :class:`CountingStore` counts the calls the engine makes on any store;
* :func:`uvicorn_server` runs a bench app (``benchmarks/apps``) in its own
  process pinned to one core; :func:`run_wrk` loads it from the other core;
* :func:`quiet_donjon_logs` sends Donjon's verdict events to a handler that
  drops them (the record is still built: its cost stays in the numbers).

Every server binds to 127.0.0.1, and every load loop is bounded in count or time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HOST = "127.0.0.1"

if str(REPO) not in sys.path:  # for tests.servers
    sys.path.insert(0, str(REPO))

__all__ = [
    "HOST",
    "REPO",
    "CountingStore",
    "RedisStats",
    "WrkResult",
    "cpu_sets",
    "free_port",
    "http_impl",
    "loop_impl",
    "pin_tree",
    "pinned",
    "postgres_server",
    "quiet_donjon_logs",
    "redis_server",
    "run_wrk",
    "uvicorn_server",
    "wrk_path",
]


# -- real servers --------------------------------------------------------------
@contextlib.contextmanager
def redis_server(cpu: int | None = None) -> Iterator[Any]:
    """Start a throw-away ``redis-server`` (no persistence) and stop it afterwards."""
    from tests.servers.redis_server import RedisServer

    with tempfile.TemporaryDirectory(prefix="donjon-bench-redis-") as tmp:
        server = RedisServer(tmp)
        server.start()
        try:
            if cpu is not None and server.pid is not None and hasattr(os, "sched_setaffinity"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(server.pid, {cpu})
            yield server
        finally:
            server.stop()


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def pin_tree(pid: int, cpu: int) -> None:
    """Pin a server we started, and its processes, to one CPU (forks inherit it)."""
    for p in _descendants(pid):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(p, {cpu})


@contextlib.contextmanager
def postgres_server(cpu: int | None = None) -> Iterator[Any]:
    """Start a throw-away PostgreSQL; yield ``None`` with a note when it cannot start."""
    try:
        from tests.servers.postgres_server import PostgresServer
    except ImportError as exc:  # psycopg missing
        print(f"  note: PostgreSQL skipped: {exc}")
        yield None
        return
    tmp = tempfile.mkdtemp(prefix="donjon-bench-pg-", dir="/tmp")
    os.chmod(tmp, 0o755)  # noqa: S103 - PostgreSQL runs as `postgres` and must traverse it
    server = None
    try:
        try:
            server = PostgresServer(Path(tmp) / "pg")
            server.start()
            proc = getattr(server, "_proc", None)
            if cpu is not None and proc is not None and hasattr(os, "sched_setaffinity"):
                pin_tree(proc.pid, cpu)
        except (RuntimeError, OSError) as exc:
            print(f"  note: PostgreSQL skipped: {str(exc).splitlines()[0]}")
            server = None
            yield None
            return
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


_META_COMMANDS = frozenset(
    {"info", "config", "dbsize", "ping", "client", "hello", "select", "auth", "command"}
)
"""Commands of the measuring connection and of redis-py's connection handshake."""
READ_COMMANDS = frozenset(
    {
        "get",
        "mget",
        "hget",
        "hmget",
        "hgetall",
        "hexists",
        "exists",
        "type",
        "ttl",
        "pttl",
        "smembers",
        "sismember",
        "scard",
        "strlen",
    }
)
"""Redis commands that read only; any other counted command is taken as a write."""


class RedisStats:
    """Deltas of ``INFO commandstats`` and ``DBSIZE`` on one Redis server.

    Commands run inside a Lua script are counted too (as their own names), so
    one ``EVALSHA`` that does six ``HSET``/``PEXPIRE`` shows as seven entries.
    """

    def __init__(self, url: str) -> None:
        import redis

        self._r = redis.Redis.from_url(url, decode_responses=True)
        self._before: dict[str, int] = {}
        self._keys = 0

    def reset(self) -> None:
        """Start a measurement."""
        self._r.config_resetstat()
        self._before = self._calls()
        self._keys = int(self._r.dbsize())

    def _calls(self) -> dict[str, int]:
        info = self._r.info("commandstats")
        out: dict[str, int] = {}
        for name, stats in info.items():
            cmd = name.removeprefix("cmdstat_").lower()
            if cmd.split("|")[0] in _META_COMMANDS:
                continue
            out[cmd] = int(stats["calls"])
        return out

    def delta(self) -> tuple[dict[str, int], int]:
        """Return (calls per command, new keys) since :meth:`reset`."""
        after = self._calls()
        calls = {k: v - self._before.get(k, 0) for k, v in after.items()}
        calls = {k: v for k, v in calls.items() if v}
        return calls, int(self._r.dbsize()) - self._keys

    @property
    def client(self) -> Any:
        """The measuring connection (a sync redis-py client)."""
        return self._r

    def close(self) -> None:
        self._r.close()


def split_calls(calls: Mapping[str, int]) -> tuple[int, int]:
    """Return (reads, writes) of a commandstats delta; EVALSHA counts as a write."""
    reads = sum(n for c, n in calls.items() if c in READ_COMMANDS)
    return reads, sum(calls.values()) - reads


def describe_calls(calls: Mapping[str, int], per: int) -> str:
    """Format a commandstats delta per request, e.g. ``hgetall 1, evalsha 1``."""
    if not calls:
        return "none"
    return ", ".join(
        f"{c.upper()} {n / per:.3g}" for c, n in sorted(calls.items(), key=lambda kv: -kv[1])
    )


@dataclass
class CountingStore:
    """Wraps a sync store and counts each method call (reads and writes)."""

    inner: Any
    counts: dict[str, int] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] = self.counts.get(name, 0) + 1
            return attr(*args, **kwargs)

        return counted

    def reset(self) -> None:
        self.counts.clear()


# -- logging -------------------------------------------------------------------
@contextlib.contextmanager
def quiet_donjon_logs() -> Iterator[None]:
    """Route ``donjon.*`` records to a handler that drops them (no terminal spam).

    The level stays as configured, so every forged-cookie WARNING is still
    built (``LogRecord`` and the event's ``as_dict``): only the I/O is left out.
    """
    logger = logging.getLogger("donjon")
    saved = logger.handlers[:], logger.propagate
    logger.handlers = [logging.NullHandler()]
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers, logger.propagate = saved


# -- HTTP load -----------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def loop_impl() -> str:
    """uvicorn's ``--loop``: uvloop when installed, else asyncio."""
    return "uvloop" if _importable("uvloop") else "asyncio"


def http_impl() -> str:
    """uvicorn's ``--http``: httptools when installed, else h11."""
    return "httptools" if _importable("httptools") else "h11"


def cpu_sets() -> tuple[str | None, str | None]:
    """CPUs for (server, load generator): one core each when there are two or more."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None, None
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return None, None
    return str(cpus[0]), str(cpus[1])


@contextlib.contextmanager
def pinned(cpu: str | None) -> Iterator[None]:
    """Run this process on one CPU for a while (no-op when ``cpu`` is ``None``)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(cpu)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def _pinned(cmd: list[str], cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if cpu is not None else cmd


@dataclass
class Server:
    """A running uvicorn process."""

    url: str
    command: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path

    def shown(self) -> str:
        """The command line as a reader can paste it (with the app's environment)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        cmd = [Path(c).name if c == sys.executable else c for c in self.command]
        cmd = [("python" if c.startswith("python") else c) for c in cmd]
        return f"{env} {shlex.join(cmd)}".strip()


@contextlib.contextmanager
def uvicorn_server(
    factory: str,
    env: Mapping[str, str],
    *,
    cpu: str | None,
    loop: str | None = None,
    http: str | None = None,
) -> Iterator[Server]:
    """Run ``uvicorn --factory apps.<factory>`` on a free port; stop it afterwards.

    One worker, no access log; by default the fastest loop and HTTP parser installed.
    """
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        f"apps.{factory}",
        "--app-dir",
        str(HERE),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
        "--loop",
        loop or loop_impl(),
        "--http",
        http or http_impl(),
    ]
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    full_env = {**os.environ, **env, "PYTHONPATH": path}
    with tempfile.TemporaryDirectory(prefix="donjon-bench-uvicorn-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                _pinned(cmd, cpu),
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(REPO),
            )
        server = Server(f"http://{HOST}:{port}", cmd, dict(env), proc, log)
        try:
            _wait_up(server)
            yield server
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _wait_up(server: Server, timeout: float = 20.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            break
        try:
            httpx.get(server.url + "/health", timeout=1.0)
        except httpx.HTTPError:
            time.sleep(0.05)
        else:
            return
    text = server.log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"the bench server did not start: {server.shown()}\n{text}")


def wrk_path() -> str | None:
    return shutil.which("wrk")


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    """Non-2xx/3xx responses plus socket errors."""
    command: str


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(
    url: str,
    script: Path,
    *,
    seconds: float,
    connections: int,
    cpu: str | None,
    threads: int = 1,
) -> WrkResult:
    """Run wrk (bounded by ``--timeout`` and a process timeout) and parse its report."""
    wrk = wrk_path()
    assert wrk is not None
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.run(
        _pinned([wrk, *cmd[1:]], cpu),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    out = proc.stdout
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr}\n{out}")
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    if not (m and rps and p50 and p99):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    return WrkResult(
        requests=int(m.group(1)),
        seconds=_ms(m.group(2) + m.group(3)) / 1e3,
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        errors=errors,
        command=shlex.join([*(["taskset", "-c", cpu] if cpu else []), *cmd]),
    )
