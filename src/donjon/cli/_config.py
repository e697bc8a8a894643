"""Where the CLI finds its keys and its store: flags, then environment, then a file."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from ..core import KeyRing
from ..errors import ConfigurationError, DonjonError, StoreUnavailable
from ..stores import Store

__all__ = [
    "CommandError",
    "Settings",
    "UsageError",
    "env_key_variables",
    "open_store",
    "redact_url",
    "resolve",
    "sqlite_path",
    "store_session",
]

DEFAULT_CONFIG: Final = "donjon.toml"
SETTINGS: Final = ("data", "keys", "store")
SQLITE_FORMS: Final = "sqlite:///relative/path or sqlite:////absolute/path"

# The names TOML itself gives its value types, for messages about a config file.
_TOML_TYPES: Final[Mapping[type, str]] = {
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    list: "an array",
    dict: "a table",
    dt.datetime: "a date-time",
    dt.date: "a date",
    dt.time: "a time",
}


class CommandError(Exception):
    """A failure the CLI reports as one ``donjon: ...`` line, exit status 1."""

    code = 1


class UsageError(CommandError):
    """Flags that contradict each other or are out of range: exit status 2."""

    code = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The CLI's resolved configuration."""

    keys: Path
    """The key file (JSON, as ``KeyRing.save`` writes it)."""
    store: str
    """A store URL: ``sqlite:///path``, ``memory:``, ``redis://…``,
    ``redis+cluster://…`` or ``postgresql://…``."""
    store_origin: str = "from --store"
    """Where :attr:`store` came from, for error messages."""
    store_is_default: bool = False
    """Whether :attr:`store` is the default (no flag, variable or file setting)."""

    def keyring(self) -> KeyRing:
        """Load the key ring, preferring ``DONJON_KEY_<CLASS>`` variables when set."""
        if env_key_variables():
            return KeyRing.from_env()
        if not self.keys.exists():
            raise ConfigurationError(
                f"no key file at {self.keys}: create one with `donjon keygen --output {self.keys}`"
            )
        return KeyRing.from_file(self.keys)


def env_key_variables() -> list[str]:
    """Return the names of the ``DONJON_KEY_<CLASS>`` variables that are set."""
    return sorted(k for k in os.environ if k.startswith("DONJON_KEY_"))


# -- the settings ---------------------------------------------------------------
def _toml_type(value: object) -> str:
    for kind, name in _TOML_TYPES.items():
        if type(value) is kind:
            return name
    return type(value).__name__


