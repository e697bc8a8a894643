"""Session stores behind one contract.

:class:`MemoryStore` and :class:`SQLiteStore` need nothing else;
``donjon.stores.redis`` and ``donjon.stores.postgres`` need the ``redis`` and
``postgres`` extras.
"""

from __future__ import annotations

from ._base import AsyncStore as AsyncStore
from ._base import Record as Record
from ._base import SessionInfo as SessionInfo
from ._base import Store as Store
from ._base import SupportsPurge as SupportsPurge
from ._base import Write as Write
from ._base import as_async as as_async
from .memory import MemoryStore as MemoryStore
from .sqlite import SQLiteStore as SQLiteStore

__all__ = [
    "AsyncStore",
    "MemoryStore",
    "Record",
    "SQLiteStore",
    "SessionInfo",
    "Store",
    "SupportsPurge",
    "Write",
    "as_async",
]
