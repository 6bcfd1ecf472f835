"""Reporting to :mod:`sight_core.observability` without ever failing the caller.

The sink is imported on first use, not at import time; if it is missing or raises, the event is
dropped. Costs one dictionary lookup when the sink is absent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["increment", "register_collector", "set_gauge"]

_log = logging.getLogger("sight_core.resilience")
_sink: dict[str, Any] = {}
_missing_until: dict[str, float] = {}
_RECHECK = 5.0  # seconds between attempts to find a sink that was missing


def _resolve(name: str) -> Callable[..., Any] | None:
    if name in _sink:
        fn: Callable[..., Any] | None = _sink[name]
        return fn
    now = time.monotonic()
    if _missing_until.get(name, 0.0) > now:
        return None
    try:
        from sight_core import observability

        fn = getattr(observability, name, None)
    except Exception:  # the sink is optional: no package, or broken at import
        fn = None
    if fn is not None:
        _sink[name] = fn
    else:  # look again later: the sink may be installed or fixed meanwhile
        _missing_until[name] = now + _RECHECK
    return fn


def increment(metric: str, value: float = 1, /, **labels: str) -> None:
    """``observability.increment`` if available, else nothing."""
    fn = _sink.get("increment") or _resolve("increment")
    if fn is None:
        return
    try:
        fn(metric, value, **labels)
    except Exception:  # reporting must never break a call
        _log.debug("observability.increment failed", exc_info=True)


def set_gauge(metric: str, value: float, /, **labels: str) -> None:
    """``observability.set_gauge`` if available, else nothing."""
    fn = _sink.get("set_gauge") or _resolve("set_gauge")
    if fn is None:
        return
    try:
        fn(metric, value, **labels)
    except Exception:
        _log.debug("observability.set_gauge failed", exc_info=True)


def register_collector(fn: Callable[[], Any]) -> None:
    """``observability.register_collector(fn)`` if available (a no-op there when ``fn`` is
    registered already), else nothing."""
    register = _sink.get("register_collector") or _resolve("register_collector")
    if register is None:
        return
    try:
        register(fn)
    except Exception:
        _log.debug("observability.register_collector failed", exc_info=True)
