"""map_limited: completion/input order, bound, laziness, early exit, errors, validation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from concurrency_probe import Boom, Probe, settle

from sight_core.concurrency import Limiter, map_limited
from sight_core.errors import ConfigurationError


async def test_yields_in_completion_order(probe: Probe) -> None:
    async def fn(i: int) -> int:
        return await probe.work(i, yields=10 - i)

    pairs = [pair async for pair in map_limited(fn, range(10), limit=10)]
    assert [item for item, _ in pairs] == list(reversed(range(10)))
    assert all(item == result for item, result in pairs)


async def test_ordered_yields_in_input_order(probe: Probe) -> None:
    async def fn(i: int) -> int:
        return await probe.work(i, yields=10 - i)

    pairs = [pair async for pair in map_limited(fn, range(10), limit=4, ordered=True)]
    assert pairs == [(i, i) for i in range(10)]
    assert probe.peak == 4


@pytest.mark.parametrize("ordered", [False, True])
async def test_in_flight_never_exceeds_the_limit(probe: Probe, ordered: bool) -> None:
    async def fn(i: int) -> int:
        return await probe.work(i, yields=1 + i % 4)

    pairs = [p async for p in map_limited(fn, range(40), limit=6, ordered=ordered)]
    assert sorted(pairs) == [(i, i) for i in range(40)]
    assert probe.peak == 6


async def test_a_slow_consumer_bounds_how_far_the_source_is_pulled(probe: Probe) -> None:
    pulled = 0
    consumed = 0
    max_ahead = 0

    def items() -> Any:
        nonlocal pulled, max_ahead
        for i in range(50):
            pulled += 1
            max_ahead = max(max_ahead, pulled - consumed)
            yield i

    async for _ in map_limited(probe.work, items(), limit=5):
        consumed += 1
        await settle(3)
    assert consumed == 50
    assert max_ahead <= 6  # limit in flight or unconsumed, plus the refill before the yield


async def test_async_iterable_items(probe: Probe) -> None:
    async def items() -> AsyncIterator[int]:
        for i in range(12):
            yield i

    pairs = [p async for p in map_limited(probe.work, items(), limit=3, ordered=True)]
    assert pairs == [(i, i) for i in range(12)]
    assert probe.peak == 3


async def test_leaving_early_with_aclosing_cancels_the_rest_at_once(probe: Probe) -> None:
    never = asyncio.Event()

    async def fn(i: int) -> int:
        return await probe.work(i, yields=1, wait=None if i == 0 else never)

    async with contextlib.aclosing(map_limited(fn, range(100), limit=5)) as results:
        async for item, _ in results:
            assert item == 0
            break
    assert probe.in_flight == 0
    # item 5 was started by the refill before the yield, then cancelled before it ran
    assert sorted(probe.cancelled) == [1, 2, 3, 4]
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_leaving_early_with_a_plain_break_cancels_the_rest(probe: Probe) -> None:
    never = asyncio.Event()

    async def fn(i: int) -> int:
        return await probe.work(i, yields=1, wait=None if i == 0 else never)

    async for _ in map_limited(fn, range(100), limit=5):
        break
    await settle()  # the dropped iterator is closed by the event loop's asyncgen hook
    assert probe.in_flight == 0
    assert sorted(probe.cancelled) == sorted(probe.started[1:])
    assert len(probe.started) <= 6
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_first_error_cancels_the_rest_and_is_raised(probe: Probe) -> None:
    never = asyncio.Event()

    async def fn(i: int) -> int:
        return await probe.work(i, yields=2, fail=i == 2, wait=None if i == 2 else never)

    seen = []

    async def consume() -> None:
        async for item, _ in map_limited(fn, range(50), limit=4):
            seen.append(item)

    with pytest.raises(Boom) as info:
        await consume()
    assert info.value.args == (2,)
    assert seen == []
    assert sorted(probe.cancelled) == [0, 1, 3]
    assert probe.in_flight == 0


async def test_return_exceptions_yields_them(probe: Probe) -> None:
    async def fn(i: int) -> int:
        return await probe.work(i, fail=i % 2 == 1)

    pairs = [p async for p in map_limited(fn, range(6), limit=3, return_exceptions=True)]
    assert len(pairs) == 6
    for item, result in pairs:
        if item % 2:
            assert isinstance(result, Boom)
        else:
            assert result == item


async def test_cancelling_the_consumer_cancels_every_item(probe: Probe) -> None:
    never = asyncio.Event()

    async def fn(i: int) -> int:
        return await probe.work(i, wait=never)

    async def consume() -> None:
        async for _ in map_limited(fn, range(100), limit=7):
            pass

    task = asyncio.create_task(consume())
    await settle()
    assert probe.in_flight == 7
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert probe.in_flight == 0
    assert len(probe.cancelled) == 7


async def test_shared_limiter_caps_map_and_gather_together(probe: Probe) -> None:
    shared = Limiter("model", 4)

    async def fn(i: int) -> int:
        return await probe.work(i, yields=2)

    async def drain() -> int:
        return len([p async for p in map_limited(fn, range(30), limit=10, limiter=shared)])

    assert list(await asyncio.gather(drain(), drain())) == [30, 30]
    assert probe.peak == 4


async def test_fn_returning_a_non_awaitable_fails_that_item() -> None:
    pairs = [p async for p in map_limited(str, [1], limit=1, return_exceptions=True)]  # type: ignore[arg-type]
    assert isinstance(pairs[0][1], TypeError)


@pytest.mark.parametrize(
    ("fn", "items", "kwargs", "error", "name"),
    [
        (None, [1], {"limit": 2}, TypeError, "fn"),
        (asyncio.sleep, 5, {"limit": 2}, TypeError, "items"),
        (asyncio.sleep, [1], {"limit": 0}, ConfigurationError, "limit"),
        (asyncio.sleep, [1], {"limit": 1.0}, TypeError, "limit"),
        (asyncio.sleep, [1], {}, TypeError, "limit"),
    ],
)
def test_bad_arguments_fail_at_the_call(
    fn: Any, items: Any, kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        map_limited(fn, items, **kwargs)


async def test_a_source_failing_to_close_does_not_hide_the_first_error() -> None:
    def items() -> Any:
        try:
            yield from range(10)
        finally:
            raise RuntimeError("cleanup broke")

    async def fn(i: int) -> int:
        raise Boom(i)

    with pytest.raises(Boom) as caught:
        async for _ in map_limited(fn, items(), limit=2):
            pass
    assert any("RuntimeError: cleanup broke" in note for note in caught.value.__notes__)


async def test_a_result_is_yielded_while_a_slow_async_source_waits_for_its_next_item() -> None:
    arrivals: asyncio.Queue[int | None] = asyncio.Queue()

    async def source() -> AsyncIterator[int]:
        while (item := await arrivals.get()) is not None:
            yield item

    async def fn(item: int) -> int:
        return item * 10

    got: list[int] = []

    async def consume() -> None:
        async for _, result in map_limited(fn, source(), limit=4):
            got.append(result)

    consumer = asyncio.create_task(consume())
    await arrivals.put(1)
    await settle()
    assert got == [10]  # not held back until the source produces again
    await arrivals.put(2)
    await settle()
    assert got == [10, 20]
    await arrivals.put(None)
    await consumer
    assert got == [10, 20]
