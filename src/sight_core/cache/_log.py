"""Error logging at most once per interval per (namespace, operation, error type).

Messages carry the namespace, the operation and the exception *type* only: never keys,
arguments or payloads (they hold personal data and prompts). A CacheSerializationError also
carries its message, which sight-core writes with type names only ("a Dog comes back as an
Animal"): each distinct one is logged once per interval.
"""

from __future__ import annotations

import logging
import time

from sight_core.errors import CacheSerializationError

__all__ = ["RateLimitedLog"]

logger = logging.getLogger("sight_core.cache")


class RateLimitedLog:
    """Logs a warning for a given signature at most once every ``interval`` seconds."""

    __slots__ = ("_last", "interval", "suppressed")

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._last: dict[tuple[str, str, str], float] = {}
        self.suppressed = 0

    def error(self, namespace: str, operation: str, exc: BaseException) -> bool:
        """Log ``exc`` for ``operation`` unless logged recently; returns whether it logged."""
        detail = type(exc).__name__
        if isinstance(exc, CacheSerializationError):
            detail = f"{detail}: {exc}"
        sig = (namespace, operation, detail)
        now = time.monotonic()
        last = self._last.get(sig)
        if last is not None and now - last < self.interval:
            self.suppressed += 1
            return False
        self._last[sig] = now
        logger.warning(
            "cache %s: %s failed (%s); serving without the cache",
            namespace,
            operation,
            sig[2],
        )
        return True
