"""Resilience: classify errors, retry what is transient, stop calling what keeps failing.

- :func:`classify`: one table deciding ``transient`` / ``permanent`` / ``context_overflow`` /
  ``blocked`` / ``cancelled`` for any exception (Gemini, httpx, LangChain, our own), with the
  server's ``Retry-After`` / ``retryDelay`` hint.
- :class:`RetryPolicy` and :func:`retrying`: tenacity-based retries with full-jitter backoff, an
  overall deadline and server hints; :func:`set_testing` removes the waits.
- :class:`CircuitBreaker`: asyncio-native closed/open/half-open breaker; state in memory
  (:class:`MemoryBreakerStore`) or shared across processes (:class:`RedisBreakerStore`); a
  server's long quota refusal holds it open for that time (a cooldown, shared the same way).
- :func:`retried_by` and :func:`circuit_of`: what a policy or a breaker left on an error it let
  through (nested policies don't multiply; a policy doesn't sleep into an open circuit).

Imports the standard library, tenacity, :mod:`sight_core.errors` and (lazily) the observability
sink; Redis only through the client you pass in.
"""

from ._breaker import BreakerListener, CircuitBreaker, ExcludeRule
from ._classify import (
    STATUS_KINDS,
    Classification,
    Classifier,
    ErrorKind,
    classify,
    cooldown_for,
    parse_retry_after,
)
from ._marks import CircuitInfo, circuit_of, retried_by
from ._redis_store import RedisBreakerStore
from ._retry import RetryCallback, RetryEvent, RetryPolicy, retrying
from ._store import BreakerConfig, BreakerState, BreakerStore, Grant, MemoryBreakerStore, Snapshot
from ._testing import TestingMode, is_testing, set_testing

__all__ = [
    "STATUS_KINDS",
    "BreakerConfig",
    "BreakerListener",
    "BreakerState",
    "BreakerStore",
    "CircuitBreaker",
    "CircuitInfo",
    "Classification",
    "Classifier",
    "ErrorKind",
    "ExcludeRule",
    "Grant",
    "MemoryBreakerStore",
    "RedisBreakerStore",
    "RetryCallback",
    "RetryEvent",
    "RetryPolicy",
    "Snapshot",
    "TestingMode",
    "circuit_of",
    "classify",
    "cooldown_for",
    "is_testing",
    "parse_retry_after",
    "retried_by",
    "retrying",
    "set_testing",
]
