"""Seal and unseal @hapi/iron ``Fe26.2`` strings, as the Node package does.

You probably want Donjon's own token or sealed-cookie store; this module is
for sharing state with hapi services during a migration: cookies of yar and
of hapi's ``encoding: 'iron'``, and any other ``Iron.seal`` output made with
iron's default options (``Iron.defaults``).

A seal is eight fields joined by ``*``::

    Fe26.2*<password id>*<encryption salt>*<iv>*<ciphertext>*<expiration>*<hmac salt>*<hmac>

- ``<ciphertext>`` is AES-256-CBC (PKCS#7 padding) of the UTF-8 JSON text
  of the object, as ``JSON.stringify`` writes it, under a key derived from
  the password and ``<encryption salt>``; ``<iv>`` is 16 random bytes.
- ``<hmac>`` is HMAC-SHA256 of the first six fields joined by ``*``, under
  a key derived from the password and ``<hmac salt>``: encrypt-then-MAC.
- Keys are PBKDF2-HMAC-SHA1 of the password with **one** iteration and a
  salt of 64 hex digits (256 random bits), 32 bytes long. A ``bytes``
  password is used as the key itself, with empty salts.
- ``<expiration>`` is empty (no expiry) or Unix time in milliseconds.
- ``<password id>`` is empty or ``[A-Za-z0-9_]+``; it picks the password
  for :func:`unseal` when several are in use (rotation).
- Binary fields are base64url without padding.

Guarantees: :func:`seal` output is exactly what ``Iron.seal`` of @hapi/iron
7 writes for the same object, password, time, salts and IV, so each side
unseals the other's seals. :func:`unseal` never raises anything but
:class:`InvalidSeal` for what a client sends (any ``str`` or ``bytes``);
input longer than :data:`MAX_SEAL_LENGTH` is refused before any other work;
the MAC is compared in constant time and checked before decryption (so no
padding oracle) and before the expiration is believed; the payload is JSON
only and never unpickled.

Not guaranteed:

- **Password strength.** One PBKDF2 iteration does not slow a guesser
  down: one captured seal lets anyone try billions of passwords per second
  offline. iron's 32-character minimum is a length check, not entropy.
  Use random passwords, e.g. ``secrets.token_urlsafe(32)``, never words.
- Revocation and replay protection: a seal is good until its expiration
  (forever with ``ttl=0``, yar's setting), and the expiration is the
  sealer's clock plus a skew of 60 seconds by default.
- Hiding the payload length (CBC reveals it to 16 bytes).
- iron's non-default options (``aes-128-ctr``, more iterations, other salt
  sizes) and statehood's separate cookie ``sign`` option are not supported.
- Python types beyond JSON's. Integers beyond 2**53 survive in Python but
  not in JavaScript; a float with an integral value is written as an
  integer, as JavaScript writes it, so it comes back as an ``int``.

Differences from iron. The MAC is checked before the expiration (iron
checks the expiration first), so a forged seal is reported as forged even
when it is also expired. :func:`seal` refuses what iron would seal but
never unseal (NaN, ``__proto__`` keys, seals over :data:`MAX_SEAL_LENGTH`).
:func:`unseal` is stricter than iron only with authentic seals (made with
the password) that iron itself never writes:

- ``bytes``-password seals must carry the empty salts iron writes (iron
  ignores the unauthenticated HMAC salt);
- invalid UTF-8 in the plaintext is MALFORMED (Node reads it as U+FFFD);
- a base64url field one character past a multiple of four is MALFORMED
  (Node drops the extra character). Non-canonical base64 otherwise (stray
  low bits in the last character) is read as Node's ``Buffer`` reads it:
  the seal unseals, since the MAC covers the text as sent;
- JSON nested deeper than Python's recursion limit (about 1000 levels) and
  integers longer than Python's limit on integer text (4300 digits by
  default, :func:`sys.set_int_max_str_digits`) are MALFORMED; JavaScript
  reads the first and turns the second into a float or ``Infinity``.

See ``docs/threat-model.md`` (state kept on the client).

.. versionadded:: 0.1
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import math
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, final

from ..core import SystemClock, Verdict
from ..errors import ConfigurationError, InvalidToken, MissingDependency, WeakSecret

try:
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependency("cryptography", "crypto") from exc

__all__ = [
    "InvalidSeal",
    "MAC_PREFIX",
    "MAX_SEAL_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "SealPassword",
    "UnsealPassword",
    "YAR_MAX_COOKIE_SIZE",
    "YarCookie",
    "read_yar_cookie",
    "seal",
    "unseal",
    "write_yar_cookie",
]

MAC_PREFIX: Final = "Fe26.2"
"""The first field of every seal: iron's format tag, ``Fe26.`` + MAC format version 2."""
MAX_SEAL_LENGTH: Final = 64 * 1024
"""Longest seal :func:`unseal` reads (and :func:`seal` writes); a cookie holds 4 KiB."""
MIN_PASSWORD_LENGTH: Final = 32
"""iron's ``minPasswordlength``: counted in UTF-16 code units, as JavaScript does."""
YAR_MAX_COOKIE_SIZE: Final = 1024
"""yar's default ``maxCookieSize``: a longer seal makes yar keep the data server-side."""

