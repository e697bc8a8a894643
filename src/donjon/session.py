"""The :class:`Session`: a mapping that knows what a request changed."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, MutableMapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, final

from .core import Verdict

if TYPE_CHECKING:
    from .typing import JSONValue

__all__ = ["Session"]


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)
# One encoder, built once: json.dumps with options builds a new one per call.
# ASCII out: a lone surrogate (from a client's JSON) is escaped, not a crash
# in a store's UTF-8 encoder, and every store keeps the text byte for byte.
_dumps = _ENCODER.encode
_CONTAINERS = (dict, list, tuple)
_ALL_STR = object()


def _non_str_key(value: object) -> object:
    """The first dict key in ``value`` that is not a ``str``, else ``_ALL_STR``."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    return k
                if isinstance(item, _CONTAINERS):
                    stack.append(item)
        elif isinstance(v, (list, tuple)):
            stack.extend(item for item in v if isinstance(item, _CONTAINERS))
    return _ALL_STR


_SCALARS: frozenset[type] = frozenset({str, int, bool, type(None)})
"""Exact types whose JSON text holds no dict (floats are left out: NaN)."""


def _check_key(key: str) -> None:
    """Refuse a key no store can keep: NUL, or a lone surrogate."""
    if "\x00" in key:
        raise ValueError("session keys must not contain NUL")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("session keys must be valid Unicode (no lone surrogates)") from None


def _text(key: str, value: object) -> str:
    """The JSON text of a session value, or a ``TypeError`` naming the key.

    Refused: what JSON cannot hold (NaN, sets, objects, nesting beyond the
    recursion limit) and dict keys that are not strings (JSON would turn
    ``{1: "a", "1": "b"}`` into one key, silently).
    """
    try:
        text = _dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"session value for {key!r} is not JSON-serializable: {exc}") from None
    if "{" in text:
        bad = _non_str_key(value)
        if bad is not _ALL_STR:
            raise TypeError(
                f"session value for {key!r} holds a dict key that is not a str ({bad!r}):"
                " JSON would turn it into a string"
            )
    return text


_NO_RAW: Mapping[str, str] = MappingProxyType({})
_NO_KEYS: frozenset[str] = frozenset()


