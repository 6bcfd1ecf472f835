"""Shared by the resilience tests: an injectable clock and the SDK's 503."""

from __future__ import annotations

from google.genai.errors import ServerError


class Clock:
    """Monotonic seconds that move only when a test moves them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def unavailable() -> ServerError:
    """What google-genai raises for a 503 (transient)."""
    return ServerError(503, {"error": {"code": 503, "message": "overloaded"}})
