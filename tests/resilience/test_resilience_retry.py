"""RetryPolicy / @retrying: what is retried, how long it waits, when it stops."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google.genai.errors import ClientError, ServerError
from resilience_support import unavailable

from sight_core import observability
from sight_core.errors import ConfigurationError, DeadlineExceededError, RetryExhaustedError
from sight_core.resilience import RetryEvent, RetryPolicy, is_testing, retrying, set_testing
from sight_core.resilience import _retry as retry_module
from sight_core.settings import LLMSettings

RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def too_many(delay: str | None = None) -> ClientError:
    error: dict[str, Any] = {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}
    if delay is not None:
        error["details"] = [{"@type": RETRY_INFO, "retryDelay": delay}]
    return ClientError(429, {"error": error})


class Script:
    """An async callable failing with the given errors, then returning ``"ok"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self, value: str = "ok") -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return value


@pytest.fixture
def testing() -> Iterator[None]:
    with set_testing(True):
        yield


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every sleep the policy asks for (real waits are skipped: the list is the evidence)."""
    seen: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        seen.append(seconds)

    monkeypatch.setattr(retry_module, "_sleep", fake_sleep)
    return seen


def no_jitter(**kw: Any) -> RetryPolicy:
    return RetryPolicy(wait_exponential_jitter=False, **kw)


async def test_429_twice_then_success_returns_on_attempt_3_with_configured_waits(
    testing: None,
) -> None:
    events: list[RetryEvent] = []
    fn = Script(too_many(), too_many())
    policy = no_jitter(max_attempts=4, initial=1.0, on_retry=[events.append])
    assert await policy.call(fn) == "ok"
    assert fn.calls == 3
    assert [e.wait for e in events] == [1.0, 2.0]
    assert [e.attempt for e in events] == [1, 2]
    assert {e.classification.reason for e in events} == {"http_429"}


async def test_server_retry_delay_is_honoured_and_a_longer_one_ends_the_call(
    testing: None,
) -> None:
    events: list[RetryEvent] = []
    fn = Script(too_many("7s"), too_many("90s"))
    policy = no_jitter(initial=0.1, max_server_wait=30.0, deadline=None, on_retry=[events.append])
    with pytest.raises(ClientError, match="90s"):  # the server said no for longer than we wait
        await policy.call(fn)
    assert [e.wait for e in events] == [7.0]
    assert fn.calls == 2


async def test_full_jitter_stays_inside_the_window(testing: None) -> None:
    events: list[RetryEvent] = []
    for _ in range(30):
        await RetryPolicy(max_attempts=3, initial=1.0, on_retry=[events.append]).call(
            Script(unavailable(), unavailable())
        )
    first = [e.wait for e in events if e.attempt == 1]
    second = [e.wait for e in events if e.attempt == 2]
    assert all(0 <= w <= 1.0 for w in first)
    assert all(0 <= w <= 2.0 for w in second)
    assert len(set(first)) > 1  # jittered, not a constant


async def test_400_is_never_retried(sleeps: list[float]) -> None:
    bad = ClientError(400, {"error": {"code": 400, "message": "Invalid JSON payload"}})
    fn = Script(bad)
    with pytest.raises(ClientError) as info:
        await RetryPolicy(max_attempts=5).call(fn)
    assert info.value is bad
    assert fn.calls == 1
    assert sleeps == []


async def test_hint_beyond_deadline_fails_fast_without_sleeping(sleeps: list[float]) -> None:
    events: list[RetryEvent] = []
    fn = Script(too_many("120s"))
    policy = RetryPolicy(
        max_attempts=5, deadline=60.0, max_server_wait=300.0, on_retry=[events.append]
    )
    with pytest.raises(DeadlineExceededError) as info:
        await policy.call(fn)
    assert fn.calls == 1
    assert sleeps == []
    assert events == []
    assert isinstance(info.value.__cause__, ClientError)


async def test_waits_count_against_the_deadline_in_testing_mode(testing: None) -> None:
    fn = Script(too_many("6s"), too_many("6s"), too_many("6s"))
    with pytest.raises(DeadlineExceededError):
        await no_jitter(max_attempts=5, deadline=10.0).call(fn)
    assert fn.calls == 2  # 6 s waited (virtually); another 6 s would pass the deadline


async def test_real_waits_without_testing_mode(sleeps: list[float]) -> None:
    assert not is_testing()
    fn = Script(unavailable(), unavailable())
    assert await no_jitter(initial=0.5, max_attempts=3).call(fn) == "ok"
    assert sleeps == [0.5, 1.0]


async def test_exhausted_reraises_the_last_error_with_a_note(testing: None) -> None:
    errors = [unavailable(), unavailable(), unavailable()]
    fn = Script(*errors)
    with pytest.raises(ServerError) as info:
        await RetryPolicy(max_attempts=3, name="gemini").call(fn)
    assert info.value is errors[-1]
    assert fn.calls == 3
    assert any("gave up after 3 attempt(s)" in n for n in info.value.__notes__)


async def test_exhausted_wraps_when_reraise_is_false(testing: None) -> None:
    last = httpx.ConnectError("refused")
    fn = Script(httpx.ConnectError("refused"), last)
    with pytest.raises(RetryExhaustedError) as info:
        await RetryPolicy(max_attempts=2, reraise=False).call(fn)
    assert info.value.attempts == 2
    assert info.value.__cause__ is last


async def test_deadline_cancels_a_running_attempt() -> None:
    calls = 0

    async def hangs() -> None:
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()

    with pytest.raises(DeadlineExceededError) as info:
        await RetryPolicy(deadline=0.05).call(hangs)
    assert calls == 1
    assert isinstance(info.value.__cause__, TimeoutError)


async def test_attempt_timeout_is_transient(testing: None) -> None:
    calls = 0

    async def slow_then_fast() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()
        return "ok"

    assert await RetryPolicy(attempt_timeout=0.02, deadline=None).call(slow_then_fast) == "ok"
    assert calls == 2


async def test_cancellation_is_not_retried(sleeps: list[float]) -> None:
    entered = asyncio.Event()
    fn_calls = 0

    async def hangs() -> None:
        nonlocal fn_calls
        fn_calls += 1
        entered.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(RetryPolicy(max_attempts=5).call(hangs))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fn_calls == 1
    assert sleeps == []


async def test_cancellation_during_the_wait() -> None:
    fn = Script(unavailable(), unavailable())
    task = asyncio.ensure_future(no_jitter(initial=60.0, deadline=None).call(fn))
    while fn.calls == 0:
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)  # now inside the 60 s backoff
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fn.calls == 1


async def test_retry_if_exception_type_narrows(testing: None) -> None:
    fn = Script(httpx.ConnectError("refused"))
    policy = RetryPolicy(retry_if_exception_type=(ServerError,))
    with pytest.raises(httpx.ConnectError):
        await policy.call(fn)
    assert fn.calls == 1


async def test_testing_attempts_override_and_restore() -> None:
    with set_testing(True, attempts=1):
        fn = Script(unavailable())
        with pytest.raises(ServerError):
            await RetryPolicy(max_attempts=5).call(fn)
        assert fn.calls == 1
        with set_testing(True, attempts=2):
            fn = Script(unavailable())
            assert await RetryPolicy(max_attempts=5).call(fn) == "ok"
        assert is_testing()
    assert not is_testing()
    with pytest.raises(ConfigurationError):
        set_testing(True, attempts=0)


async def test_retrying_decorator_keeps_signature_and_options(testing: None) -> None:
    fn = Script(unavailable(), unavailable())

    @retrying(max_attempts=2)
    async def fetch(value: str, *, upper: bool = False) -> str:
        """Docstring kept."""
        result = await fn(value)
        return result.upper() if upper else result

    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Docstring kept."
    assert inspect.signature(fetch) == inspect.signature(fetch.__wrapped__)  # type: ignore[attr-defined]
    with pytest.raises(ServerError):
        await fetch("x")
    assert await fetch("x", upper=True) == "X"
    assert fn.calls == 3

    base = RetryPolicy(max_attempts=7, name="base")

    @retrying(base, deadline=None)
    async def other() -> int:
        return 1

    assert await other() == 1

    @base
    async def third() -> int:
        return 3

    assert await third() == 3


async def test_retries_are_counted_in_observability(testing: None) -> None:
    before = observability.snapshot().counter(
        "sight_retries_total", policy="count-me", reason="http_503"
    )
    await RetryPolicy(name="count-me").call(Script(unavailable(), unavailable()))
    after = observability.snapshot().counter(
        "sight_retries_total", policy="count-me", reason="http_503"
    )
    assert after - before == 2


async def test_a_failing_callback_does_not_break_the_call(testing: None) -> None:
    def broken(event: RetryEvent) -> None:
        raise RuntimeError("callback bug")

    assert await RetryPolicy(on_retry=[broken]).call(Script(unavailable())) == "ok"


def test_from_settings_and_validation() -> None:
    llm = LLMSettings(max_attempts=6, backoff_initial=0.25, backoff_max=8, deadline=90)
    policy = RetryPolicy.from_settings(llm, name="pro")
    assert (policy.max_attempts, policy.initial, policy.max_backoff, policy.deadline) == (
        6, 0.25, 8.0, 90.0
    )  # fmt: skip
    assert policy.max_server_wait == llm.max_server_wait
    assert policy.name == "pro"
    for bad in ({"max_attempts": 0}, {"initial": -1}, {"deadline": 0}, {"exp_base": 0.5}):
        with pytest.raises(ConfigurationError):
            RetryPolicy(**bad)
    with pytest.raises(ConfigurationError):
        policy.with_options(max_backoff=float("inf"))


async def test_external_cancel_with_a_deadline_armed_stays_a_cancellation() -> None:
    entered = asyncio.Event()

    async def hangs() -> None:
        entered.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(RetryPolicy(deadline=30.0, attempt_timeout=10.0).call(hangs))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_callee_that_swallows_the_expiry_leaves_the_task_clean() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "swallowed"
        return "unreachable"

    assert await RetryPolicy(deadline=0.02).call(stubborn) == "swallowed"
    current = asyncio.current_task()
    assert current is not None
    assert current.cancelling() == 0
    await asyncio.sleep(0)  # a pending cancellation would surface here


async def test_a_cancellation_turned_into_a_transient_error_is_not_retried(
    sleeps: list[float],
) -> None:
    """Some clients turn the caller's cancellation into a transport error: never retry it."""
    entered = asyncio.Event()
    calls = 0

    async def converts() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise unavailable()  # attempt 2 runs inside the retry loop
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise httpx.ReadError("connection closed while cancelling") from None
        return "unreachable"

    task = asyncio.ensure_future(no_jitter(max_attempts=5, initial=0.0).call(converts))
    await entered.wait()
    task.cancel()
    with pytest.raises((httpx.ReadError, asyncio.CancelledError)):
        await task
    assert calls == 2
    assert sleeps == [0.0]


async def test_a_wait_that_overshoots_the_deadline_fails_with_the_last_error_as_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a loaded machine a sleep can end after the deadline: no attempt starts, and the
    caller still sees what failed (the breaker and the fallback decide on the cause)."""
    now = [100.0]

    class FakeTime:
        @staticmethod
        def monotonic() -> float:
            return now[0]

    async def overshooting_sleep(seconds: float) -> None:
        now[0] += seconds + 5.0  # woke up 5 s late

    monkeypatch.setattr(retry_module, "time", FakeTime)
    monkeypatch.setattr(retry_module, "_sleep", overshooting_sleep)
    error = unavailable()
    fn = Script(error)
    with pytest.raises(DeadlineExceededError) as info:
        await no_jitter(initial=1.0, deadline=3.0).call(fn)
    assert fn.calls == 1
    assert info.value.__cause__ is error
