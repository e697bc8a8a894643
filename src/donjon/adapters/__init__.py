"""Framework adapters: ASGI and WSGI middleware, Flask and Django integration.

Each framework module imports its framework itself; importing
``donjon.adapters`` needs none of them.
"""

from __future__ import annotations

from ._common import Proxy as Proxy
from ._cookies import CookieLookup as CookieLookup
from ._cookies import find_cookie as find_cookie

__all__ = ["CookieLookup", "Proxy", "find_cookie"]
