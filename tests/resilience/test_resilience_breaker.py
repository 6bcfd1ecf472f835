"""CircuitBreaker with the in-memory store and an injected clock."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import httpx
import pytest
from google.genai.errors import ClientError, ServerError
from resilience_support import Clock, unavailable

from sight_core.errors import CircuitOpenError, ConfigurationError, DeadlineExceededError
from sight_core.resilience import (
    BreakerListener,
    BreakerState,
    CircuitBreaker,
    Grant,
    MemoryBreakerStore,
    RetryEvent,
    RetryPolicy,
    circuit_of,
    set_testing,
)
from sight_core.settings import LLMSettings

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class Dependency:
    """Counts calls; raises ``error`` when set."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: BaseException | None = None

    async def __call__(self) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return "ok"


def bad_request() -> ClientError:
    return ClientError(400, {"error": {"code": 400, "message": "invalid"}})


class Recorder(BreakerListener):
    def __init__(self) -> None:
        self.events: list[Any] = []

    def before_call(self, breaker: CircuitBreaker, func: Any, *args: Any, **kwargs: Any) -> None:
        self.events.append("before")

    def failure(self, breaker: CircuitBreaker, exc: BaseException) -> None:
        self.events.append(("failure", type(exc).__name__))

    def success(self, breaker: CircuitBreaker) -> None:
        self.events.append("success")

    def state_change(
        self, breaker: CircuitBreaker, old_state: BreakerState, new_state: BreakerState
    ) -> None:
        self.events.append((str(old_state), str(new_state)))


async def fail(breaker: CircuitBreaker, dep: Dependency, times: int) -> None:
    for _ in range(times):
        with pytest.raises((ServerError, ClientError, httpx.HTTPError, TimeoutError)):
            await breaker.call(dep)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dep() -> Dependency:
    return Dependency()


async def test_opens_after_consecutive_failures_and_rejects_without_calling(
    clock: Clock, dep: Dependency
) -> None:
    breaker = CircuitBreaker("gemini", failure_threshold=3, recovery_timeout=30, clock=clock)
    dep.error = unavailable()
    await fail(breaker, dep, 3)
    assert breaker.state is OPEN
    assert dep.calls == 3
    for _ in range(100):
        with pytest.raises(CircuitOpenError) as info:
            await breaker.call(dep)
    assert dep.calls == 3  # no attempt reached the dependency
    assert info.value.retry_after == 30.0
    assert breaker.stats()["rejected"] == 100


async def test_a_success_resets_the_consecutive_count(clock: Clock, dep: Dependency) -> None:
    breaker = CircuitBreaker("gemini", failure_threshold=3, clock=clock)
    for _ in range(5):
        dep.error = unavailable()
        await fail(breaker, dep, 2)
        dep.error = None
        assert await breaker.call(dep) == "ok"
    assert breaker.state is CLOSED


async def test_permanent_errors_and_cancellation_are_neutral(clock: Clock, dep: Dependency) -> None:
    breaker = CircuitBreaker("gemini", failure_threshold=2, clock=clock)
    dep.error = bad_request()
    await fail(breaker, dep, 10)
    dep.error = asyncio.CancelledError()
    for _ in range(10):
        with pytest.raises(asyncio.CancelledError):
            await breaker.call(dep)
    assert breaker.state is CLOSED
    assert breaker.stats()["failures"] == 0


async def test_exclude_types_and_predicates(clock: Clock, dep: Dependency) -> None:
    breaker = CircuitBreaker(
        "gemini",
        failure_threshold=1,
        exclude=[httpx.ConnectError, lambda e: isinstance(e, TimeoutError)],
        clock=clock,
    )
    for error in (httpx.ConnectError("x"), TimeoutError()):
        dep.error = error
        await fail(breaker, dep, 3)
    assert breaker.state is CLOSED
    dep.error = unavailable()
    await fail(breaker, dep, 1)
    assert breaker.state is OPEN


