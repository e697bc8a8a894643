"""The ``donjon`` command line: ``python -m donjon.cli`` or ``donjon``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..core import KeyRing, Secret, TokenCodec
from ..core._secret import encode_secret
from ..errors import DonjonError
from ._config import Settings, open_store, resolve

__all__ = ["main"]

EPILOG = """\
configuration: flags win over DONJON_* variables, which win over donjon.toml
  --keys / DONJON_KEYS / keys        key file (default: $DONJON_DATA/keys.json)
  --store / DONJON_STORE_URL / store sqlite:///path (default: $DONJON_DATA/sessions.sqlite3),
                                     memory:, redis://host:port/0, redis+cluster://host:port,
                                     postgresql://user@host/db
  DONJON_KEY_<CLASS>=kid:secret,...  keys from the environment instead of a file
"""


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


# -- commands -----------------------------------------------------------------
def cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    ring = KeyRing.generate(classes, key_id=args.key_id)
    if args.output:
        target = Path(args.output)
        if target.exists() and not args.force:
            print(f"donjon: {target} exists; pass --force to replace it", file=sys.stderr)
            return 1
        target.parent.mkdir(parents=True, exist_ok=True)
        ring.save(target)
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


def cmd_inspect(args: argparse.Namespace, settings: Settings) -> int:
    ring = settings.keyring()
    result = TokenCodec(ring).verify(args.token)
    data = {
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
    _out(data, as_json=args.json)
    return 0 if result.ok else 3


def cmd_rotate(args: argparse.Namespace, settings: Settings) -> int:
    ring = settings.keyring()
    grace = None
    if args.grace is not None:
        grace = datetime.now(UTC).timestamp() + args.grace
    if args.promote:
        ring.promote(args.session_class, args.promote, grace_until=grace)
        kid = args.promote
    else:
        kid = ring.rotate(args.session_class, grace_until=grace, activate=not args.stage)
    if args.retire:
        for old in args.retire:
            ring.retire(args.session_class, old)
    ring.save(settings.keys)
    state = "staged (accepted, not signing yet)" if args.stage else "current"
    print(f"{args.session_class}: key {kid!r} is {state}; saved {settings.keys}")
    print("restart or reload every process that signs tokens of this class", file=sys.stderr)
    return 0


def cmd_kill(args: argparse.Namespace, settings: Settings) -> int:
    from ..engine import Engine

    engine = Engine(keyring=settings.keyring(), store=open_store(settings.store))
    try:
        epoch = engine.kill(args.session_class)
    finally:
        engine.close()
    print(
        f"{args.session_class}: every token issued before {_iso(epoch)} is now REVOKED "
        "(all processes sharing the store, within a second)"
    )
    return 0


def cmd_sessions(args: argparse.Namespace, settings: Settings) -> int:
    from ..engine import Engine
    from ._progress import Progress

    engine = Engine(keyring=settings.keyring(), store=open_store(settings.store))
    try:
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
    finally:
        engine.close()


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    try:
        demo = importlib.import_module("donjon.demo")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        print(f"donjon: the demo needs `pip install 'donjon[demo]'` ({exc})", file=sys.stderr)
        return 1
    secure = None if args.cookie_secure is None else args.cookie_secure == "1"
    demo.run(host=args.host, port=args.port, data=Path(args.data), cookie_secure=secure)
    return 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from ._bench import run_bench

    return run_bench(seconds=args.seconds, as_json=args.json)


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
    p = argparse.ArgumentParser(
        prog="donjon",
        description="Donjon: layered-security sessions — keys, tokens, kill switch, demo.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"donjon {__version__}")
    _common(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    real_add = sub.add_parser

    def add_parser(name: str, **kw: Any) -> argparse.ArgumentParser:
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
    r.add_argument("--grace", type=float, help="seconds the previous key keeps verifying")
    r.add_argument("--retire", action="append", metavar="KEY_ID", help="retire an older key id")
    r.add_argument(
        "--stage", action="store_true", help="add the new key as accepted only (fleet step 1)"
    )
    r.add_argument("--promote", metavar="KEY_ID", help="make a staged key current (fleet step 2)")
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
    d.add_argument("--port", type=int, default=8000)
    d.add_argument("--data", default="data", help="folder for keys and the SQLite store")
    d.add_argument("--cookie-secure", choices=("0", "1"), default=None)
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="measure token issue/verify on this machine")
    b.add_argument("--seconds", type=float, default=0.3, help="time per measurement")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = resolve(keys=args.keys, store=args.store, config=args.config)
        return int(args.func(args, settings))
    except DonjonError as exc:
        print(f"donjon: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"donjon: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
