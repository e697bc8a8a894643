"""The ``donjon`` command line: its parser, its commands and :func:`main`."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import math
import socket
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NoReturn

from .. import __version__
from ..core import KeyRing, Secret, TokenCodec
from ..core._secret import encode_secret
from ..errors import DonjonError, StoreError
from ..stores import Store
from ._config import (
    SQLITE_FORMS,
    CommandError,
    Settings,
    UsageError,
    env_key_variables,
    redact_url,
    resolve,
    sqlite_path,
    store_session,
)
from ._keyfile import check_key_file_target, write_key_file

__all__ = ["build_parser", "main"]

EPILOG = """\
configuration: flags win over DONJON_* variables, which win over donjon.toml
  --keys / DONJON_KEYS / keys        key file (default: $DONJON_DATA/keys.json)
  --store / DONJON_STORE_URL / store store URL (default: $DONJON_DATA/sessions.sqlite3)
  DONJON_DATA / data                 data folder (default: ./data)
  DONJON_KEY_<CLASS>=kid:secret,...  keys from the environment instead of a file
                                     (then `rotate` refuses: edit the variables)

store URLs:
  sqlite:///data/s.db      SQLite file data/s.db, RELATIVE to the current folder
  sqlite:////var/db/s.db   SQLite file /var/db/s.db (four slashes: absolute)
  memory:                  in-process only (nothing survives the command)
  redis://host:6379/0, rediss://..., redis+cluster://host:port, postgresql://user@host/db