SealPassword: TypeAlias = str | bytes | tuple[str, str | bytes] | Mapping[str, object]
"""A password for :func:`seal`: a secret, ``(id, secret)``, or iron's
``{"id": ..., "secret": ...}`` (or ``{"id": ..., "encryption": ..., "integrity": ...}``)."""
UnsealPassword: TypeAlias = str | bytes | tuple[str, str | bytes] | Mapping[str, object]
"""A password for :func:`unseal`: a secret (any password id is accepted, as iron
does), ``(id, secret)``, or iron's mapping of password id to secret, where a
seal without id looks up ``"default"``. A secret is ``str``, ``bytes`` or one of
iron's ``{"secret": ...}`` / ``{"encryption": ..., "integrity": ...}`` mappings."""

_SEP: Final = "*"
_FIELDS: Final = 8
_KEY_BYTES: Final = 32
_IV_BYTES: Final = 16
_SALT_BYTES: Final = 32
_MAC_B64_CHARS: Final = 43
_ID_RE: Final = re.compile(r"[A-Za-z0-9_]+")  # JavaScript's /^\w+$/ (ASCII \w)
_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*")
_SALT_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")
_DIGITS_RE: Final = re.compile(r"[0-9]+")
_SURROGATE_RE: Final = re.compile("[\ud800-\udfff]")
# @hapi/bourne's test for a "__proto__" key, spelt out or with \u escapes.
_PROTO_RE: Final = re.compile(
    r'"(?:_|\\u005[Ff])(?:_|\\u005[Ff])(?:p|\\u0070)(?:r|\\u0072)(?:o|\\u006[Ff])'
    r'(?:t|\\u0074)(?:o|\\u006[Ff])(?:_|\\u005[Ff])(?:_|\\u005[Ff])"\s*:'
)
_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_STANDARD: Final = bytes.maketrans(b"-_", b"+/")
_JS_SAFE_INT: Final = 2**53
_ARRAY_INDEX_LIMIT: Final = 2**32 - 1
_CLOCK: Final = SystemClock()
_quote: Final = json.encoder.encode_basestring  # JSON.stringify's escapes but lone surrogates

# A normalized password: id, then (is raw key, bytes) for encryption and integrity.
_Material: TypeAlias = tuple[bool, bytes]
_Normalized: TypeAlias = tuple[str, _Material, _Material]


@final
class InvalidSeal(InvalidToken):
    """Raised by :func:`unseal` when a seal is not valid.

    ``.verdict`` is MALFORMED (not shaped like a seal, or an authentic seal
    whose content cannot be read), FORGED (bad MAC, unknown password id) or
    EXPIRED. ``.reason`` is a short machine-readable word for logs; neither
    says anything about the seal's content. Never send either to a client.
    """

    def __init__(self, verdict: Verdict, reason: str) -> None:
        super().__init__(verdict, reason)
        self.args = (f"invalid seal: {reason}",)


def _malformed(reason: str) -> InvalidSeal:
    return InvalidSeal(Verdict.MALFORMED, reason)


def _forged(reason: str) -> InvalidSeal:
    return InvalidSeal(Verdict.FORGED, reason)


# -- passwords -----------------------------------------------------------------


