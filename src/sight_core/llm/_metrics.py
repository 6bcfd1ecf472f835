"""Reporting to :mod:`sight_core.observability` without ever failing a model call.

The sink is looked up on first use; if it is missing or raises, the sample is dropped.
Metrics: ``sight_llm_call_seconds`` (histogram of answered calls, by serving model),
``sight_llm_calls_total`` (counter by model and ``outcome``: ``cache_hit``, ``error`` or
``incomplete``; answered calls are the histogram's count) and
``sight_llm_fallbacks_total`` (by model, fallback and reason).
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["call_seconds", "increment", "observe"]

_log = logging.getLogger("sight_core.llm")
_hooks: dict[str, Any] = {}
_bound: dict[str, tuple[Any, int, Any]] = {}


def _hook(name: str) -> Any:
    fn = _hooks.get(name, False)
    if fn is False:
        try:
            from sight_core import observability

            fn = getattr(observability, name, None)
        except Exception:  # optional sink
            fn = None
        _hooks[name] = fn
    return fn


def increment(metric: str, value: float = 1, /, **labels: str) -> None:
    fn = _hook("increment")
    if fn is not None:
        try:
            fn(metric, value, **labels)
        except Exception:
            _log.debug("observability.increment failed", exc_info=True)


def observe(metric: str, seconds: float, /, **labels: str) -> None:
    fn = _hook("observe")
    if fn is not None:
        try:
            fn(metric, seconds, **labels)
        except Exception:
            _log.debug("observability.observe failed", exc_info=True)


def call_seconds(model: str, seconds: float) -> None:
    """``sight_llm_call_seconds{model=...}`` through a kept histogram (the hot path)."""
    try:
        entry = _bound.get(model)
        if entry is None or entry[0].generation != entry[1]:
            get_registry = _hook("get_registry")
            if get_registry is None:
                return
            registry = get_registry()
            hist = registry.histogram("sight_llm_call_seconds", model=model)
            entry = _bound[model] = (registry, registry.generation, hist)
        entry[2].record(seconds)
    except Exception:
        _log.debug("observability histogram failed", exc_info=True)