@final
class Session(MutableMapping[str, "JSONValue"]):
    """One client's session data, plus what Donjon knows about its cookie.

    Keys are strings, values anything JSON can hold. The session tracks which
    keys were set or deleted so that the store writes only those fields: two
    concurrent requests that change different keys both persist. A list or
    dict read from the session and then changed in place is noticed too (it
    is compared with its stored form at commit).

    ``verdict`` says what the presented cookie was found to be; anything but
    ``VALID`` means this is a fresh, empty session (a bad cookie is never
    adopted).

    Not guaranteed: two requests that change the *same* key concurrently
    keep the last writer's value.
    """

    __slots__ = (
        "_data",
        "_deleted",
        "_destroyed",
        "_dumped",
        "_raw",
        "_read_mutable",
        "_regenerated",
        "_reissue",
        "_user_changed",
        "access_expires_at",
        "bind_to",
        "created_at",
        "device",
        "expires_at",
        "id",
        "key_id",
        "last_seen",
        "previous_id",
        "reason",
        "retry_after",
        "session_class",
        "token",
        "user_id",
        "verdict",
    )

    def __init__(
        self,
        *,
        data: Mapping[str, Any] | None = None,
        raw: Mapping[str, str] | None = None,
        session_id: str | None = None,
        session_class: str = "user",
        user_id: str | None = None,
        verdict: Verdict = Verdict.ABSENT,
        reason: str = "",
        key_id: str | None = None,
        token: str | None = None,
        created_at: float | None = None,
        last_seen: float | None = None,
        expires_at: float | None = None,
    ) -> None:
        # The bookkeeping containers are made on first need (most requests
        # change nothing): _dumped maps each key set in this request to its
        # JSON text (None: a list or dict, dumped at commit).
        self._data: dict[str, Any] = dict(data) if data else {}
        self._raw: Mapping[str, str] = raw if raw else _NO_RAW  # read only: never changed in place
        self._dumped: dict[str, str | None] | None = None
        self._deleted: set[str] | None = None
        self._read_mutable: set[str] | None = None
        self._destroyed = False
        self._regenerated = False
        self._user_changed = False
        self._reissue = False
        self.id: str | None = session_id
        """The session id; ``None`` until a new session is first saved."""
        self.previous_id: str | None = None
        self.session_class = session_class
        """The session class (e.g. ``"user"``, ``"admin"``): which keys sign it."""
        self.user_id = user_id
        """The logged-in user, if any; indexes the session for "log out everywhere"."""
        self.verdict = verdict
        """The verdict of the cookie that came with the request."""
        self.reason = reason
        """The internal reason behind a non-valid verdict (for logs only)."""
        self.key_id = key_id
        self.token = token
        """The token presented (for a valid session) or issued at commit."""
        self.created_at = created_at
        self.last_seen = last_seen
        self.expires_at = expires_at
        self.retry_after: float | None = None
        """For LOCKED_OUT: seconds until the client may try again."""
        self.access_expires_at: float | None = None
        """Two-credential mode: when the access credential expires."""
        self.device: str | None = None
        """The request's ``User-Agent``, as the adapter passed it to ``load``:
        recorded (trimmed) with a new record, for ``sessions_of`` listings."""
        self.bind_to: str | bytes | None = None
        """Context to bind a newly issued token to, set by the app (e.g. at login,
        the value of a second cookie it sets in the same response); overrides
        the middleware's binding function for this commit."""

    # -- mapping --------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        if isinstance(value, (list, dict)):
            read = self._read_mutable
            if read is None:
                read = self._read_mutable = set()
            if key not in read:
                read.add(key)
                if key not in self._raw and (self._dumped is None or key not in self._dumped):
                    # No stored text (a sealed cookie): snapshot it before the caller
                    # changes it (in a copy: the stored fields may be shared).
                    self._raw = {**self._raw, key: _dumps(value)}
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"session keys must be str, not {type(key).__name__}")
        if key.startswith("__donjon"):
            raise KeyError(f"session keys starting with '__donjon' are reserved: {key!r}")
        if not key.isprintable():  # (NUL and lone surrogates are not printable)
            _check_key(key)
        if value.__class__ in _SCALARS:  # the common case: no dict inside
            try:
                text = _dumps(value)
            except ValueError as exc:  # an int past the digit limit
                raise TypeError(
                    f"session value for {key!r} is not JSON-serializable: {exc}"
                ) from None
        else:
            text = _text(key, value)
        self._data[key] = value
        dumped = self._dumped
        if dumped is None:
            dumped = self._dumped = {}
        # Kept for the save, unless the value is a list or dict that may still change.
        dumped[key] = None if isinstance(value, (list, dict)) else text
        if self._deleted:
            self._deleted.discard(key)

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        if self._dumped:
            self._dumped.pop(key, None)
        if self._read_mutable:
            self._read_mutable.discard(key)
        if self._deleted is None:
            self._deleted = set()
        self._deleted.add(key)

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default`` when it is not set."""
        if key in self._data:
            return self[key]
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return (
            f"Session(class={self.session_class!r}, verdict={self.verdict.value!r}, "
            f"keys={sorted(self._data)!r})"
        )

    # -- life cycle -----------------------------------------------------
    @property
    def is_new(self) -> bool:
        """Whether no record exists for this session yet."""
        return self.id is None or self._regenerated

    @property
    def modified(self) -> bool:
        """Whether this request changed anything that must be saved."""
        return bool(
            self._dumped
            or self._deleted
            or self._regenerated
            or self._user_changed
            or (self._read_mutable and self.dirty_keys())
        )

    @property
    def untouched(self) -> bool:
        """Whether this is a new session the request neither changed nor regenerated."""
        return self.id is None and not (
            self._regenerated
            or self._dumped
            or self._deleted
            or self._user_changed
            or (self._read_mutable and self.dirty_keys())
        )

    @property
    def life_changed(self) -> bool:
        """Whether this request logged in, regenerated or destroyed the session."""
        return self._destroyed or self._regenerated or self._user_changed

    @property
    def destroyed(self) -> bool:
        """Whether :meth:`destroy` was called."""
        return self._destroyed

    @property
    def regenerated(self) -> bool:
        """Whether :meth:`regenerate` was called."""
        return self._regenerated

    def regenerate(self) -> None:
        """Give the session a new id and token at commit, keeping its data.

        The old id dies at once (at commit its record is deleted; a marker
        says for a minute that it was superseded, so a request racing the
        change gets a fresh session without clearing the new cookie): call
        this on login and on any change of privilege, against session
        fixation.
        """
        if self.id is not None and not self._regenerated:
            self.previous_id = self.id
        self._regenerated = True

    def login(self, user_id: str, *, session_class: str | None = None) -> None:
        """Mark the session as authenticated as ``user_id`` and regenerate it.

        A login is a new authentication: the absolute timeout starts again.
        ``session_class`` switches the class (e.g. to ``"admin"``).
        """
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id must be a non-empty str")
        self.user_id = user_id
        self._user_changed = True
        if session_class is not None:
            self.session_class = session_class
        self.created_at = None
        self.regenerate()

    def logout(self) -> None:
        """End the session: same as :meth:`destroy`."""
        self.destroy()

    def destroy(self) -> None:
        """End the session: its record is deleted at commit and the cookie cleared.

        The data and the user are dropped at once. Keys set *after* this call
        in the same request (a flash message, a new login) start a brand-new
        session with a new id, saved at commit; nothing of the old one
        survives.
        """
        self._destroyed = True
        self._data.clear()
        self._raw = _NO_RAW
        self._dumped = self._deleted = self._read_mutable = None
        self.user_id = None
        self._user_changed = self._regenerated = self._reissue = False
        self.created_at = None
        self.bind_to = None

    def clear(self) -> None:
        """Remove every key **and log out**: the same as :meth:`destroy`.

        ``session.clear()`` is the logout idiom of Flask and Starlette apps;
        since the user of a Donjon session lives beside its keys, clearing
        only the keys would leave the user logged in.
        """
        self.destroy()

    def mark_changed(self, key: str) -> None:
        """Force ``key`` to be written at commit."""
        if key not in self._data:
            raise KeyError(key)
        if self._dumped is None:
            self._dumped = {}
        self._dumped.setdefault(key, None)

    def reissue(self) -> None:
        """Send a freshly signed token at commit (e.g. after a key rotation)."""
        self._reissue = True

    # -- for the engine -------------------------------------------------
    @property
    def wants_reissue(self) -> bool:
        """Whether the engine should sign a new token for the same id."""
        return self._reissue

    @property
    def user_changed(self) -> bool:
        """Whether the user id was set during this request."""
        return self._user_changed

    def dirty_keys(self) -> set[str]:
        """Keys read as list/dict whose value no longer matches the stored JSON."""
        dirty = set()
        read = self._read_mutable
        if read:
            dumped = self._dumped or {}
            data, raw = self._data, self._raw
            for key in read:
                if key not in dumped and key in data and _text(key, data[key]) != raw.get(key):
                    dirty.add(key)
        return dirty

    def changes(self) -> tuple[dict[str, str], frozenset[str]]:
        """Return (changed key -> JSON text, deleted keys) for a field-level save."""
        data = self._data
        out = {
            k: text if text is not None else _text(k, data[k])
            for k, text in (self._dumped or {}).items()
            if k in data
        }
        if self._read_mutable:
            for k in self.dirty_keys():
                out[k] = _text(k, data[k])
        return out, frozenset(self._deleted) if self._deleted else _NO_KEYS

    def all_fields(self) -> dict[str, str]:
        """Return every key as JSON text (for a full write of a new record)."""
        return {k: _text(k, v) for k, v in self._data.items()}

    def data(self) -> dict[str, Any]:
        """Return a shallow copy of the session data."""
        return dict(self._data)