kill and sessions work on existing data only: they refuse memory: and a SQLite
file that does not exist yet. inspect applies the store's kill-switch epochs
when it can read them and says so (its "epochs" line); it never creates a store.
"""

BENCH_MAX_SECONDS: Final = 10.0


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _out(data: Any, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    if isinstance(data, list):
        for row in data:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
        if not data:
            print("(none)")
        return
    for key, value in data.items():
        print(f"{key:>14}: {value}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_memory(url: str) -> bool:
    return url in ("memory:", "memory://") or sqlite_path(url) == ":memory:"


@contextlib.contextmanager
def _existing_store(settings: Settings, command: str) -> Iterator[Store]:
    """Open the configured store for a command that works on existing data.

    Such a command must not create an empty store and report success on it.
    """
    url = settings.store
    if _is_memory(url):
        raise CommandError(
            f"`donjon {command}` needs the store your apps share, not {url!r}"
            " (a new, empty in-memory store): pass --store or set DONJON_STORE_URL"
        )
    path = sqlite_path(url)
    if path is not None and not Path(path).exists():
        hint = f"({SQLITE_FORMS})"
        if not settings.store_is_default and not Path(path).is_absolute():
            hint = f"({url} is relative to the current folder; sqlite:////{path} is /{path})"
        raise CommandError(
            f"no SQLite store at {Path(path).absolute()} ({url}, {settings.store_origin});"
            f" `donjon {command}` works on an existing store:"
            f" pass --store or set DONJON_STORE_URL {hint}"
        )
    with store_session(url) as store:
        yield store


# -- commands -----------------------------------------------------------------
def cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    if args.output is not None and not args.output.strip():
        raise UsageError("--output is empty: give the path of the key file to write")
    ring = KeyRing.generate(classes, key_id=args.key_id)
    if args.output is not None:
        target = Path(args.output)
        if target.is_dir():
            raise CommandError(f"{target} is a folder: give the path of the key file to write")
        if target.exists() and not args.force:
            raise CommandError(f"{target} exists; pass --force to replace it")
        check_key_file_target(target, create_folder=True)
        write_key_file(ring, target)
        print(f"wrote {len(classes)} class key(s) to {target} (mode 0600)", file=sys.stderr)
        return 0
    if args.format == "json":
        print(json.dumps(ring.to_dict(), indent=2, sort_keys=True))
        return 0
    print("# donjon keys: keep this file secret (e.g. .env, mode 0600)")
    for name in ring.classes:
        ck = ring.snapshot(name)
        secret: Secret = ck.secrets[ck.current]
        print(f"DONJON_KEY_{name.upper()}={ck.current}:{encode_secret(secret)}")
    return 0


def _apply_shared_epochs(settings: Settings, ring: KeyRing) -> str:
    """Raise ``ring``'s class epochs to the store's (the kill switch); say what was used.

    ``inspect`` reads the store only if it exists: it never creates one. A
    store that cannot be read is reported (the verdict then ignores kills
    made since the key ring was written) rather than failing the command.
    """
    url = settings.store
    shown = redact_url(url)
    if _is_memory(url):
        return f"key ring only ({shown} keeps no kill-switch epochs between runs)"
    path = sqlite_path(url)
    if path is not None and not Path(path).exists():
        return f"key ring only (no SQLite store at {path})"
    try:
        with store_session(url) as store:
            epochs = store.epochs()
    except StoreError as exc:
        reason = _one_line(exc)
        print(
            f"donjon: warning: cannot read the kill-switch epochs from {shown} ({reason});"
            " the verdict below ignores any `donjon kill`",
            file=sys.stderr,
        )
        return f"key ring only: store {shown} unavailable"
    for name, epoch in epochs.items():
        if ring.get(name) is not None:
            ring.set_epoch(name, epoch)
    return f"key ring + store {shown}"


def cmd_inspect(args: argparse.Namespace, settings: Settings) -> int:
    ring = settings.keyring()
    source = _apply_shared_epochs(settings, ring)
    result = TokenCodec(ring).verify(args.token)
    data: dict[str, Any] = {
        "verdict": result.verdict.value,
        "reason": result.reason or "-",
        "class": result.session_class,
        "key_id": result.key_id,
        "issued_at": _iso(result.issued_at),
        "expires_at": _iso(result.expires_at),
        "bound": result.bound,
    }
    if result.ok:
        data["session_id"] = result.session_id
    data["epochs"] = source
    _out(data, as_json=args.json)
    return 0 if result.ok else 3


def cmd_rotate(args: argparse.Namespace, settings: Settings) -> int:
    env = env_key_variables()
    if env:
        raise CommandError(
            f"keys come from the environment ({', '.join(env)}), which `donjon rotate` cannot"
            " change: rotate needs a key file (unset the variables and pass --keys FILE), or"
            " put a new key first in each variable (`donjon keygen --key-id k2` makes one)"
        )
    if args.stage and args.grace is not None:
        raise UsageError(
            "--grace starts when the new key becomes current: give it with --promote, not --stage"
        )
    ring = settings.keyring()
    check_key_file_target(settings.keys, create_folder=False)
    grace = None
    if args.grace is not None:
        grace = datetime.now(UTC).timestamp() + args.grace
    if args.promote:
        ring.promote(args.session_class, args.promote, grace_until=grace)
        kid = args.promote
    else:
        kid = ring.rotate(args.session_class, grace_until=grace, activate=not args.stage)
    for old in args.retire or ():
        ring.retire(args.session_class, old)
    write_key_file(ring, settings.keys)
    state = "staged (accepted, not signing yet)" if args.stage else "current"
    print(f"{args.session_class}: key {kid!r} is {state}; saved {settings.keys}")
    print("restart or reload every process that signs tokens of this class", file=sys.stderr)
    return 0


def cmd_kill(args: argparse.Namespace, settings: Settings) -> int:
    from ..engine import Engine

    ring = settings.keyring()
    ring.snapshot(args.session_class)  # an unknown class fails before the store is touched
    with _existing_store(settings, "kill") as store:
        epoch = Engine(keyring=ring, store=store).kill(args.session_class)
    print(
        f"{args.session_class}: every token issued before {_iso(epoch)} is now REVOKED "
        "(all processes sharing the store, within a second)"
    )
    return 0


def cmd_sessions(args: argparse.Namespace, settings: Settings) -> int:
    from ..engine import Engine
    from ._progress import Progress

    if any(not user.strip() for user in args.user):
        raise UsageError("--user is empty: give a user id")
    ring = settings.keyring()
    command = f"sessions {args.action}"
    with _existing_store(settings, command) as store:
        engine = Engine(keyring=ring, store=store)
        if args.action == "list":
            rows = [
                {
                    "key": info.key[:16],
                    "class": info.session_class,
                    "created": _iso(info.created_at),
                    "last_seen": _iso(info.last_seen),
                    "expires": _iso(info.expires_at),
                }
                for user in args.user
                for info in engine.sessions_of(user)
            ]
            _out(rows, as_json=args.json)
            return 0
        total = 0
        bar = Progress(len(args.user), "revoking")
        for user in args.user:
            total += engine.revoke_user(user)
            bar.advance()
        bar.close()
    print(f"revoked {total} session(s) of {len(args.user)} user(s)")
    return 0


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _listen_port(host: str, port: int) -> int:
    """Check that the demo can listen on ``host:port``; return the port it will use.

    Binds (without listening) every address ``host`` resolves to, as asyncio's
    ``create_server`` does, so a bad host or a busy port fails here in one
    line instead of in the server's log. Port 0 becomes a free port, so the
    address printed is the one served.
    """
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _one_line(exc)
        raise CommandError(f"cannot listen on host {host!r}: {reason}") from None
    chosen = port
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((address[0], chosen, *address[2:]))
            except OSError as exc:
                raise CommandError(
                    f"cannot listen on {_url(host, chosen)}: {exc.strerror or exc}"
                ) from None
            chosen = chosen or int(sock.getsockname()[1])
    return chosen


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    try:
        demo = importlib.import_module("donjon.demo")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise CommandError(f"the demo needs `pip install 'donjon[demo]'` ({exc})") from None
    port = _listen_port(args.host, args.port)
    secure = None if args.cookie_secure is None else args.cookie_secure == "1"
    try:
        demo.run(host=args.host, port=port, data=Path(args.data), cookie_secure=secure)
    except SystemExit as exc:  # uvicorn exits 3 when it cannot start after all
        if exc.code in (0, None):
            return 0
        raise CommandError(f"the demo server could not start on {_url(args.host, port)}") from None
    return 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from ._bench import run_bench

    return run_bench(seconds=args.seconds, as_json=args.json)


# -- argument types -----------------------------------------------------------
def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"port {port} is out of range: use 1-65535, or 0 for any free port"
        )
    return port


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds")
    return value


def _grace(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative: give seconds >= 0")
    return value


def _bench_seconds(text: str) -> float:
    value = _number(text)
    if not 0 < value <= BENCH_MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text} is out of range: give seconds > 0 and <= {BENCH_MAX_SECONDS:g}"
        )
    return value


class _Parser(argparse.ArgumentParser):
    """Reports a usage error in one ``donjon: ...`` line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("donjon").strip()
        where = f"{command}: " if command else ""
        print(f"donjon: {where}{message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


# -- parser -------------------------------------------------------------------
def _common(p: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    p.add_argument(
        "--config", default=default, help="TOML config file (default: ./donjon.toml if present)"
    )
    p.add_argument("--keys", default=default, help="key file (JSON)")
    p.add_argument("--store", default=default, help="store URL")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    p = _Parser(
        prog="donjon",
        description="Donjon: layered-security sessions — keys, tokens, kill switch, demo.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"donjon {__version__}")
    _common(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    real_add = sub.add_parser

    def add_parser(name: str, **kw: Any) -> _Parser:
        child = real_add(name, **kw)
        _common(child, suppress=True)  # the options work after the command too
        return child

    sub.add_parser = add_parser  # type: ignore[method-assign]

    k = sub.add_parser("keygen", help="make new secrets, ready for an env file or a key file")
    k.add_argument("--classes", default="user,admin", help="comma-separated session classes")
    k.add_argument("--key-id", default="k1", help="id of the new keys (default k1)")
    k.add_argument("--format", choices=("env", "json"), default="env")
    k.add_argument("--output", "-o", help="write a key file (mode 0600) instead of printing")
    k.add_argument("--force", action="store_true", help="replace an existing key file")
    k.set_defaults(func=cmd_keygen)

    i = sub.add_parser("inspect", help="show a token's verdict and fields")
    i.add_argument("token")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_inspect)

    r = sub.add_parser("rotate", help="make a new key current for a class")
    r.add_argument("session_class", metavar="CLASS")
    r.add_argument("--grace", type=_grace, help="seconds (>= 0) the previous key keeps verifying")
    r.add_argument("--retire", action="append", metavar="KEY_ID", help="retire an older key id")
    step = r.add_mutually_exclusive_group()
    step.add_argument(
        "--stage", action="store_true", help="add the new key as accepted only (fleet step 1)"
    )
    step.add_argument(
        "--promote", metavar="KEY_ID", help="make a staged key current (fleet step 2)"
    )
    r.set_defaults(func=cmd_rotate)

    kl = sub.add_parser("kill", help="revoke every token of a class issued before now")
    kl.add_argument("session_class", metavar="CLASS")
    kl.set_defaults(func=cmd_kill)

    s = sub.add_parser("sessions", help="list or revoke a user's sessions")
    s.add_argument("action", choices=("list", "revoke"))
    s.add_argument("--user", action="append", required=True, metavar="ID", help="user id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_sessions)

    d = sub.add_parser("demo", help="run the demo web app (http://127.0.0.1:8000)")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument(
        "--port", type=_port, default=8000, help="TCP port; 0 picks a free one (printed)"
    )
    d.add_argument("--data", default="data", help="folder for keys and the SQLite store")
    d.add_argument("--cookie-secure", choices=("0", "1"), default=None)
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="measure token issue/verify on this machine")
    b.add_argument(
        "--seconds",
        type=_bench_seconds,
        default=0.3,
        help=f"time per measurement (> 0, <= {BENCH_MAX_SECONDS:g})",
    )
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)
    return p


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"donjon: {record.levelname.lower()}: " + " ".join(record.getMessage().split())


@contextlib.contextmanager
def _library_warnings() -> Iterator[None]:
    """Print the library's warnings (e.g. a key file others can read) as ``donjon:`` lines.

    Without this they would reach stderr through logging's last-resort
    handler, unprefixed.
    """
    logger = logging.getLogger("donjon")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_OneLine())
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status.

    Every failure is one ``donjon: ...`` line on stderr and a non-zero status:
    2 for a usage error, 1 for anything else (3 is ``inspect``'s "not valid").
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    # The demo sets up its own logging: it shows the library's events.
    quiet = contextlib.nullcontext() if args.command == "demo" else _library_warnings()
    try:
        with quiet:
            settings = resolve(keys=args.keys, store=args.store, config=args.config)
            return int(args.func(args, settings))
    except CommandError as exc:
        print(f"donjon: {_one_line(exc)}", file=sys.stderr)
        return exc.code
    except (DonjonError, OSError) as exc:
        print(f"donjon: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the promise: one line, never a traceback
        print(
            f"donjon: unexpected {type(exc).__name__}: {_one_line(exc)} (please report this)",
            file=sys.stderr,
        )
        return 1