def _material(value: object, *, purpose: str, where: str) -> _Material:
    if isinstance(value, str):
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigurationError(f"{where} contains a lone surrogate") from None
        # JavaScript counts UTF-16 code units; astral characters count twice.
        units = len(value) if value.isascii() else len(value.encode("utf-16-le")) // 2
        if units < MIN_PASSWORD_LENGTH:
            raise WeakSecret(
                f"{where} is {units} characters; iron needs >= {MIN_PASSWORD_LENGTH}: "
                "use a random one such as secrets.token_urlsafe(32)"
            )
        return False, raw
    if isinstance(value, (bytes, bytearray, memoryview)):
        key = bytes(value)
        if len(key) < _KEY_BYTES:
            raise WeakSecret(f"{where} is {len(key)} bytes; iron needs >= {_KEY_BYTES}")
        if purpose == "encryption" and len(key) != _KEY_BYTES:
            raise ConfigurationError(
                f"{where} is {len(key)} bytes; a bytes password is the AES-256 key "
                f"itself and must be exactly {_KEY_BYTES} bytes"
            )
        return True, key
    raise ConfigurationError(f"{where} must be str or bytes, not {type(value).__name__}")


def _normalize(value: object, *, password_id: str, where: str) -> _Normalized:
    """iron's ``normalizePassword``: a secret, or ``{secret}``/``{encryption, integrity}``."""
    if not isinstance(value, (str, bytes)) and isinstance(value, Mapping):
        if "secret" in value:
            value = value["secret"]
        elif "encryption" in value and "integrity" in value:
            return (
                password_id,
                _material(value["encryption"], purpose="encryption", where=f"{where} encryption"),
                _material(value["integrity"], purpose="integrity", where=f"{where} integrity"),
            )
        else:
            raise ConfigurationError(
                f"{where} must have a 'secret' or both 'encryption' and 'integrity'"
            )
    # One secret for both: the encryption check is the stricter one.
    material = _material(value, purpose="encryption", where=where)
    return password_id, material, material


def _seal_password(password: object) -> _Normalized:
    if isinstance(password, tuple):
        if len(password) != 2:
            raise ConfigurationError("a password tuple is (password id, secret)")
        pid, secret = password
    elif isinstance(password, Mapping):
        if "id" not in password:
            raise ConfigurationError(
                "seal takes a secret, (id, secret) or {'id': ..., 'secret': ...}; "
                "the mapping of id to secret is for unseal"
            )
        pid, secret = password["id"], password
    else:
        return _normalize(password, password_id="", where="password")
    if pid is None or pid == "":
        pid = ""
    elif not isinstance(pid, str) or not _ID_RE.fullmatch(pid):
        raise ConfigurationError("password id must match [A-Za-z0-9_]+ (iron's /^\\w+$/)")
    return _normalize(secret, password_id=pid, where=f"password {pid!r}")


def _unseal_passwords(password: object) -> _Normalized | dict[object, _Normalized]:
    """Check every password :func:`unseal` was given: one secret, or a table by id.

    The whole table is checked before the seal is read, whichever id the seal
    names: the id is the client's choice, so a bad entry must fail every call
    (a configuration error the developer sees at once), never only the calls
    whose seal happens to name it.
    """
    if isinstance(password, (str, bytes, bytearray, memoryview)):
        return _normalize(password, password_id="", where="password")
    if isinstance(password, tuple):
        if len(password) != 2 or not isinstance(password[0], str):
            raise ConfigurationError("a password tuple is (password id, secret)")
        table: Mapping[object, object] = {password[0]: password[1]}
    elif isinstance(password, Mapping):
        table = password
    else:
        raise ConfigurationError(
            f"password must be str, bytes, (id, secret) or a mapping, not {type(password).__name__}"
        )
    return {
        key: _normalize(secret, password_id="", where=f"password {key!r}")
        for key, secret in table.items()
    }


def _select_password(
    passwords: _Normalized | dict[object, _Normalized], password_id: str
) -> _Normalized:
    if not isinstance(passwords, dict):
        return passwords  # one secret: any password id is accepted, as iron does
    try:
        return passwords[password_id or "default"]
    except KeyError:
        raise _forged("unknown_password_id") from None


def _derive(material: _Material, salt: str) -> bytes:
    is_key, raw = material
    if is_key:
        return raw
    return hashlib.pbkdf2_hmac("sha1", raw, salt.encode("ascii"), 1, _KEY_BYTES)


# -- JSON as JSON.stringify writes it ------------------------------------------


