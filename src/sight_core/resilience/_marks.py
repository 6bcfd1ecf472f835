"""What a policy or a breaker leaves on an error it let through, for the layers around it.

Two marks, stored as private attributes on the exception object itself (it travels with the
error through any number of ``raise``), read back through functions:

- :func:`retried_by`: the name of the retry policy that already handled the error (it retried
  it, or decided not to); an outer policy does not retry it again, so nested policies cost
  ``max_attempts`` requests, not ``max_attempts ** 2``.
- :func:`circuit_of`: the circuit's state when the error left the breaker, if the circuit was
  open (or cooling down) by then; a retry policy stops at once instead of sleeping into a
  circuit that will refuse, and a fallback is taken immediately.

Setting an attribute can fail on exotic exception types (``__slots__`` without a dict); then the
mark is simply missing and the behaviour is the unmarked one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from ._store import BreakerState

__all__ = ["CircuitInfo", "circuit_of", "mark_circuit", "mark_retried", "retried_by"]

_RETRIED = "_sight_retried_by"
_CIRCUIT = "_sight_circuit"


@dataclass(frozen=True, slots=True)
class CircuitInfo:
    """The circuit an error passed through, as it was right after the error.

    Attributes:
        name: the breaker's name.
        state: its state (``open`` when this error opened it or found it open).
        retry_after: seconds until probes are allowed again, if known.
        cooldown: the opening is a server-requested cooldown (a quota refusal).
    """

    name: str
    state: BreakerState
    retry_after: float | None = None
    cooldown: bool = False


def _set(exc: BaseException, attr: str, value: object) -> None:
    with contextlib.suppress(AttributeError, TypeError):  # an exception without a __dict__
        setattr(exc, attr, value)


def mark_retried(exc: BaseException, policy: str) -> None:
    """Record that retry policy ``policy`` handled ``exc`` (the innermost one keeps the mark)."""
    if getattr(exc, _RETRIED, None) is None:
        _set(exc, _RETRIED, policy)


def retried_by(exc: BaseException) -> str | None:
    """The name of the retry policy that already handled ``exc``, or ``None``."""
    value = getattr(exc, _RETRIED, None)
    return value if isinstance(value, str) else None


def mark_circuit(exc: BaseException, info: CircuitInfo) -> None:
    """Attach the circuit's state to ``exc`` (the latest one wins)."""
    _set(exc, _CIRCUIT, info)


def circuit_of(exc: BaseException) -> CircuitInfo | None:
    """The circuit state attached to ``exc`` by a breaker that was open after it, or ``None``."""
    value = getattr(exc, _CIRCUIT, None)
    return value if isinstance(value, CircuitInfo) else None
