"""The testing switch: retries without waits (and optionally with fewer attempts).

Process-wide, like stamina's ``set_testing``. Waits are still computed, reported to retry
callbacks and counted against the deadline as virtual time, so tests observe the same
decisions as production, only without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from sight_core.errors import ConfigurationError

__all__ = ["TestingMode", "is_testing", "set_testing"]


@dataclass(frozen=True, slots=True)
class _Mode:
    testing: bool = False
    attempts: int | None = None


_mode = _Mode()


def current() -> tuple[bool, int | None]:
    """``(testing, attempts override)``; read once per retried call."""
    return _mode.testing, _mode.attempts


def is_testing() -> bool:
    """Whether :func:`set_testing` switched waits off."""
    return _mode.testing


class TestingMode:
    """Returned by :func:`set_testing`; as a context manager it restores the previous mode."""

    __slots__ = ("_previous",)
    __test__ = False  # not a pytest test class

    def __init__(self, previous: _Mode) -> None:
        self._previous = previous

    def __enter__(self) -> TestingMode:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _mode
        _mode = self._previous


def set_testing(testing: bool, *, attempts: int | None = None) -> TestingMode:
    """Switch waits off (``testing=True``) or back on, for every :class:`RetryPolicy`.

    Args:
        testing: ``True`` to skip every backoff and server-hinted sleep.
        attempts: if given, overrides every policy's ``max_attempts`` while testing
            (``attempts=1`` turns retries off). ``None`` keeps each policy's own.

    Returns:
        A context manager; leaving it restores the previous mode. Calling without ``with``
        simply sets the mode.

    Raises:
        ConfigurationError: ``attempts`` is below 1.
    """
    global _mode
    if attempts is not None and attempts < 1:
        raise ConfigurationError(f"set_testing(attempts={attempts}): must be >= 1 or None")
    previous = _mode
    _mode = _Mode(testing, attempts if testing else None)
    return TestingMode(previous)