def _js_number(x: float) -> str:
    """Return ``String(x)`` as JavaScript (ECMAScript Number::toString) writes it."""
    if not math.isfinite(x):
        raise ValueError(f"{x!r} is not JSON: JSON.stringify would write null")
    if x == 0:
        return "0"  # and -0 too
    if x.is_integer():
        if -_JS_SAFE_INT < x < _JS_SAFE_INT:
            return str(int(x))
    elif 1e-4 <= abs(x) < 1e16:
        return repr(x)  # plain decimals with a fraction: the same in both languages
    sign = "-" if x < 0 else ""
    # repr() gives the shortest digits that round-trip, as JavaScript requires.
    mantissa, _, exponent = repr(abs(x)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exponent) if exponent else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    e = point - 1
    tail = f"e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + digits[0] + ("." + digits[1:] if k > 1 else "") + tail


def _is_array_index(key: str) -> bool:
    return (
        key.isascii()
        and key.isdigit()
        and (key == "0" or key[0] != "0")
        and int(key) < _ARRAY_INDEX_LIMIT
    )


def _object_items(value: Mapping[Any, Any]) -> Iterable[tuple[str, Any]]:
    for k in value:
        if type(k) is not str or k[:1].isdigit() or k == "__proto__":
            break
    else:
        return value.items()  # the common case: nothing to convert, check or reorder
    items: list[tuple[str, Any]] = []
    converted = False
    for k, v in value.items():
        if not isinstance(k, str):
            if isinstance(k, int) and not isinstance(k, bool):
                k = int.__repr__(k)
                converted = True
            else:
                raise TypeError(f"keys must be str or int, not {type(k).__name__}")
        if k == "__proto__":
            raise ValueError("iron's unseal (@hapi/bourne) rejects a '__proto__' key")
        items.append((k, v))
    if converted and len({k for k, _ in items}) != len(items):
        raise ValueError("keys collide once written as JSON strings (e.g. 1 and '1')")
    # JavaScript objects list array-index keys first, in numeric order.
    index = sorted((kv for kv in items if _is_array_index(kv[0])), key=lambda kv: int(kv[0]))
    if index:
        items = index + [kv for kv in items if not _is_array_index(kv[0])]
    return items


def _emit(value: object, out: list[str], active: set[int]) -> None:
    # Exact types first: they are nearly all a session holds.
    t = type(value)
    if t is str:
        out.append(_quote(value))  # type: ignore[arg-type]
    elif t is int:
        out.append(int.__repr__(value))
    elif t is float:
        out.append(_js_number(value))  # type: ignore[arg-type]
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, (Mapping, list, tuple)):
        marker = id(value)
        if marker in active:
            raise ValueError("circular reference")
        active.add(marker)
        if isinstance(value, Mapping):
            sep = "{"
            for k, v in _object_items(value):
                tv = type(v)
                if tv is str:
                    out.append(f"{sep}{_quote(k)}:{_quote(v)}")
                elif tv is int:
                    out.append(f"{sep}{_quote(k)}:{int.__repr__(v)}")
                else:
                    out.append(f"{sep}{_quote(k)}:")
                    _emit(v, out, active)
                sep = ","
            out.append("{}" if sep == "{" else "}")
        else:
            sep = "["
            for v in value:
                out.append(sep)
                _emit(v, out, active)
                sep = ","
            out.append("[]" if sep == "[" else "]")
        active.discard(marker)
    elif isinstance(value, str):
        out.append(_quote(value))
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(_js_number(value))
    else:
        raise TypeError(f"object of type {type(value).__name__} is not JSON serializable")


def _stringify(value: object) -> bytes:
    """Return the UTF-8 of ``JSON.stringify(value)`` for the JavaScript twin of ``value``."""
    out: list[str] = []
    _emit(value, out, set())
    text = "".join(out)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # JSON.stringify escapes lone surrogates (ES2019), in lowercase hex.
        return _SURROGATE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8")


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# Made once: json.loads(parse_constant=...) would build a decoder per call.
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _has_proto_key(value: object) -> bool:
    todo = [value]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if "__proto__" in node:
                return True
            todo.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            todo.extend(v for v in node if isinstance(v, (dict, list)))
    return False