async def half_open_with_two_probes(clock: Clock, dep: Dependency) -> CircuitBreaker:
    """A breaker tripped by one failure and past its recovery timeout."""
    breaker = CircuitBreaker(
        "gemini", failure_threshold=1, recovery_timeout=10, half_open_max_calls=2, clock=clock
    )
    dep.error = unavailable()
    await fail(breaker, dep, 1)
    clock.now += 10
    return breaker


async def test_half_open_admits_the_configured_number_of_probes_only(
    clock: Clock, dep: Dependency
) -> None:
    breaker = await half_open_with_two_probes(clock, dep)
    assert breaker.state is HALF_OPEN
    gate = asyncio.Event()
    entered = 0

    async def probe() -> str:
        nonlocal entered
        entered += 1
        await gate.wait()
        return "ok"

    tasks = [asyncio.ensure_future(breaker.call(probe)) for _ in range(5)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert entered == 2
    rejected = [t for t in tasks if t.done()]
    assert len(rejected) == 3
    assert all(isinstance(t.exception(), CircuitOpenError) for t in rejected)
    gate.set()
    assert await asyncio.gather(*(t for t in tasks if t not in rejected)) == ["ok", "ok"]
    assert breaker.state is CLOSED


async def test_a_probe_failure_opens_again(clock: Clock, dep: Dependency) -> None:
    breaker = CircuitBreaker("gemini", failure_threshold=1, recovery_timeout=10, clock=clock)
    dep.error = unavailable()
    await fail(breaker, dep, 1)
    clock.now += 10
    await fail(breaker, dep, 1)
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(dep)
    assert info.value.retry_after == 10.0
    assert dep.calls == 2


async def test_a_neutral_probe_gives_its_slot_back(clock: Clock, dep: Dependency) -> None:
    breaker = CircuitBreaker("gemini", failure_threshold=1, recovery_timeout=1, clock=clock)
    dep.error = unavailable()
    await fail(breaker, dep, 1)
    clock.now += 1
    dep.error = bad_request()
    await fail(breaker, dep, 1)  # neutral: still half-open, slot free
    assert breaker.state is HALF_OPEN
    dep.error = None
    assert await breaker.call(dep) == "ok"
    assert breaker.state is CLOSED


async def test_a_probe_that_never_reports_loses_its_slot(clock: Clock) -> None:
    store = MemoryBreakerStore(clock=clock)
    breaker = CircuitBreaker(
        "gemini", failure_threshold=1, recovery_timeout=1, probe_lease=5, store=store, clock=clock
    )
    dep = Dependency()
    dep.error = unavailable()
    await fail(breaker, dep, 1)
    clock.now += 1
    grant, _ = await store.acquire("gemini", breaker.config)  # a probe that will never report
    assert grant is Grant.PROBE
    with pytest.raises(CircuitOpenError):
        await breaker.call(dep)
    clock.now += 5
    dep.error = None
    assert await breaker.call(dep) == "ok"


async def test_failure_rate_over_the_window(clock: Clock, dep: Dependency) -> None:
    breaker = CircuitBreaker(
        "gemini",
        failure_threshold=None,
        failure_rate=0.5,
        window=10,
        minimum_calls=6,
        clock=clock,
    )
    for _ in range(2):  # 4 calls, 2 failures: below minimum_calls
        dep.error = unavailable()
        await fail(breaker, dep, 1)
        dep.error = None
        await breaker.call(dep)
    assert breaker.state is CLOSED
    clock.now += 11  # those calls leave the window
    for _ in range(2):
        dep.error = unavailable()
        await fail(breaker, dep, 1)
        dep.error = None
        await breaker.call(dep)
    assert breaker.state is CLOSED  # only 4 calls in the current window
    dep.error = unavailable()
    await fail(breaker, dep, 1)
    assert breaker.state is CLOSED  # 5 calls
    await fail(breaker, dep, 1)
    assert breaker.state is OPEN  # 6 calls, 4 failed


async def test_listeners_see_every_transition(clock: Clock, dep: Dependency) -> None:
    recorder = Recorder()

    class Broken(BreakerListener):
        def state_change(self, *args: Any) -> None:
            raise RuntimeError("listener bug")

    breaker = CircuitBreaker(
        "gemini", failure_threshold=1, recovery_timeout=5, listeners=[Broken()], clock=clock
    )
    breaker.add_listener(recorder)
    dep.error = unavailable()
    await fail(breaker, dep, 1)
    with pytest.raises(CircuitOpenError):
        await breaker.call(dep)
    clock.now += 5
    dep.error = None
    await breaker.call(dep)
    assert recorder.events == [
        "before",
        ("failure", "ServerError"),
        ("closed", "open"),
        ("open", "half-open"),
        "before",
        "success",
        ("half-open", "closed"),
    ]
    breaker.remove_listener(recorder)
    assert len(breaker.listeners) == 1


async def test_a_coroutine_failure_is_counted_unlike_pybreaker(
    clock: Clock, dep: Dependency
) -> None:
    breaker = CircuitBreaker("gemini", failure_threshold=1, clock=clock)

    @breaker
    async def call_gemini(prompt: str, *, temperature: float = 0.0) -> str:
        raise unavailable()

    assert list(inspect.signature(call_gemini).parameters) == ["prompt", "temperature"]
    with pytest.raises(ServerError):
        await call_gemini("hi")
    assert breaker.state is OPEN


async def test_retry_inside_the_breaker_stops_at_an_open_circuit(
    clock: Clock, dep: Dependency
) -> None:
    breaker = CircuitBreaker("gemini", failure_threshold=2, clock=clock)
    dep.error = unavailable()
    events: list[RetryEvent] = []
    with set_testing(True), pytest.raises(ServerError) as info:
        await RetryPolicy(max_attempts=10, on_retry=[events.append]).call(breaker.call, dep)
    assert dep.calls == 2  # the error that opened the circuit ends the retries
    assert len(events) == 1  # one wait (after attempt 1), none into the open circuit
    circuit = circuit_of(info.value)  # the real error, with the circuit's state attached
    assert circuit is not None and (circuit.name, circuit.state) == ("gemini", OPEN)
    assert breaker.stats()["rejected"] == 0  # no third attempt was even tried


async def test_deadline_exceeded_from_transient_errors_counts(clock: Clock) -> None:
    breaker = CircuitBreaker("gemini", failure_threshold=1, clock=clock)
    try:
        raise TimeoutError
    except TimeoutError as cause:
        error = DeadlineExceededError("late")
        error.__cause__ = cause
    assert breaker.counts_as_failure(error)
    assert not breaker.counts_as_failure(DeadlineExceededError("no cause"))


async def test_reset_refresh_and_settings(clock: Clock, dep: Dependency) -> None:
    llm = LLMSettings(breaker_failure_threshold=2, breaker_recovery_timeout=7)
    breaker = CircuitBreaker.from_settings("gemini-2.5-pro", llm, clock=clock)
    assert breaker.config.failure_threshold == 2
    assert breaker.config.recovery_timeout == 7.0
    dep.error = unavailable()
    await fail(breaker, dep, 2)
    assert await breaker.refresh() is OPEN
    await breaker.reset()
    assert breaker.state is CLOSED
    assert "gemini-2.5-pro" in repr(breaker)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"failure_threshold": None},
        {"recovery_timeout": 0},
        {"half_open_max_calls": 0},
        {"failure_rate": 1.5},
        {"window": 0},
        {"minimum_calls": 0},
    ],
)
def test_invalid_configuration(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        CircuitBreaker("x", **kwargs)


async def test_counts_are_exported_through_observability(clock: Clock, dep: Dependency) -> None:
    from sight_core import observability

    breaker = CircuitBreaker("exported-breaker", failure_threshold=1, clock=clock)
    dep.error = unavailable()
    await fail(breaker, dep, 1)
    for _ in range(3):
        with pytest.raises(CircuitOpenError):
            await breaker.call(dep)
    snap = observability.snapshot()
    assert snap.counter("sight_breaker_calls_total", name="exported-breaker") == 1  # admitted
    assert snap.counter("sight_breaker_rejected_total", name="exported-breaker") == 3
    assert snap.counter("sight_breaker_failures_total", name="exported-breaker") == 1
    assert snap.gauge("sight_breaker_state", name="exported-breaker") == 2


async def test_a_cancelled_probe_is_neutral_and_frees_its_slot(
    clock: Clock, dep: Dependency
) -> None:
    breaker = CircuitBreaker("gemini", failure_threshold=1, recovery_timeout=1, clock=clock)
    dep.error = unavailable()
    await fail(breaker, dep, 1)
    clock.now += 1
    entered = asyncio.Event()

    async def hangs() -> str:
        entered.set()
        await asyncio.Event().wait()
        return "never"

    probe = asyncio.ensure_future(breaker.call(hangs))
    await entered.wait()
    with pytest.raises(CircuitOpenError):  # the only slot is taken
        await breaker.call(dep)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert breaker.state is HALF_OPEN  # not a failure
    assert breaker.stats()["failures"] == 1
    dep.error = None
    assert await breaker.call(dep) == "ok"  # the slot came back
    assert breaker.state is CLOSED


async def test_a_broken_metrics_sink_never_breaks_a_call(
    monkeypatch: pytest.MonkeyPatch, clock: Clock, dep: Dependency
) -> None:
    from sight_core.resilience import _obs

    def broken(*args: Any, **labels: Any) -> None:
        raise RuntimeError("exporter down")

    monkeypatch.setitem(_obs._sink, "increment", broken)
    monkeypatch.setitem(_obs._sink, "set_gauge", broken)
    breaker = CircuitBreaker("gemini", failure_threshold=1, clock=clock)
    assert await breaker.call(dep) == "ok"
    dep.error = unavailable()
    await fail(breaker, dep, 1)
    with pytest.raises(CircuitOpenError):
        await breaker.call(dep)
    assert breaker.stats()["rejected"] == 1


async def test_keyword_arguments_named_like_hook_parameters_reach_the_call(
    clock: Clock,
) -> None:
    seen: list[dict[str, Any]] = []

    class Before(BreakerListener):
        def before_call(
            self, breaker: CircuitBreaker, func: Any, /, *args: Any, **kwargs: Any
        ) -> None:
            seen.append(kwargs)

    breaker = CircuitBreaker("webhooks", listeners=[Before()], clock=clock)

    async def deliver(*, hook: str, self: str, breaker: str, func: str) -> str:
        return f"{hook}:{self}:{breaker}:{func}"

    answer = await breaker.call(deliver, hook="h", self="s", breaker="b", func="f")
    assert answer == "h:s:b:f"
    assert seen == [{"hook": "h", "self": "s", "breaker": "b", "func": "f"}]


async def test_half_open_admits_no_more_probes_than_configured_in_total(
    clock: Clock, dep: Dependency
) -> None:
    breaker = await half_open_with_two_probes(clock, dep)
    gates = [asyncio.Event(), asyncio.Event()]
    entered = 0

    async def probe(gate: asyncio.Event) -> str:
        nonlocal entered
        entered += 1
        await gate.wait()
        return "ok"

    first = asyncio.ensure_future(breaker.call(probe, gates[0]))
    second = asyncio.ensure_future(breaker.call(probe, gates[1]))
    while entered < 2:
        await asyncio.sleep(0)
    gates[0].set()
    assert await first == "ok"
    assert breaker.state is HALF_OPEN  # one success of the two needed
    with pytest.raises(CircuitOpenError):  # a third probe: more than configured
        await breaker.call(dep)
    gates[1].set()
    assert await second == "ok"
    assert breaker.state is CLOSED
    assert entered == 2
