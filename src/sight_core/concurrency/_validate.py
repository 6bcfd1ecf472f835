"""Argument checks shared by the concurrency helpers; each error names the argument."""

from __future__ import annotations

import math

from sight_core.errors import ConfigurationError


def check_limit(value: object, name: str = "limit") -> int:
    """Return ``value`` if it is an ``int`` >= 1 (bools refused), else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1, got {type(value).__name__}")
    if value < 1:
        raise ConfigurationError(f"{name} must be >= 1, got {value}")
    return value


def check_positive(value: object, name: str) -> float:
    """Return ``value`` as a float if it is a finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number > 0, got {type(value).__name__}")
    if not value > 0 or math.isnan(value):
        raise ConfigurationError(f"{name} must be > 0, got {value!r}")
    return float(value)


def check_optional_positive(value: object, name: str) -> float | None:
    """Like :func:`check_positive` but ``None`` passes through."""
    return None if value is None else check_positive(value, name)