def _parse(plaintext: bytes) -> object:
    """``Bourne.parse`` of iron: JSON.parse, refusing ``__proto__`` keys."""
    try:
        text = plaintext.decode("utf-8")
        value = _DECODER.decode(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError too
        raise _malformed("json") from None
    if _PROTO_RE.search(text) and _has_proto_key(value):
        raise _malformed("proto_key")
    return value


# -- encodings and primitives ----------------------------------------------------


def _b64(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    """Decode base64url without padding; ``None`` when it is not."""
    if len(text) % 4 == 1 or not _B64URL_RE.fullmatch(text):
        return None
    try:
        return binascii.a2b_base64(
            (text + "=" * (-len(text) % 4)).encode("ascii").translate(_STANDARD)
        )
    except binascii.Error:  # pragma: no cover - the pattern above rules it out
        return None


def _mac(key: bytes, base: str) -> str:
    return _b64(hmac.digest(key, base.encode("ascii"), "sha256"))


def _ms(seconds: float, *, name: str) -> int:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        raise ConfigurationError(f"{name} must be a finite number of seconds")
    return round(seconds * 1000)


# -- the API ---------------------------------------------------------------------


def seal(
    obj: object,
    password: SealPassword,
    *,
    ttl: float = 0,
    now: float | None = None,
    localtime_offset: float = 0,
    encryption_salt: str | None = None,
    integrity_salt: str | None = None,
    iv: bytes | None = None,
) -> str:
    """Return ``obj`` sealed as ``Iron.seal(obj, password, Iron.defaults)`` would.

    Args:
        obj: A JSON value: ``dict`` (or any mapping; keys ``str`` or ``int``),
            ``list``, ``tuple``, ``str``, ``int``, ``float``, ``bool`` or ``None``.
            It is written as ``JSON.stringify`` writes its JavaScript twin
            (array-index keys first, numbers in JavaScript's form).
        password: The secret (at least 32 characters, or a 32-byte key), or
            ``(id, secret)`` / ``{"id": ..., "secret": ...}`` to tag the seal
            with a password id for rotation.
        ttl: Lifetime in **seconds** (iron's ``ttl`` option is milliseconds);
            0 means no expiry. The expiration is inside the MAC.
        now: Unix time in seconds; the system clock by default.
        localtime_offset: Seconds added to ``now`` (iron's
            ``localtimeOffsetMsec``, in seconds).
        encryption_salt: Fixed encryption salt, for known-answer tests only.
        integrity_salt: Fixed HMAC salt, for known-answer tests only.
        iv: Fixed 16-byte IV, for known-answer tests only. Reusing salts and
            IVs across seals breaks confidentiality: never pass these three
            in production.

    Raises:
        WeakSecret: A password shorter than 32 characters (or 32 bytes).
        ConfigurationError: A badly shaped password, password id or time.
        TypeError: ``obj`` holds something JSON cannot carry.
        ValueError: ``obj`` holds NaN or infinity, a circular reference or a
            ``__proto__`` key, or its seal would exceed :data:`MAX_SEAL_LENGTH`.
    """
    now_ms = _ms(_CLOCK.time() if now is None else now, name="now") + _ms(
        localtime_offset, name="localtime_offset"
    )
    ttl_ms = _ms(ttl, name="ttl")
    if ttl < 0:
        raise ConfigurationError("ttl must be >= 0 seconds (0: no expiry)")
    if ttl > 0:
        ttl_ms = max(1, ttl_ms)  # a tiny ttl must not turn into "no expiry"
    data = _stringify(obj)
    pid, enc, integ = _seal_password(password)

    if enc[0]:
        if encryption_salt is not None:
            raise ConfigurationError("a bytes password is the key itself: it takes no salt")
        enc_salt = ""
    elif encryption_salt is None:
        enc_salt = secrets.token_hex(_SALT_BYTES)
    elif not isinstance(encryption_salt, str) or not _SALT_RE.fullmatch(encryption_salt):
        raise ConfigurationError("encryption_salt must match [A-Za-z0-9_.-]+")
    else:
        enc_salt = encryption_salt
    if iv is None:
        iv = secrets.token_bytes(_IV_BYTES)
    elif not isinstance(iv, bytes) or len(iv) != _IV_BYTES:
        raise ConfigurationError(f"iv must be {_IV_BYTES} bytes")

    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(_derive(enc, enc_salt)), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(data) + padder.finalize()) + encryptor.finalize()

    expiration = ""
    if ttl_ms:
        if now_ms + ttl_ms < 0:
            raise ConfigurationError("now + ttl is before 1970")
        expiration = str(now_ms + ttl_ms)
    base = f"{MAC_PREFIX}*{pid}*{enc_salt}*{_b64(iv)}*{_b64(ciphertext)}*{expiration}"

    if integ[0]:
        if integrity_salt is not None:
            raise ConfigurationError("a bytes password is the key itself: it takes no salt")
        mac_salt = ""
    elif integrity_salt is None:
        mac_salt = secrets.token_hex(_SALT_BYTES)
    elif not isinstance(integrity_salt, str) or not _SALT_RE.fullmatch(integrity_salt):
        raise ConfigurationError("integrity_salt must match [A-Za-z0-9_.-]+")
    else:
        mac_salt = integrity_salt
    sealed = f"{base}*{mac_salt}*{_mac(_derive(integ, mac_salt), base)}"
    if len(sealed) > MAX_SEAL_LENGTH:
        raise ValueError(
            f"the seal is {len(sealed)} characters; unseal reads at most {MAX_SEAL_LENGTH}"
        )
    return sealed


def unseal(
    sealed: str | bytes,
    password: UnsealPassword,
    *,
    now: float | None = None,
    timestamp_skew: float = 60,
    localtime_offset: float = 0,
) -> object:
    """Return the object inside a seal, checked as ``Iron.unseal(..., Iron.defaults)`` does.

    The checks run cheapest first: length, shape, password id, MAC (constant
    time), expiration, then decryption and JSON. A seal is accepted exactly
    when iron would accept it, except for the authentic seals listed in the
    module notes (deep nesting, over-long integers, invalid UTF-8, some
    base64 and salts no iron writes): those are MALFORMED here.

    Args:
        sealed: What the client sent: ``str`` or ``bytes``, any content.
        password: A secret (accepting any password id, as iron does), or a
            mapping of password id to secret (a seal without id uses
            ``"default"``), or ``(id, secret)``.
        now: Unix time in seconds; the system clock by default.
        timestamp_skew: Seconds a seal stays good past its expiration (iron's
            ``timestampSkewSec``) for clocks that differ between servers.
        localtime_offset: Seconds added to ``now`` (iron's
            ``localtimeOffsetMsec``, in seconds).

    Returns:
        The unsealed JSON value (``dict``, ``list``, ``str``, ``int``,
        ``float``, ``bool`` or ``None``).

    Raises:
        InvalidSeal: The seal is malformed, forged (bad MAC, unknown password
            id) or expired; see ``.verdict`` and ``.reason``. Nothing else
            is raised because of what the seal holds.
        WeakSecret: A password (any entry of a table, whatever id the seal
            names) is shorter than 32 characters.
        ConfigurationError: The password argument, or any entry of it, is
            badly shaped; or a bad ``now``, skew or offset.
    """
    now_ms = _ms(_CLOCK.time() if now is None else now, name="now") + _ms(
        localtime_offset, name="localtime_offset"
    )
    skew_ms = _ms(timestamp_skew, name="timestamp_skew")
    passwords = _unseal_passwords(password)
    # 1. shape, bounded before any other work.
    if isinstance(sealed, str):
        if len(sealed) > MAX_SEAL_LENGTH:
            raise _malformed("too_long")
        text = sealed
    elif isinstance(sealed, (bytes, bytearray)):
        if len(sealed) > MAX_SEAL_LENGTH:
            raise _malformed("too_long")
        if not sealed.isascii():
            raise _malformed("not_ascii")
        text = sealed.decode("ascii")
    else:
        raise _malformed("not_text")
    if not text.isascii():
        raise _malformed("not_ascii")
    parts = text.split(_SEP)
    if len(parts) != _FIELDS:
        raise _malformed("field_count")
    prefix, pid, enc_salt, iv_b64, ct_b64, expiration, mac_salt, mac = parts
    if prefix != MAC_PREFIX:
        raise _malformed("prefix")
    if expiration and not _DIGITS_RE.fullmatch(expiration):
        raise _malformed("expiration")
    # 2. password id.
    _, enc, integ = _select_password(passwords, pid)
    # 3. MAC. iron derives a random key for an empty salt, so nothing matches it;
    # for a raw key iron ignores the salt, and we accept only the empty one it writes.
    if integ[0] != (mac_salt == "") or len(mac) != _MAC_B64_CHARS:
        raise _forged("bad_hmac")
    base = text[: len(text) - len(mac_salt) - len(mac) - 2]
    if not hmac.compare_digest(_mac(_derive(integ, mac_salt), base), mac):
        raise _forged("bad_hmac")
    # Everything below was written by a holder of the password.
    # 4. time. JavaScript's parseInt of a huge number is huge (or Infinity): not expired.
    if expiration:
        digits = expiration.lstrip("0") or "0"
        if len(digits) <= 30 and int(digits) <= now_ms - skew_ms:
            raise InvalidSeal(Verdict.EXPIRED, "expired")
    # 5. decryption and JSON.
    iv = _unb64(iv_b64)
    ciphertext = _unb64(ct_b64)
    if iv is None or len(iv) != _IV_BYTES or ciphertext is None or enc[0] != (enc_salt == ""):
        raise _malformed("encoding")
    try:
        decryptor = Cipher(algorithms.AES(_derive(enc, enc_salt)), modes.CBC(iv)).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        plaintext = unpadder.update(padded) + unpadder.finalize()
    except ValueError:  # not whole blocks, or bad padding
        raise _malformed("decrypt") from None
    return _parse(plaintext)


# -- yar ----------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class YarCookie:
    """The content of a yar session cookie: ``{"id": ..., "_store": {...}}``.

    yar (the hapi session plugin) seals this with ``Iron.defaults`` (no iron
    expiry; the cookie's own max-age bounds its life). When the sealed
    content is longer than ``maxCookieSize`` (:data:`YAR_MAX_COOKIE_SIZE`
    by default), yar writes ``{"id": ...}`` only and keeps the store in its
    server-side cache under that id: then :attr:`store` is ``None``.
    """

    id: str
    """yar's session id (a UUID v4 string by default)."""
    store: dict[str, Any] | None = None
    """The session data, or ``None`` when yar keeps it server-side. yar's lazy
    mode keeps its key list under ``"_lazyKeys"`` and flash messages under
    ``"_flash"``; both are returned as they are."""


def read_yar_cookie(
    value: str | bytes,
    password: UnsealPassword,
    *,
    now: float | None = None,
    timestamp_skew: float = 60,
    localtime_offset: float = 0,
) -> YarCookie:
    """Unseal a yar session cookie's value.

    Args:
        value: The cookie value as the client sent it.
        password: yar's ``cookieOptions.password``, as for :func:`unseal`.
        now: Unix time in seconds; the system clock by default.
        timestamp_skew: As for :func:`unseal`.
        localtime_offset: As for :func:`unseal`.

    Raises:
        InvalidSeal: As :func:`unseal`; also MALFORMED with reason
            ``"yar_content"`` when an authentic seal is not yar's shape.
    """
    content = unseal(
        value,
        password,
        now=now,
        timestamp_skew=timestamp_skew,
        localtime_offset=localtime_offset,
    )
    if not isinstance(content, dict):
        raise _malformed("yar_content")
    sid = content.get("id")
    store = content.get("_store")
    if not isinstance(sid, str) or not sid or not (store is None or isinstance(store, dict)):
        raise _malformed("yar_content")
    return YarCookie(id=sid, store=store)


def write_yar_cookie(
    cookie: YarCookie,
    password: SealPassword,
    *,
    ttl: float = 0,
    now: float | None = None,
) -> str:
    """Return the sealed value of a yar session cookie, as yar would write it.

    Compare the result's length with your yar's ``maxCookieSize``
    (:data:`YAR_MAX_COOKIE_SIZE` by default): yar itself falls back to its
    server-side cache, ``YarCookie(id, None)``, when the seal is longer.

    Args:
        cookie: The session id and data (``store=None``: the data is in yar's
            server-side cache).
        password: yar's ``cookieOptions.password``, as for :func:`seal`.
        ttl: iron expiry in seconds; yar writes 0 (none) and relies on the
            cookie's max-age.
        now: Unix time in seconds; the system clock by default.

    Raises:
        ConfigurationError: An empty session id, or as :func:`seal`.
    """
    if not isinstance(cookie.id, str) or not cookie.id:
        raise ConfigurationError("a yar session id is a non-empty str")
    content: dict[str, object] = {"id": cookie.id}
    if cookie.store is not None:
        content["_store"] = cookie.store
    return seal(content, password, ttl=ttl, now=now)
