from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import stat
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, final

from ..errors import ConfigurationError
from ._secret import Secret, decode_secret, encode_secret

__all__ = ["CLASS_RE", "KEY_ID_RE", "MAX_EPOCH", "ClassKeys", "KeyRing"]

CLASS_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
"""Session class names: lowercase, start with a letter, at most 32 characters."""
KEY_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,16}")
"""Key ids: 1 to 16 characters of the base64url alphabet."""

_MAC_LABEL: Final = b"donjon/v1/token-mac"
_BIND_LABEL: Final = b"donjon/v1/binding"
_FILE_FORMAT: Final = 1
MAX_EPOCH: Final = 253_402_300_800.0
"""The first instant of the year 10000 (Unix time): epochs must lie before it."""

log = logging.getLogger("donjon")


def _derive(secret: Secret, label: bytes) -> bytes:
    # Domain separation: the same secret never keys two different purposes.
    return hmac.digest(secret.reveal(), label, "sha256")


def _check_class(name: str) -> str:
    if not isinstance(name, str) or not CLASS_RE.fullmatch(name):
        raise ConfigurationError(
            f"session class {name!r} must match {CLASS_RE.pattern} (e.g. 'user', 'admin')"
        )
    return name


def _check_key_id(key_id: str) -> str:
    if not isinstance(key_id, str) or not KEY_ID_RE.fullmatch(key_id):
        raise ConfigurationError(f"key id {key_id!r} must match {KEY_ID_RE.pattern}")
    return key_id


def _as_secret(value: Secret | bytes | str, *, name: str) -> Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        return Secret(bytes(value) if not isinstance(value, str) else value, name=name)
    raise ConfigurationError(f"{name} must be bytes, str or Secret, not {type(value).__name__}")


def _unix_time(value: object, what: str) -> float:
    # Key files are user-edited JSON: a wrong type is a configuration error, not a crash.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{what} must be a Unix time (a number)")
    try:
        number = float(value)
    except OverflowError:  # an int of hundreds of digits
        raise ConfigurationError(f"{what} must be a finite Unix time") from None
    if not math.isfinite(number):
        raise ConfigurationError(f"{what} must be a finite Unix time, not {number}")
    return number


def _epoch(value: object, what: str) -> float:
    number = _unix_time(value, what)
    if not 0 <= number < MAX_EPOCH:
        raise ConfigurationError(
            f"{what} must be a finite time >= 0 and before the year 10000 ({MAX_EPOCH:.0f})"
        )
    return number


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of duplicate names; in a key file that silently drops a key.
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:
            raise ConfigurationError(f"the name {name!r} appears twice in one object")
        obj[name] = value
    return obj


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ClassKeys:
    """An immutable snapshot of one session class's keys.

    The key ring swaps whole snapshots, so a reader never sees a half-made
    rotation.
    """

    name: str
    current: str
    secrets: Mapping[str, Secret] = field(repr=False)
    not_after: Mapping[str, float]
    retired: frozenset[str]
    epoch: float
    mac_keys: Mapping[str, hmac.HMAC] = field(repr=False)
    """Pre-keyed HMAC-SHA256 states; callers ``copy()`` them, never update them."""
    bind_keys: Mapping[str, bytes] = field(repr=False)
    epoch_ms: int

    @classmethod
    def build(
        cls,
        *,
        name: str,
        current: str,
        secrets_: Mapping[str, Secret],
        not_after: Mapping[str, float],
        retired: Iterable[str],
        epoch: float,
    ) -> ClassKeys:
        if current not in secrets_:
            raise ConfigurationError(f"class {name!r}: current key id {current!r} has no secret")
        retired_set = frozenset(_check_key_id(k) for k in retired)
        both = retired_set & set(secrets_)
        if both:
            raise ConfigurationError(
                f"class {name!r}: key ids {sorted(both)} are both active and retired"
            )
        epoch = _epoch(epoch, f"class {name!r}: epoch")
        # NaN would never compare as past the deadline: a grace period without end.
        deadlines = {
            k: _unix_time(v, f"class {name!r}: not_after of {k!r}") for k, v in not_after.items()
        }
        return cls(
            name=name,
            current=current,
            secrets=dict(secrets_),
            not_after={k: v for k, v in deadlines.items() if k in secrets_ and k != current},
            retired=retired_set,
            epoch=epoch,
            mac_keys={
                k: hmac.new(_derive(s, _MAC_LABEL), digestmod="sha256") for k, s in secrets_.items()
            },
            bind_keys={k: _derive(s, _BIND_LABEL) for k, s in secrets_.items()},
            # round(..., 3) first drops float noise: epoch * 1000 can land a hair above a
            # whole millisecond, and ceil() would then revoke a token issued exactly at it.
            epoch_ms=math.ceil(round(epoch * 1000, 3)),
        )


