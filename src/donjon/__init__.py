"""Donjon: layered-security session management for Python web applications.

Every presented session cookie passes cheap-to-expensive checks and ends in
exactly one :class:`Verdict`. See ``docs/threat-model.md``.
"""

from __future__ import annotations

from .core import KeyRing as KeyRing
from .core import Secret as Secret
from .core import SystemClock as SystemClock
from .core import TokenCodec as TokenCodec
from .core import Verdict as Verdict
from .core import VerifyResult as VerifyResult
from .errors import ConfigurationError as ConfigurationError
from .errors import DonjonError as DonjonError
from .errors import InvalidToken as InvalidToken
from .errors import MissingDependency as MissingDependency
from .errors import SessionInterrupted as SessionInterrupted
from .errors import StoreError as StoreError
from .errors import StoreUnavailable as StoreUnavailable
from .errors import WeakSecret as WeakSecret

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "DonjonError",
    "InvalidToken",
    "KeyRing",
    "MissingDependency",
    "Secret",
    "SessionInterrupted",
    "StoreError",
    "StoreUnavailable",
    "SystemClock",
    "TokenCodec",
    "Verdict",
    "VerifyResult",
    "WeakSecret",
    "__version__",
]
