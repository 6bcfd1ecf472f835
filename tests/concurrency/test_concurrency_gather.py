"""gather_limited: bound, order, laziness, fail-fast, timeouts, cancellation, validation."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import pytest
from concurrency_probe import Boom, ManualClock, Probe, settle

from sight_core.concurrency import Limiter, gather_limited
from sight_core.errors import ConfigurationError


def only_me() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def test_results_in_input_order_whatever_the_completion_order(probe: Probe) -> None:
    # later items finish first
    results = await gather_limited((probe.work(i, yields=20 - i) for i in range(20)), limit=5)
    assert results == list(range(20))
    assert probe.finished != sorted(probe.finished)


@pytest.mark.parametrize(("n", "limit"), [(50, 7), (7, 50), (1, 1), (100, 100)])
async def test_in_flight_reaches_but_never_exceeds_the_limit(
    probe: Probe, n: int, limit: int
) -> None:
    results = await gather_limited(probe.source(n, yields=3), limit=limit)
    assert results == list(range(n))
    assert probe.peak == min(n, limit)
    assert len(probe.started) == n


async def test_generator_is_advanced_only_as_slots_free(probe: Probe) -> None:
    await gather_limited(probe.source(200, yields=2), limit=10)
    assert probe.pulled == 200
    assert probe.max_ahead == 10


async def test_empty_input_returns_empty_list() -> None:
    assert await gather_limited([], limit=3) == []
    assert await gather_limited(iter(()), limit=3) == []


async def test_accepts_callables_futures_and_mixed_awaitables(probe: Probe) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    loop.call_soon(fut.set_result, 2)
    items: list[Awaitable[int] | Callable[[], Awaitable[int]]] = [
        probe.work(0),
        lambda: probe.work(1),
        fut,
        functools.partial(probe.work, 3),
    ]
    assert await gather_limited(items, limit=2) == [0, 1, 2, 3]


async def test_async_iterable_source_is_consumed_lazily(probe: Probe) -> None:
    async def source() -> AsyncIterator[Coroutine[Any, Any, int]]:
        for i in range(30):
            probe.pulled += 1
            probe.max_ahead = max(probe.max_ahead, probe.pulled - len(probe.finished))
            yield probe.work(i, yields=2)

    assert await gather_limited(source(), limit=4) == list(range(30))
    assert probe.peak == 4
    assert probe.max_ahead == 4


async def test_first_error_is_raised_as_itself_and_cancels_the_running(probe: Probe) -> None:
    never = asyncio.Event()
    coros = [probe.work(i, wait=never, fail=False) for i in range(3)]
    coros.insert(1, probe.work(99, yields=2, fail=True))
    unstarted = [probe.work(100 + i) for i in range(5)]
    with pytest.raises(Boom) as info:
        await gather_limited(coros + unstarted, limit=4)
    assert info.value.args == (99,)
    assert sorted(probe.cancelled) == [0, 1, 2]
    assert probe.in_flight == 0
    assert all(inspect.getcoroutinestate(c) == inspect.CORO_CLOSED for c in unstarted)
    assert not any(i >= 100 for i in probe.started)
    assert only_me() == set()


async def test_fail_fast_closes_a_generator_source_without_advancing_it(probe: Probe) -> None:
    source = probe.source(1000, yields=2, fail=True)
    with pytest.raises(Boom):
        await gather_limited(source, limit=5)
    assert probe.pulled == 5
    assert inspect.getgeneratorstate(source) == inspect.GEN_CLOSED  # type: ignore[arg-type]
    assert probe.in_flight == 0


async def test_errors_after_the_first_are_attached_as_notes() -> None:
    async def first() -> None:
        await asyncio.sleep(0)
        raise Boom("first")

    async def fails_while_cancelled() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise KeyError("cleanup failed") from None

    with pytest.raises(Boom) as info:
        await gather_limited([first(), fails_while_cancelled(), fails_while_cancelled()], limit=3)
    notes = info.value.__notes__
    assert len(notes) == 2
    assert all("KeyError" in note and "cleanup failed" in note for note in notes)


async def test_an_item_that_swallows_cancellation_does_not_keep_the_worker_going(
    probe: Probe,
) -> None:
    async def stubborn() -> int:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return -1
        return 0

    async def fail() -> int:
        await asyncio.sleep(0)
        raise Boom

    def source() -> Any:
        yield stubborn()
        yield fail()
        for i in range(10):
            yield probe.work(i)

    with pytest.raises(Boom):
        await gather_limited(source(), limit=2)
    assert probe.started == []


async def test_return_exceptions_fills_slots_and_lets_the_rest_finish(probe: Probe) -> None:
    results = await gather_limited(
        (probe.work(i, yields=2, fail=i % 3 == 0) for i in range(12)),
        limit=4,
        return_exceptions=True,
    )
    assert len(probe.finished) == 12
    assert probe.cancelled == []
    for i, result in enumerate(results):
        if i % 3 == 0:
            assert isinstance(result, Boom)
            assert result.args == (i,)
        else:
            assert result == i


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_source_failing_to_close_does_not_hide_the_first_error(
    probe: Probe, kind: str
) -> None:
    def sync_source() -> Any:
        try:
            yield probe.work(0, fail=True)
            yield probe.work(1)
        finally:
            raise RuntimeError("cleanup broke")

    async def async_source() -> Any:
        try:
            yield probe.work(0, fail=True)
            yield probe.work(1)
        finally:
            raise RuntimeError("cleanup broke")

    source = sync_source() if kind == "sync" else async_source()
    with pytest.raises(Boom) as caught:
        await gather_limited(source, limit=1)
    assert any("RuntimeError: cleanup broke" in note for note in caught.value.__notes__)
    assert probe.started == [0]


async def test_source_that_raises_fails_the_call_even_with_return_exceptions(probe: Probe) -> None:
    never = asyncio.Event()

    def source() -> Any:
        yield probe.work(0, wait=never)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        await gather_limited(source(), limit=3, return_exceptions=True)
    assert probe.cancelled == [0]


async def test_timeout_hits_only_the_slow_item(probe: Probe, clock: ManualClock) -> None:
    never = asyncio.Event()
    items = [probe.work(i, yields=2, wait=never if i == 3 else None) for i in range(8)]
    call = asyncio.create_task(gather_limited(items, limit=4, timeout=0.2, return_exceptions=True))
    await settle()  # every item starts (clock frozen at 0)
    assert sorted(probe.finished) == [0, 1, 2, 4, 5, 6, 7]
    await clock.advance_to(0.199)
    assert not call.done()
    await clock.advance_to(0.2)
    results = await call
    assert isinstance(results[3], TimeoutError)
    assert [r for i, r in enumerate(results) if i != 3] == [0, 1, 2, 4, 5, 6, 7]
    assert probe.cancelled == [3]


async def test_timeout_fail_fast_raises_timeout_error(probe: Probe) -> None:
    never = asyncio.Event()
    with pytest.raises(TimeoutError):
        await gather_limited([probe.work(0, wait=never), probe.work(1)], limit=2, timeout=0.01)
    assert probe.in_flight == 0


async def test_timeout_does_not_trip_fast_items(probe: Probe) -> None:
    assert await gather_limited(probe.source(50), limit=5, timeout=30) == list(range(50))
    assert probe.peak == 5


async def test_cancelling_the_caller_cancels_every_child(probe: Probe) -> None:
    never = asyncio.Event()
    source = probe.source(100, wait=never)
    call = asyncio.create_task(gather_limited(source, limit=6))
    await settle()
    assert probe.in_flight == 6
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert sorted(probe.cancelled) == list(range(6))
    assert probe.in_flight == 0
    assert probe.pulled == 6
    assert inspect.getgeneratorstate(source) == inspect.GEN_CLOSED  # type: ignore[arg-type]
    assert only_me() == set()


async def test_cancelling_the_caller_closes_unstarted_coroutines_of_a_list(probe: Probe) -> None:
    never = asyncio.Event()
    coros = [probe.work(i, wait=never) for i in range(10)]
    call = asyncio.create_task(gather_limited(coros, limit=3))
    await settle()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert all(inspect.getcoroutinestate(c) == inspect.CORO_CLOSED for c in coros)
    assert probe.started == [0, 1, 2]


async def test_a_call_cancelled_before_its_first_step_closes_the_list() -> None:
    # a task cancelled before it ever ran (here: a TaskGroup whose sibling fails at once)
    # never enters the gather coroutine's body; the caller's coroutines must still be closed
    async def item() -> int:
        return 1

    async def boom() -> None:
        raise Boom

    coros = [item() for _ in range(5)]
    with pytest.raises(ExceptionGroup):
        async with asyncio.TaskGroup() as group:
            group.create_task(boom())
            group.create_task(gather_limited(coros, limit=2))
    assert all(inspect.getcoroutinestate(c) == inspect.CORO_CLOSED for c in coros)

    never_awaited = [item() for _ in range(3)]
    gather_limited(never_awaited, limit=2).close()
    assert all(inspect.getcoroutinestate(c) == inspect.CORO_CLOSED for c in never_awaited)


async def test_cancelling_the_caller_of_an_async_source_closes_it(probe: Probe) -> None:
    never = asyncio.Event()
    closed = []

    async def source() -> AsyncIterator[Coroutine[Any, Any, int]]:
        try:
            for i in range(100):
                yield probe.work(i, wait=never)
        finally:
            closed.append(True)

    call = asyncio.create_task(gather_limited(source(), limit=3))
    await settle()
    assert probe.in_flight == 3
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert probe.in_flight == 0
    assert closed == [True]


async def test_two_fan_outs_sharing_a_limiter_stay_under_it_together(probe: Probe) -> None:
    shared = Limiter("gemini-pro", 8)
    await asyncio.gather(
        gather_limited((probe.work(i, yields=3) for i in range(60)), limit=20, limiter=shared),
        gather_limited((probe.work(i, yields=2) for i in range(60)), limiter=shared),
    )
    assert probe.peak == 8
    assert len(probe.finished) == 120
    assert shared.in_flight == 0
    assert shared.waiting == 0


async def test_a_fan_out_waiting_on_its_async_source_holds_no_shared_slot(probe: Probe) -> None:
    shared = Limiter("gemini-pro", 2)
    arrivals: asyncio.Queue[Coroutine[Any, Any, int] | None] = asyncio.Queue()

    async def source() -> AsyncIterator[Coroutine[Any, Any, int]]:
        while (item := await arrivals.get()) is not None:
            yield item

    call = asyncio.create_task(gather_limited(source(), limiter=shared))
    await settle()
    assert (shared.in_flight, shared.waiting) == (0, 0)  # other fan-outs can use both slots
    async with shared:
        await arrivals.put(probe.work(0))
        await arrivals.put(None)
        await settle()
        assert probe.started == [0]
    assert await call == [0]
    assert shared.in_flight == 0


async def test_an_item_pulled_but_waiting_for_the_limiter_is_closed_on_failure() -> None:
    shared = Limiter("db", 2)
    gate = asyncio.Event()

    async def boom() -> int:
        await gate.wait()
        raise Boom

    async def item() -> int:
        return 1

    waiting = item()
    async with shared:  # leaves one slot: boom takes it, the other item waits for it
        call = asyncio.create_task(gather_limited([boom(), waiting], limit=2, limiter=shared))
        await settle()
        assert (shared.in_flight, shared.waiting) == (2, 1)
        gate.set()
        with pytest.raises(Boom):
            await call
    assert inspect.getcoroutinestate(waiting) == inspect.CORO_CLOSED
    assert (shared.in_flight, shared.waiting) == (0, 0)


async def test_limiter_alone_sets_the_number_of_workers(probe: Probe) -> None:
    shared = Limiter("db", 3)
    assert await gather_limited(probe.source(20), limiter=shared) == list(range(20))
    assert probe.peak == 3
    assert probe.max_ahead == 3


async def test_limiter_is_released_when_an_item_fails(probe: Probe) -> None:
    shared = Limiter("db", 2)
    with pytest.raises(Boom):
        await gather_limited(probe.source(10, fail=True), limiter=shared)
    assert shared.in_flight == 0


# validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"limit": 0}, ConfigurationError, "limit"),
        ({"limit": -3}, ConfigurationError, "limit"),
        ({"limit": 2.5}, TypeError, "limit"),
        ({"limit": True}, TypeError, "limit"),
        ({"limit": "4"}, TypeError, "limit"),
        ({}, TypeError, "limit"),
        ({"limit": 2, "timeout": 0}, ConfigurationError, "timeout"),
        ({"limit": 2, "timeout": -1}, ConfigurationError, "timeout"),
        ({"limit": 2, "timeout": "1"}, TypeError, "timeout"),
        ({"limit": 2, "limiter": 5}, TypeError, "limiter"),
    ],
)
def test_bad_arguments_fail_at_the_call_naming_the_argument(
    probe: Probe, kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    coros = [probe.work(0), probe.work(1)]
    with pytest.raises(error, match=name):
        gather_limited(coros, **kwargs)  # type: ignore[unused-coroutine]  # the call raises
    # the coroutines handed over are closed, not left to warn "never awaited"
    assert all(inspect.getcoroutinestate(c) == inspect.CORO_CLOSED for c in coros)


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="limit"):
        gather_limited([], limit=0)  # type: ignore[unused-coroutine]


def test_non_iterable_is_a_type_error_naming_aws() -> None:
    with pytest.raises(TypeError, match="aws"):
        gather_limited(42, limit=2)  # type: ignore[call-overload]


def test_non_awaitable_in_a_collection_fails_at_the_call(probe: Probe) -> None:
    first = probe.work(0)
    with pytest.raises(TypeError, match=r"aws\[1\] is int"):
        gather_limited([first, 7], limit=2)  # type: ignore[arg-type, unused-coroutine]
    assert inspect.getcoroutinestate(first) == inspect.CORO_CLOSED


async def test_non_awaitable_from_a_generator_fails_even_with_return_exceptions(
    probe: Probe,
) -> None:
    def source() -> Any:
        yield probe.work(0, yields=5)
        yield "not awaitable"

    with pytest.raises(TypeError, match=r"aws\[1\] is str"):
        await gather_limited(source(), limit=2, return_exceptions=True)
    assert probe.cancelled == [0]


async def test_callable_returning_a_non_awaitable_fails_that_item() -> None:
    not_async: Any = lambda: 5  # noqa: E731
    results = await gather_limited([not_async], limit=1, return_exceptions=True)
    assert isinstance(results[0], TypeError)
    assert "aws[0]" in str(results[0])