@final
class KeyRing:
    """Secrets per session class: one current key that signs, older keys that verify.

    For each class the ring holds:

    * one **current** key that signs new tokens;
    * any number of **older** keys that still verify (rotation with a grace
      period, optionally ending at a deadline);
    * **retired** key ids, recognised but rejected (verdict ``RETIRED``, not an
      attack);
    * an **epoch**: tokens of the class issued before it are ``REVOKED`` (the
      kill switch).

    Guarantees: every secret is at least 32 bytes; secrets never appear in
    ``repr``, logs or error messages; each secret is used only through keys
    derived from it per purpose. Changes (``rotate``, ``retire``,
    ``set_epoch``) are atomic per class and safe across threads. Not
    guaranteed: the ring does not share changes between processes by itself
    (the engine's store does, see the kill switch).
    """

    __slots__ = ("_classes", "_lock")

    def __init__(self) -> None:
        self._classes: dict[str, ClassKeys] = {}
        self._lock = threading.Lock()

    # -- building -------------------------------------------------------
    def add_class(
        self,
        session_class: str,
        *,
        keys: Mapping[str, Secret | bytes | str],
        current: str | None = None,
        retired: Iterable[str] = (),
        epoch: float = 0.0,
        not_after: Mapping[str, float] | None = None,
    ) -> KeyRing:
        """Add (or replace) a session class and return the ring, for chaining.

        Args:
            session_class: The class name, e.g. ``"user"`` or ``"admin"``.
            keys: Key id to secret. A ``str`` secret is used as its UTF-8 bytes.
            current: The key id that signs; defaults to the first of ``keys``.
            retired: Key ids that are recognised but no longer accepted.
            epoch: Tokens issued before this Unix time are revoked; finite,
                ``>= 0`` and before the year 10000.
            not_after: Optional deadline (finite Unix time) per older key id
                after which it counts as retired.

        Raises:
            WeakSecret: A secret is shorter than 32 bytes.
            ConfigurationError: A name, key id, epoch or deadline is invalid.
        """
        name = _check_class(session_class)
        if not keys:
            raise ConfigurationError(f"class {name!r} needs at least one key")
        parsed = {
            _check_key_id(kid): _as_secret(value, name=f"secret {name}/{kid}")
            for kid, value in keys.items()
        }
        cur = _check_key_id(current) if current is not None else next(iter(parsed))
        snapshot = ClassKeys.build(
            name=name,
            current=cur,
            secrets_=parsed,
            not_after=dict(not_after or {}),
            retired=retired,
            epoch=epoch,
        )
        with self._lock:
            self._classes[name] = snapshot
        return self

    @classmethod
    def generate(cls, classes: Iterable[str] = ("user",), *, key_id: str = "k1") -> KeyRing:
        """Return a ring with one fresh random 32-byte key per class."""
        ring = cls()
        if isinstance(classes, str):
            classes = (classes,)  # "user" means one class, not four one-letter ones
        for name in classes:
            ring.add_class(name, keys={key_id: Secret.generate()})
        if not ring._classes:
            raise ConfigurationError("KeyRing.generate() needs at least one class")
        return ring

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, prefix: str = "DONJON_"
    ) -> KeyRing:
        """Build a ring from environment variables (as ``donjon keygen`` prints them).

        ``{prefix}KEY_<CLASS>=kid:secret[,kid:secret...]`` lists the keys of a
        class, the first one current; secrets are base64url text.
        ``{prefix}RETIRED_<CLASS>=kid[,kid...]`` and ``{prefix}EPOCH_<CLASS>=<unix
        time>`` are optional.

        Args:
            environ: The mapping to read; ``os.environ`` when omitted.
            prefix: Variable-name prefix.
        """
        env = os.environ if environ is None else environ
        ring = cls()
        key_prefix = f"{prefix}KEY_"
        seen: dict[str, str] = {}
        for var in sorted(env):
            if not var.startswith(key_prefix):
                continue
            name = var[len(key_prefix) :].lower()
            if name in seen:
                # Otherwise the later variable silently replaces the other's keys.
                raise ConfigurationError(
                    f"{seen[name]} and {var} both configure class {name!r}: keep one"
                )
            seen[name] = var
            keys: dict[str, Secret | bytes | str] = {}
            for item in filter(None, (p.strip() for p in env[var].split(","))):
                kid, sep, text = item.partition(":")
                if not sep:
                    raise ConfigurationError(f"{var}: each entry must be 'kid:secret'")
                if kid in keys:
                    raise ConfigurationError(f"{var}: key id {kid!r} appears twice")
                keys[kid] = decode_secret(text, name=f"{var} key {kid!r}")
            retired = [
                r.strip()
                for r in env.get(f"{prefix}RETIRED_{name.upper()}", "").split(",")
                if r.strip()
            ]
            epoch_text = env.get(f"{prefix}EPOCH_{name.upper()}", "0")
            try:
                epoch = float(epoch_text)
            except ValueError:
                raise ConfigurationError(
                    f"{prefix}EPOCH_{name.upper()} must be a Unix time"
                ) from None
            ring.add_class(name, keys=keys, retired=retired, epoch=epoch)
        if not ring._classes:
            raise ConfigurationError(
                f"no {key_prefix}<CLASS> variable found: run `donjon keygen` for some"
            )
        return ring

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KeyRing:
        """Build a ring from the JSON-ready form that :meth:`to_dict` returns."""
        if not isinstance(data, Mapping) or data.get("donjon_keyring") != _FILE_FORMAT:
            raise ConfigurationError(
                f"not a donjon key-ring document (expected 'donjon_keyring': {_FILE_FORMAT})"
            )
        classes = data.get("classes")
        if not isinstance(classes, Mapping) or not classes:
            raise ConfigurationError("key-ring document has no 'classes'")
        ring = cls()
        for name, spec in classes.items():
            if not isinstance(spec, Mapping) or not isinstance(spec.get("keys"), Mapping):
                raise ConfigurationError(f"class {name!r}: 'keys' must be an object")
            keys: dict[str, Secret | bytes | str] = {}
            for kid, text in spec["keys"].items():
                if not isinstance(text, str):
                    raise ConfigurationError(f"class {name!r}: secret {kid!r} must be text")
                keys[kid] = decode_secret(text, name=f"class {name!r} key {kid!r}")
            retired = spec.get("retired", [])
            not_after = spec.get("not_after", {})
            if not isinstance(retired, (list, tuple)):
                raise ConfigurationError(f"class {name!r}: 'retired' must be a list of key ids")
            if not isinstance(not_after, Mapping):
                raise ConfigurationError(f"class {name!r}: 'not_after' must be an object")
            ring.add_class(
                name,
                keys=keys,
                current=spec.get("current"),
                retired=retired,
                epoch=_unix_time(spec.get("epoch", 0.0), f"class {name!r}: 'epoch'"),
                not_after={
                    k: _unix_time(v, f"class {name!r}: 'not_after' of {k!r}")
                    for k, v in not_after.items()
                },
            )
        return ring

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> KeyRing:
        """Load a ring from a JSON key file written by :meth:`save`.

        A name repeated within one JSON object (a key id, a class) is an error,
        not last-wins. A file that group or others may read or write is loaded,
        with a warning on the ``donjon`` logger: ``chmod 600`` it.

        Raises:
            ConfigurationError: The file is missing, unreadable or not a valid
                key-ring document.
            WeakSecret: A secret is shorter than 32 bytes.
        """
        where = os.fspath(path)
        try:
            with open(path, "rb") as fh:
                mode = os.fstat(fh.fileno()).st_mode
                text = fh.read().decode("utf-8")
        except FileNotFoundError:
            raise ConfigurationError(f"key file {where!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(
                f"key file {where!r} is unreadable: {type(exc).__name__}"
            ) from None
        if os.name == "posix" and stat.S_IMODE(mode) & 0o077:
            log.warning(
                "key file %r has mode %03o: group or others can read it; run `chmod 600` on it",
                where,
                stat.S_IMODE(mode),
            )
        try:
            data = json.loads(text, object_pairs_hook=_unique_object)
        except ConfigurationError as exc:
            raise ConfigurationError(f"key file {where!r}: {exc}") from None
        except (ValueError, RecursionError) as exc:
            # ValueError: bad JSON, or an integer of more than 4300 digits.
            raise ConfigurationError(
                f"key file {where!r} is unreadable: {type(exc).__name__}"
            ) from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form of the ring, **secrets included**."""
        with self._lock:
            snapshot = dict(self._classes)
        return {
            "donjon_keyring": _FILE_FORMAT,
            "classes": {
                name: {
                    "current": ck.current,
                    "keys": {kid: encode_secret(s) for kid, s in ck.secrets.items()},
                    "retired": sorted(ck.retired),
                    "epoch": ck.epoch,
                    "not_after": dict(ck.not_after),
                }
                for name, ck in snapshot.items()
            },
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the ring to a JSON key file readable only by its owner (mode 0600).

        The file is replaced atomically (a temporary file in the same folder,
        flushed to disk, then renamed); on any failure the temporary file,
        which holds the secrets, is removed.

        Raises:
            OSError: The folder is missing or not writable, or ``path`` is a folder.
        """
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_dict(), fh, indent=2, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    # -- changes --------------------------------------------------------
    def rotate(
        self,
        session_class: str,
        *,
        key_id: str | None = None,
        secret: Secret | bytes | str | None = None,
        grace_until: float | None = None,
        activate: bool = True,
    ) -> str:
        """Add a new key to a class and (by default) make it current.

        In a fleet, rotate in two steps so that no process meets a token
        signed with a key it does not know yet: ``rotate(cls, activate=False)``
        and deploy (every process now *accepts* the new key), then
        ``promote(cls, new_id)`` and deploy (every process *signs* with it).

        Args:
            session_class: The class to rotate.
            key_id: The new key id; by default the next free ``k<N>``.
            secret: The new secret; a fresh random one by default.
            grace_until: Unix time after which the previous current key counts
                as retired; ``None`` keeps it verifying until :meth:`retire`.
            activate: Make the new key current now; ``False`` only stages it.

        Returns:
            The new key id.
        """
        if grace_until is not None:
            _unix_time(grace_until, "grace_until")  # before the ring changes at all
        with self._lock:
            ck = self._get(session_class)
            kid = _check_key_id(key_id) if key_id is not None else self._next_id(ck)
            if kid in ck.secrets or kid in ck.retired:
                raise ConfigurationError(f"class {ck.name!r}: key id {kid!r} is already used")
            new_secret = (
                Secret.generate() if secret is None else _as_secret(secret, name="new secret")
            )
            self._classes[ck.name] = ClassKeys.build(
                name=ck.name,
                current=ck.current,
                secrets_={kid: new_secret, **ck.secrets},
                not_after=ck.not_after,
                retired=ck.retired,
                epoch=ck.epoch,
            )
        if activate:
            self.promote(session_class, kid, grace_until=grace_until)
        return kid

    def promote(self, session_class: str, key_id: str, *, grace_until: float | None = None) -> None:
        """Make an already-known key current; the previous one keeps verifying.

        Args:
            session_class: The class.
            key_id: A key id the class already holds (see ``rotate(activate=False)``).
            grace_until: Unix time after which the previous current key counts
                as retired; ``None`` keeps it verifying until :meth:`retire`.
        """
        with self._lock:
            ck = self._get(session_class)
            if key_id not in ck.secrets:
                raise ConfigurationError(f"class {ck.name!r}: no active key {key_id!r}")
            if key_id == ck.current:
                return
            not_after = {k: v for k, v in ck.not_after.items() if k != key_id}
            if grace_until is not None:
                not_after[ck.current] = _unix_time(grace_until, "grace_until")
            self._classes[ck.name] = ClassKeys.build(
                name=ck.name,
                current=key_id,
                secrets_=ck.secrets,
                not_after=not_after,
                retired=ck.retired,
                epoch=ck.epoch,
            )

    def retire(self, session_class: str, key_id: str) -> None:
        """Forget an older key's secret; its tokens now get ``RETIRED``."""
        with self._lock:
            ck = self._get(session_class)
            if key_id == ck.current:
                raise ConfigurationError(
                    f"class {ck.name!r}: cannot retire the current key; rotate first"
                )
            if key_id not in ck.secrets:
                raise ConfigurationError(f"class {ck.name!r}: no active key {key_id!r}")
            self._classes[ck.name] = ClassKeys.build(
                name=ck.name,
                current=ck.current,
                secrets_={k: v for k, v in ck.secrets.items() if k != key_id},
                not_after=ck.not_after,
                retired=ck.retired | {key_id},
                epoch=ck.epoch,
            )

    def set_epoch(self, session_class: str, epoch: float) -> bool:
        """Raise a class's epoch; tokens issued before it become ``REVOKED``.

        The epoch only moves forward: a lower value is ignored, so replicas
        that learn of kills in any order converge. Returns whether it moved.

        The engine feeds this method epochs read from the shared store, so a
        value that cannot be an epoch (not a number, not finite, negative, or
        not before the year 10000) is ignored with a warning on the ``donjon``
        logger instead of raising: one bad value in a shared store must not
        fail every request of every process. Check an operator's value with
        :meth:`check_epoch` before it is stored.

        Raises:
            ConfigurationError: The class is unknown.
        """
        with self._lock:
            ck = self._get(session_class)
            try:
                epoch = _epoch(epoch, f"class {ck.name!r}: epoch")
            except ConfigurationError as exc:
                log.warning("ignored an unusable epoch (from the shared store?): %s", exc)
                return False
            if epoch <= ck.epoch:
                return False
            self._classes[ck.name] = ClassKeys.build(
                name=ck.name,
                current=ck.current,
                secrets_=ck.secrets,
                not_after=ck.not_after,
                retired=ck.retired,
                epoch=epoch,
            )
            return True

    @staticmethod
    def check_epoch(epoch: object) -> float:
        """Return ``epoch`` as a float if it can be a class epoch, else raise.

        An epoch is a Unix time (``int`` or ``float``, not ``bool``), finite,
        ``>= 0`` and before the year 10000 (:data:`MAX_EPOCH`). Use it on an
        operator's value (the kill switch's ``at``) before it reaches a
        shared store; :meth:`set_epoch` ignores such values instead.

        Raises:
            ConfigurationError: The value cannot be an epoch.
        """
        return _epoch(epoch, "epoch")

    # -- reading --------------------------------------------------------
    @property
    def classes(self) -> tuple[str, ...]:
        """The configured session classes."""
        return tuple(self._classes)

    def snapshot(self, session_class: str) -> ClassKeys:
        """Return the current immutable keys of one class."""
        return self._get(session_class)

    def get(self, session_class: str) -> ClassKeys | None:
        """Return the keys of a class, or ``None`` when it is not configured."""
        return self._classes.get(session_class)

    def epoch(self, session_class: str) -> float:
        """Return a class's epoch (Unix time)."""
        return self._get(session_class).epoch

    def current_key_id(self, session_class: str) -> str:
        """Return the key id that signs new tokens of a class."""
        return self._get(session_class).current

    def _get(self, session_class: str) -> ClassKeys:
        ck = self._classes.get(session_class)
        if ck is None:
            raise ConfigurationError(
                f"unknown session class {session_class!r}; configured: {sorted(self._classes)}"
            )
        return ck

    @staticmethod
    def _next_id(ck: ClassKeys) -> str:
        used = set(ck.secrets) | ck.retired
        n = len(used) + 1
        while f"k{n}" in used:
            n += 1
        return f"k{n}"

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{ck.name}: current={ck.current!r} keys={sorted(ck.secrets)} "
            f"retired={sorted(ck.retired)}"
            for ck in self._classes.values()
        )
        return f"KeyRing({parts})"

    def __reduce__(self) -> str:
        raise TypeError("a KeyRing cannot be pickled; use save() / from_file()")
