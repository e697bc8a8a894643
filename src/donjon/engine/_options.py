from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..config import CookiePolicy, Timeouts, TwoCredentials
from ..core import KeyRing, SystemClock
from ..events import EventHook, Events
from ..guard import Guard
from ..stores.cookie import CookieStore
from ._logic import EngineCore

DEFAULT_GUARD: Any = object()
"""Sentinel: the engine builds its own :class:`~donjon.guard.Guard` (on by default)."""

if TYPE_CHECKING:
    from ..typing import Clock


def build_core(
    *,
    keyring: KeyRing,
    timeouts: Timeouts | None,
    cookie: CookiePolicy | None,
    clock: Clock | None,
    genid: Callable[[], str] | None,
    skew: float,
    rolling: bool,
    default_class: str,
    epoch_refresh: float,
    events: Events | Iterable[EventHook] | None,
    guard: Guard | None,
    store: object = None,
    two: TwoCredentials | None = None,
    max_sessions_per_user: int | None = None,
    record_devices: bool = True,
) -> EngineCore:
    """Check the options shared by both engine faces and build their logic."""
    return EngineCore(
        keyring=keyring,
        timeouts=timeouts or Timeouts(),
        cookie=cookie or CookiePolicy(),
        clock=clock or SystemClock(),
        genid=genid,
        skew=skew,
        rolling=rolling,
        default_class=default_class,
        epoch_refresh=epoch_refresh,
        events=events if isinstance(events, Events) else Events(events or ()),
        guard=Guard() if guard is DEFAULT_GUARD else guard,
        sealed=isinstance(store, CookieStore),
        two=two,
        max_sessions_per_user=max_sessions_per_user,
        record_devices=record_devices,
    )