def _text(value: object, what: str, expected: str) -> str:
    """Return ``value`` if it is non-empty text; the value itself is never shown."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a string ({expected}), not {_toml_type(value)}")
    if not value.strip():
        raise ConfigurationError(f"{what} is empty: give {expected}")
    return value


def _file_settings(path: Path | None) -> tuple[dict[str, str], str]:
    candidate = path or (Path(DEFAULT_CONFIG) if Path(DEFAULT_CONFIG).exists() else None)
    if candidate is None:
        return {}, ""
    where = f"config file {candidate}"
    try:
        data = tomllib.loads(candidate.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"{where} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"{where} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{where} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigurationError(f"{where} is unreadable: {exc.strerror or exc}") from None
    section = data.get("donjon", data)
    if not isinstance(section, dict):
        raise ConfigurationError(f"{where}: [donjon] must be a table, not {_toml_type(section)}")
    unknown = sorted(set(section) - set(SETTINGS))
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown setting(s) {', '.join(map(repr, unknown))};"
            f" the settings are {', '.join(SETTINGS)}"
        )
    checked = {k: _text(v, f"{where}: '{k}'", _EXPECTED[k]) for k, v in section.items()}
    return checked, where


_EXPECTED: Final = {"data": "a folder path", "keys": "a key-file path", "store": "a store URL"}


def _pick(
    flag: str | None, flag_name: str, env_name: str, file: dict[str, str], file_key: str, where: str
) -> tuple[str, str] | None:
    """Return the first setting given, and where it came from."""
    expected = _EXPECTED[file_key]
    if flag is not None:
        return _text(flag, flag_name, expected), f"from {flag_name}"
    if env_name in os.environ:
        return _text(os.environ[env_name], env_name, expected), f"from {env_name}"
    if file_key in file:
        return file[file_key], f"from '{file_key}' in {where}"
    return None


def resolve(*, keys: str | None, store: str | None, config: str | None) -> Settings:
    """Resolve settings: command-line flags, then ``DONJON_*`` variables, then the file.

    Raises:
        ConfigurationError: A setting is empty, of the wrong type or unknown,
            or the config file is missing, unreadable or not TOML.
    """
    if config is not None:
        _text(config, "--config", "a TOML file path")
    file, where = _file_settings(Path(config) if config else None)
    data = _pick(None, "", "DONJON_DATA", file, "data", where)
    data_dir = Path(data[0] if data else "data")
    picked_keys = _pick(keys, "--keys", "DONJON_KEYS", file, "keys", where)
    keys_path = picked_keys[0] if picked_keys else str(data_dir / "keys.json")
    picked_store = _pick(store, "--store", "DONJON_STORE_URL", file, "store", where)
    if picked_store is None:
        store_url = f"sqlite:///{data_dir / 'sessions.sqlite3'}"
        origin = f"the default, data folder {data[1]}" if data else "the default, DONJON_DATA unset"
    else:
        store_url, origin = picked_store
    return Settings(
        keys=Path(keys_path),
        store=store_url,
        store_origin=origin,
        store_is_default=picked_store is None,
    )


# -- the store ----------------------------------------------------------------
def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("://", 1)[0] + "://…" if "://" in url else "…"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if sep else netloc
    query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # geturl() would also turn sqlite:///x into sqlite:/x
    return parts._replace(netloc=netloc, query=query).geturl()


def sqlite_path(url: str) -> str | None:
    """Return the file path of a ``sqlite://`` URL, or ``None`` for any other URL.

    ``sqlite:///data/s.db`` is ``data/s.db`` (relative to the current folder)
    and ``sqlite:////var/lib/s.db`` is ``/var/lib/s.db``, as in SQLAlchemy.
    """
    if not url.startswith("sqlite:"):
        return None
    rest = url.removeprefix("sqlite:")
    if not rest.startswith("///") or rest == "///":
        raise ConfigurationError(f"SQLite store URL {url!r}: write {SQLITE_FORMS}")
    return rest.removeprefix("///")


def open_store(url: str) -> Store:
    """Open a sync store from a URL.

    Raises:
        ConfigurationError: The URL is unknown or malformed.
        StoreUnavailable: The store cannot be opened.
    """
    if url in ("memory:", "memory://"):
        from ..stores import MemoryStore

        return MemoryStore()
    path = sqlite_path(url)
    if path is not None:
        from ..stores import SQLiteStore

        return SQLiteStore(path)
    try:
        if url.startswith(("redis://", "rediss://", "unix://", "redis+cluster://")):
            from ..stores.redis import RedisStore

            if url.startswith("redis+cluster://"):
                return RedisStore.from_url(
                    "redis://" + url.removeprefix("redis+cluster://"), cluster=True
                )
            return RedisStore.from_url(url)
        if url.startswith(("postgresql://", "postgres://")):
            from ..stores.postgres import PostgresStore

            return PostgresStore.from_url(url)
    except DonjonError:
        raise
    except (ValueError, TypeError) as exc:  # the drivers' URL parsers
        raise ConfigurationError(f"invalid store URL {redact_url(url)}: {exc}") from None
    raise ConfigurationError(
        f"unknown store URL {redact_url(url)!r}: use {SQLITE_FORMS}, memory:, redis://,"
        " redis+cluster:// or postgresql://"
    )


class _LastMessage(logging.Handler):
    """Keeps the drivers' log messages instead of printing them; remembers why it failed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            lines = record.getMessage().strip().splitlines()
            connect = re.match(r"error connecting in '[^']*': (.*)", lines[0] if lines else "")
            # The cause ("Connection refused") beats later "reconnection failed" notes.
            if connect or self.last is None:
                self.last = connect.group(1) if connect else lines[0]


# psycopg_pool logs each failed connection attempt as a warning ("error
# connecting in 'donjon': ..."), several per command; the CLI reports one line.
_DRIVER_LOGGERS: Final = ("psycopg", "redis")


@contextlib.contextmanager
def store_session(url: str) -> Iterator[Store]:
    """Open the store at ``url`` for one command, with quiet drivers, and close it.

    The drivers' log records are kept, not printed: the last one is added to
    a :class:`StoreUnavailable` message (it says why, e.g. "Connection
    refused"), so one line tells the whole story.
    """
    keeper = _LastMessage()
    saved = []
    for name in _DRIVER_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate))
        logger.addHandler(keeper)
        logger.propagate = False
    try:
        store = open_store(url)
        try:
            yield store
        finally:
            store.close()
    except StoreUnavailable as exc:
        if keeper.last and keeper.last not in str(exc):
            raise StoreUnavailable(f"{exc} (last error: {keeper.last})") from exc
        raise
    finally:
        for logger, propagate in saved:
            logger.removeHandler(keeper)
            logger.propagate = propagate
