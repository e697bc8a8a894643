"""Where the CLI finds its keys and its store: flags, then environment, then a file."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import KeyRing
from ..errors import ConfigurationError

__all__ = ["Settings", "open_store", "resolve"]

DEFAULT_CONFIG = "donjon.toml"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The CLI's resolved configuration."""

    keys: Path
    """The key file (JSON, as ``KeyRing.save`` writes it)."""
    store: str
    """A store URL: ``sqlite:///path``, ``memory:``, ``redis://…``,
    ``redis+cluster://…`` or ``postgresql://…``."""

    def keyring(self) -> KeyRing:
        """Load the key ring, preferring ``DONJON_KEY_<CLASS>`` variables when set."""
        if any(k.startswith("DONJON_KEY_") for k in os.environ):
            return KeyRing.from_env()
        if not self.keys.exists():
            raise ConfigurationError(
                f"no key file at {self.keys}: create one with `donjon keygen --output {self.keys}`"
            )
        return KeyRing.from_file(self.keys)


def _file_settings(path: Path | None) -> dict[str, Any]:
    candidate = path or (Path(DEFAULT_CONFIG) if Path(DEFAULT_CONFIG).exists() else None)
    if candidate is None:
        return {}
    try:
        data = tomllib.loads(candidate.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"config file {candidate} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"config file {candidate} is unreadable: {exc}") from None
    section = data.get("donjon", data)
    if not isinstance(section, dict):
        raise ConfigurationError(f"config file {candidate}: [donjon] must be a table")
    return section


def resolve(*, keys: str | None, store: str | None, config: str | None) -> Settings:
    """Resolve settings: command-line flags, then ``DONJON_*`` variables, then the file."""
    file = _file_settings(Path(config) if config else None)
    data = Path(os.environ.get("DONJON_DATA", file.get("data", "data")))
    keys_path = keys or os.environ.get("DONJON_KEYS") or file.get("keys") or str(data / "keys.json")
    store_url = (
        store
        or os.environ.get("DONJON_STORE_URL")
        or file.get("store")
        or f"sqlite:///{data / 'sessions.sqlite3'}"
    )
    return Settings(keys=Path(str(keys_path)), store=str(store_url))


def open_store(url: str) -> Any:
    """Open a sync store from a URL."""
    if url in ("memory:", "memory://"):
        from ..stores import MemoryStore

        return MemoryStore()
    if url.startswith("sqlite://"):
        from ..stores import SQLiteStore

        path = url.removeprefix("sqlite://")
        return SQLiteStore(path[1:] if path.startswith("/") and not path.startswith("//") else path)
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
    raise ConfigurationError(
        f"unknown store URL {url!r}: use sqlite:///path, memory:, redis://, "
        "redis+cluster:// or postgresql://"
    )
