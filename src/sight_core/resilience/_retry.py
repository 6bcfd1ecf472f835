"""Retry policy: exponential backoff with full jitter, an overall deadline, server hints.

Built on tenacity (``AsyncRetrying`` with its ``wait_random_exponential`` full-jitter wait),
with three things tenacity does not decide for us:

- *what* to retry: only errors the classifier calls ``transient``;
- *how long* to wait: ``max(backoff, server hint + jitter)`` (the jitter spreads callers told
  the same hint; the wait is never shorter than the hint);
- *when to stop early*: if the next wait does not fit in what remains of ``deadline``, fail at
  once with :class:`~sight_core.errors.DeadlineExceededError` instead of sleeping for nothing;
  if the server asks for more than ``max_server_wait`` (or names a per-day quota), or a circuit
  breaker inside the policy is open, raise the error at once instead of sleeping into a refusal;
  if an inner policy already handled the error (:func:`~sight_core.resilience.retried_by`),
  don't retry it again (nested policies would multiply the requests).

The first attempt runs without tenacity, so a call that succeeds costs one ``await`` plus
arming the deadline (a set insertion for a long deadline, see :mod:`._expiry`); the retry
machinery is built only after a failure. A failure while the calling task is being cancelled is
never retried.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

from tenacity import AsyncRetrying, RetryCallState, wait_exponential, wait_random_exponential

from sight_core.errors import (
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceededError,
    RateLimitedError,
    RetryExhaustedError,
)

from . import _obs, _testing
from ._classify import Classification, Classifier, classify, cooldown_for
from ._decorate import through
from ._expiry import arm, disarm
from ._marks import CircuitInfo, circuit_of, mark_circuit, mark_retried, retried_by
from ._store import BreakerState

if TYPE_CHECKING:
    from sight_core.settings import LLMSettings

__all__ = ["RetryCallback", "RetryEvent", "RetryPolicy", "retrying"]

P = ParamSpec("P")
T = TypeVar("T")

_log = logging.getLogger("sight_core.resilience")
_sleep = asyncio.sleep  # module seam: tests count the sleeps without patching asyncio


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """Passed to ``on_retry`` callbacks before each wait.

    Attributes:
        policy: the policy's ``name``.
        attempt: number of the attempt that just failed (1-based).
        wait: seconds until the next attempt (computed even when testing mode skips the sleep).
        elapsed: seconds since the call started, counting skipped waits.
        classification: what the classifier said about ``error``.
        error: the exception of the failed attempt (do not log its arguments or payload).
    """

    policy: str
    attempt: int
    wait: float
    elapsed: float
    classification: Classification
    error: BaseException


RetryCallback = Callable[[RetryEvent], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How to retry a coroutine function. Immutable; share one per dependency.

    Names follow LangChain's ``with_retry`` where the meaning is the same
    (``retry_if_exception_type``, ``wait_exponential_jitter``) and tenacity's otherwise
    (``reraise``); ``max_attempts`` is ``stop_after_attempt``.

    Args:
        max_attempts: attempts in total, including the first (1 = no retries).
        initial: upper bound of the first backoff, seconds; attempt ``n`` waits a uniform
            random time in ``[0, min(max_backoff, initial * exp_base ** (n - 1))]`` (full jitter).
        max_backoff: cap of the backoff window, seconds.
        exp_base: growth factor of the window.
        deadline: seconds for all attempts and waits together; ``None`` for no deadline. An
            attempt still running when it expires is cancelled.
        attempt_timeout: seconds per attempt (``TimeoutError``, which is transient); ``None``
            for no per-attempt limit.
        max_server_wait: the longest server ``Retry-After`` / ``retryDelay`` hint to wait for,
            seconds; a longer hint (or a per-day quota refusal) is not retried: the error is
            raised at once (a circuit breaker inside turns it into a cooldown).
        classifier: decides what is transient; defaults to :func:`classify`.
        retry_if_exception_type: additionally, only these types are retried.
        wait_exponential_jitter: ``False`` waits the full window (no jitter; deterministic).
        reraise: ``True`` (default, like ``with_retry`` and stamina) re-raises the last error
            when attempts run out; ``False`` raises ``RetryExhaustedError`` from it.
        on_retry: callbacks run before each wait (observability); their errors are logged
            and swallowed.
        name: label for metrics and logs.

    Every error leaving :meth:`call` is marked as handled by this policy
    (:func:`~sight_core.resilience.retried_by`); an outer policy does not retry it again.

    Raises (from :meth:`call`):
        the original error: permanent, or the last transient one when attempts ran out, or
            any error while the calling task is being cancelled (never retried), or one a
            breaker inside reported with an open circuit
            (:func:`~sight_core.resilience.circuit_of`), or one asking for a wait longer than
            ``max_server_wait``, or one an inner policy already handled;
        RetryExhaustedError: attempts ran out and ``reraise=False``;
        DeadlineExceededError: the deadline expired, or the next wait (a server hint) does
            not fit in what remains of it; ``__cause__`` is the last error.
    """

    max_attempts: int = 3
    initial: float = 0.5
    max_backoff: float = 30.0
    exp_base: float = 2.0
    deadline: float | None = 60.0
    attempt_timeout: float | None = None
    max_server_wait: float = 30.0
    classifier: Classifier = classify
    retry_if_exception_type: tuple[type[BaseException], ...] = (Exception,)
    wait_exponential_jitter: bool = True
    reraise: bool = True
    on_retry: Sequence[RetryCallback] = field(default=())
    name: str = "default"

    def __post_init__(self) -> None:
        def bad(what: str) -> ConfigurationError:
            return ConfigurationError(f"RetryPolicy({what})")

        if self.max_attempts < 1:
            raise bad(f"max_attempts={self.max_attempts}: must be >= 1")
        for key in ("initial", "max_backoff", "max_server_wait"):
            value = getattr(self, key)
            if not value >= 0 or math.isinf(value):
                raise bad(f"{key}={value}: must be a finite number >= 0")
        if not self.exp_base >= 1:
            raise bad(f"exp_base={self.exp_base}: must be >= 1")
        for key in ("deadline", "attempt_timeout"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise bad(f"{key}={value}: must be > 0 or None")
        if not isinstance(self.on_retry, tuple):
            object.__setattr__(self, "on_retry", tuple(self.on_retry))

    @classmethod
    def from_settings(cls, llm: LLMSettings, **overrides: Any) -> RetryPolicy:
        """A policy from ``SightSettings.llm``: ``max_attempts``, ``backoff_initial``,
        ``backoff_max``, ``deadline`` and ``max_server_wait``; ``overrides`` win."""
        values: dict[str, Any] = {
            "max_attempts": llm.max_attempts,
            "initial": llm.backoff_initial,
            "max_backoff": llm.backoff_max,
            "deadline": llm.deadline,
            "max_server_wait": llm.max_server_wait,
            "name": "llm",
        }
        values.update(overrides)
        return cls(**values)

    def with_options(self, **changes: Any) -> RetryPolicy:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Use the policy as a decorator: ``@policy``; keeps the signature."""

        return through(self.call, fn)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, retrying transient failures (see the class doc)."""
        start = time.monotonic()
        try:
            if self.deadline is None and self.attempt_timeout is None:
                return await fn(*args, **kwargs)
            return await _attempt(self, self.deadline, fn, args, kwargs)
        except Exception as exc:
            first = exc
        run = _Run(self, start)
        classification = self.classifier(first)
        if run.max_attempts == 1 or not self._retryable(first, classification):
            mark_retried(first, self.name)
            raise first
        run.last = classification
        try:
            return await run.retry(fn, args, kwargs, first)
        except Exception as exc:
            mark_retried(exc, self.name)
            raise

    def _retryable(self, exc: BaseException, classification: Classification) -> bool:
        return (
            classification.kind == "transient"
            and isinstance(exc, self.retry_if_exception_type)
            and retried_by(exc) is None  # an inner policy spent its attempts on it already
            and circuit_of(exc) is None  # the circuit is open: the next attempt is refused
            and cooldown_for(classification, self.max_server_wait, 0.0) is None
            and not _cancelling()
        )


def _cancelling() -> bool:
    """Whether someone asked to cancel the current task: a callee that turned the cancellation
    into another error (a transport error, a timeout) must not earn a retry."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _attempt(
    policy: RetryPolicy,
    remaining: float | None,
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> T:
    """One attempt bounded by what remains of the deadline and by ``attempt_timeout``.

    A lean ``asyncio.timeout`` (:mod:`._expiry`: a long limit shares a timer with the other
    limits of the loop ending in the same slice of time, so a call that succeeds pays a set
    insertion, not a timer handle). Our expiry becomes ``DeadlineExceededError`` (deadline) or
    ``TimeoutError`` (per attempt, transient); a cancellation from anyone else propagates
    untouched.
    """
    if remaining is not None and remaining <= 0:
        raise DeadlineExceededError(f"retry policy {policy.name!r}: deadline exhausted")
    per_attempt = policy.attempt_timeout
    by_deadline = per_attempt is None or (remaining is not None and remaining <= per_attempt)
    limit = remaining if by_deadline else per_attempt
    if limit is None:  # pragma: no cover - callers pass at least one bound
        return await fn(*args, **kwargs)
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - always inside a task under asyncio
        raise RuntimeError("RetryPolicy.call must run inside an asyncio task")
    expiry = arm(task, asyncio.get_running_loop(), limit)
    try:
        result = await fn(*args, **kwargs)
    except asyncio.CancelledError as exc:
        disarm(expiry)
        if expiry.fired and task.uncancel() == 0:  # our expiry, and nobody else cancelled
            if by_deadline:
                raise DeadlineExceededError(
                    f"retry policy {policy.name!r}: deadline of {policy.deadline}s expired"
                ) from TimeoutError()
            raise TimeoutError(f"attempt exceeded {per_attempt}s") from exc
        raise
    except BaseException:
        disarm(expiry)
        if expiry.fired:  # expired, but the callee turned the cancellation into another error
            task.uncancel()
        raise
    disarm(expiry)
    if expiry.fired:  # expired, but the callee swallowed the cancellation and returned
        task.uncancel()
    return result


class _Run:
    """The state of one :meth:`RetryPolicy.call`: clock, testing mode, last classification."""

    __slots__ = (
        "backoff",
        "error",
        "last",
        "max_attempts",
        "policy",
        "real",
        "skipped",
        "start",
        "stop",
        "testing",
    )

    def __init__(self, policy: RetryPolicy, start: float) -> None:
        self.policy = policy
        self.start = start
        self.skipped = 0.0  # seconds of waits skipped in testing mode (virtual time)
        self.testing, attempts = _testing.current()
        self.max_attempts = attempts if attempts is not None else policy.max_attempts
        self.last: Classification | None = None
        self.error: BaseException | None = None  # the last attempt's error
        self.real: BaseException | None = None  # the last error that came from ``fn`` itself
        self.stop = ""
        self.backoff: Callable[[RetryCallState], float] | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.start + self.skipped

    async def attempt(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        policy = self.policy
        if policy.deadline is None and policy.attempt_timeout is None:
            return await fn(*args, **kwargs)
        remaining = None if policy.deadline is None else policy.deadline - self.elapsed()
        if remaining is not None and remaining <= 0:  # the wait ended late (a loaded machine)
            raise DeadlineExceededError(
                f"retry policy {policy.name!r}: the {policy.deadline}s deadline passed during "
                "the wait"
            ) from self.error
        return await _attempt(policy, remaining, fn, args, kwargs)

    async def retry(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        first: BaseException,
    ) -> T:
        policy = self.policy
        if policy.wait_exponential_jitter:
            self.backoff = wait_random_exponential(
                multiplier=policy.initial, max=policy.max_backoff, exp_base=policy.exp_base
            )
        else:
            self.backoff = wait_exponential(
                multiplier=policy.initial, max=policy.max_backoff, exp_base=policy.exp_base
            )
        pending = [first]

        async def attempt() -> T:
            if pending:  # replay the first attempt's failure: it already happened
                raise pending.pop()
            try:
                return await self.attempt(fn, args, kwargs)
            except CircuitOpenError as refused:
                real = self.real
                if real is None:  # pragma: no cover - the first attempt is never replayed here
                    raise
                # the circuit opened while we waited: the caller learns what actually failed,
                # with the circuit's state attached, not a refusal of a request never made
                mark_circuit(
                    real,
                    CircuitInfo(
                        refused.name,
                        BreakerState.OPEN,
                        refused.retry_after,
                        isinstance(refused, RateLimitedError),
                    ),
                )
            raise real  # outside the handler: the refusal does not become its context

        retrying = AsyncRetrying(
            sleep=self.sleep,
            retry=self.should_retry,
            wait=self.wait,
            stop=self.should_stop,
            before_sleep=self.before_sleep,
            retry_error_callback=self.give_up,
            reraise=True,
        )
        result: T = await retrying(attempt)
        return result

    # tenacity hooks ---------------------------------------------------------------------------

    async def sleep(self, seconds: float) -> None:
        if self.testing:
            self.skipped += seconds
            await _sleep(0)
        else:
            await _sleep(seconds)

    def should_retry(self, rs: RetryCallState) -> bool:
        outcome = rs.outcome
        if outcome is None or not outcome.failed:
            return False
        exc = outcome.exception()
        if exc is None:  # pragma: no cover - failed outcomes carry an exception
            return False
        self.error = exc
        if not isinstance(exc, CircuitOpenError):
            self.real = exc
        if rs.attempt_number > 1:  # the first one was classified already
            self.last = self.policy.classifier(exc)
        assert self.last is not None
        return self.policy._retryable(exc, self.last)

    def wait(self, rs: RetryCallState) -> float:
        assert self.backoff is not None
        assert self.last is not None
        backoff = self.backoff(rs)
        hint = self.last.retry_after
        if hint is None:
            return backoff
        policy = self.policy
        if policy.wait_exponential_jitter:
            # callers told the same hint must not return together: spread them over up to half
            # the hint (at least ``initial``) after it, never before it
            spread = min(policy.max_backoff, max(policy.initial, hint / 2))
            waited = hint + random.uniform(0.0, spread)
            if policy.deadline is not None:  # don't let the jitter alone break the deadline
                room = policy.deadline - self.elapsed()
                if hint < room:
                    waited = min(waited, hint + (room - hint) / 2)
            hint = waited
        return max(backoff, hint)

    def should_stop(self, rs: RetryCallState) -> bool:
        if rs.attempt_number >= self.max_attempts:
            self.stop = "attempts"
            return True
        deadline = self.policy.deadline
        if deadline is not None and self.elapsed() + rs.upcoming_sleep >= deadline:
            self.stop = "deadline"
            return True
        return False

    def before_sleep(self, rs: RetryCallState) -> None:
        assert self.last is not None
        assert rs.outcome is not None
        error = rs.outcome.exception()
        assert error is not None
        policy = self.policy
        _obs.increment("sight_retries_total", 1, policy=policy.name, reason=self.last.reason)
        _log.debug(
            "retry policy %r: attempt %d failed (%s), next in %.2fs",
            policy.name,
            rs.attempt_number,
            self.last.reason,
            rs.upcoming_sleep,
        )
        if not policy.on_retry:
            return
        event = RetryEvent(
            policy.name, rs.attempt_number, rs.upcoming_sleep, self.elapsed(), self.last, error
        )
        for callback in policy.on_retry:
            try:
                callback(event)
            except Exception:
                _log.warning("retry callback %r failed", callback, exc_info=True)

    def give_up(self, rs: RetryCallState) -> Any:
        assert rs.outcome is not None
        last = rs.outcome.exception()
        assert last is not None
        policy = self.policy
        reason = self.last.reason if self.last is not None else "unknown"
        _obs.increment("sight_retry_giveups_total", 1, policy=policy.name, reason=reason)
        if self.stop == "deadline":
            raise DeadlineExceededError(
                f"retry policy {policy.name!r}: next attempt in {rs.upcoming_sleep:.2f}s would "
                f"pass the {policy.deadline}s deadline after {rs.attempt_number} attempt(s)"
            ) from last
        if not policy.reraise:
            raise RetryExhaustedError(rs.attempt_number, last) from last
        last.add_note(
            f"sight_core: retry policy {policy.name!r} gave up after "
            f"{rs.attempt_number} attempt(s) ({reason})"
        )
        raise last


class _Unset(enum.Enum):
    UNSET = 0


_UNSET: Final = _Unset.UNSET


def retrying(
    policy: RetryPolicy | None = None,
    /,
    *,
    max_attempts: int | _Unset = _UNSET,
    initial: float | _Unset = _UNSET,
    max_backoff: float | _Unset = _UNSET,
    exp_base: float | _Unset = _UNSET,
    deadline: float | _Unset | None = _UNSET,
    attempt_timeout: float | _Unset | None = _UNSET,
    max_server_wait: float | _Unset = _UNSET,
    classifier: Classifier | _Unset = _UNSET,
    retry_if_exception_type: tuple[type[BaseException], ...] | _Unset = _UNSET,
    wait_exponential_jitter: bool | _Unset = _UNSET,
    reraise: bool | _Unset = _UNSET,
    on_retry: Sequence[RetryCallback] | _Unset = _UNSET,
    name: str | _Unset = _UNSET,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Coroutine[Any, Any, T]]]:
    """Decorator: retry an ``async def`` with ``policy`` (or :class:`RetryPolicy` defaults).

    ``@retrying(max_attempts=5)`` or ``@retrying(policy, deadline=10)``: the options given
    replace the policy's. The wrapped function keeps its signature (ParamSpec); the policy is
    built once, at decoration time.

    Raises:
        ConfigurationError: an option is invalid (at decoration time).
    """
    options = {
        "max_attempts": max_attempts,
        "initial": initial,
        "max_backoff": max_backoff,
        "exp_base": exp_base,
        "deadline": deadline,
        "attempt_timeout": attempt_timeout,
        "max_server_wait": max_server_wait,
        "classifier": classifier,
        "retry_if_exception_type": retry_if_exception_type,
        "wait_exponential_jitter": wait_exponential_jitter,
        "reraise": reraise,
        "on_retry": on_retry,
        "name": name,
    }
    changes = {k: v for k, v in options.items() if v is not _UNSET}
    base = policy if policy is not None else RetryPolicy()
    resolved = base.with_options(**changes) if changes else base
    return resolved.__call__
