"""The whole exception tree of Donjon.

::

    DonjonError(Exception)                           base class; never raised itself
    ├── ConfigurationError(DonjonError, ValueError)  bad policy or key material
    │   └── WeakSecret                               a secret shorter than 32 bytes
    ├── InvalidToken(DonjonError)                    core API only; has .verdict
    ├── StoreError(DonjonError)
    │   ├── StoreUnavailable                         backend down or slow: fail closed (503)
    │   └── SessionInterrupted                       record deleted mid-request
    └── MissingDependency(DonjonError, ImportError)  an optional package is not installed

A credential presented by a client never raises: it gets a
:class:`~donjon.Verdict`. Exceptions are for programmer errors, configuration
and infrastructure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core._verdict import Verdict

__all__ = [
    "ConfigurationError",
    "DonjonError",
    "InvalidToken",
    "MissingDependency",
    "SessionInterrupted",
    "StoreError",
    "StoreUnavailable",
    "WeakSecret",
]


class DonjonError(Exception):
    """Base class of every Donjon error; never raised itself."""


class ConfigurationError(DonjonError, ValueError):
    """Raised at construction time when a policy or key material is unusable."""


class WeakSecret(ConfigurationError):  # noqa: N818 - named for the condition, as in pyca
    """Raised when a secret is shorter than the 32-byte minimum."""


class InvalidToken(DonjonError):  # noqa: N818 - named for the condition, as in pyca
    """Raised by :meth:`VerifyResult.check` when a token is not valid.

    ``str()`` reveals nothing about the token; the verdict is on ``.verdict``
    and the internal reason on ``.reason`` (for logs, never for clients).
    """

    def __init__(self, verdict: Verdict, reason: str = "") -> None:
        super().__init__("invalid token")
        self.verdict = verdict
        self.reason = reason


class StoreError(DonjonError):
    """Base class of session-store failures."""


class StoreUnavailable(StoreError):  # noqa: N818 - named for the condition
    """The store is down, unreachable or too slow. Fail closed: answer 503."""


class SessionInterrupted(StoreError):  # noqa: N818 - named for the condition, as in Django
    """The session record was deleted while the request was using it."""


class MissingDependency(DonjonError, ImportError):  # noqa: N818 - named for the condition
    """An optional package is missing; the message names the pip extra."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package!r} is not installed: run `pip install 'donjon[{extra}]'`",
            name=package,
        )
        self.package = package
        self.extra = extra
