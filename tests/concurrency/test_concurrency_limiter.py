"""Limiter: the cap, observability, FIFO, cancellation safety, the start-rate bucket."""

from __future__ import annotations

import asyncio

import pytest
from concurrency_probe import ManualClock, settle

from sight_core.concurrency import Limiter
from sight_core.errors import ConfigurationError


async def test_caps_holders_and_reports_in_flight_and_waiting() -> None:
    limiter = Limiter("db", 3)
    gate = asyncio.Event()
    peak = 0

    async def use() -> None:
        nonlocal peak
        async with limiter:
            peak = max(peak, limiter.in_flight)
            await gate.wait()

    tasks = [asyncio.create_task(use()) for _ in range(5)]
    await settle()
    assert (limiter.in_flight, limiter.waiting) == (3, 2)
    assert limiter.locked()
    gate.set()
    await asyncio.gather(*tasks)
    assert (limiter.in_flight, limiter.waiting, peak) == (0, 0, 3)
    assert not limiter.locked()


async def test_waiters_are_served_first_come_first_served() -> None:
    limiter = Limiter("fifo", 1)
    order: list[int] = []
    await limiter.acquire()

    async def use(i: int) -> None:
        async with limiter:
            order.append(i)

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(use(i)))
        await settle(2)
    limiter.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]


async def test_a_cancelled_waiter_leaks_nothing() -> None:
    limiter = Limiter("c", 1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    other = asyncio.create_task(limiter.acquire())
    await settle()
    assert limiter.waiting == 2
    waiter.cancel()
    await settle()
    assert limiter.waiting == 1
    limiter.release()
    await other
    assert (limiter.in_flight, limiter.waiting) == (1, 0)
    limiter.release()
    assert (limiter.in_flight, limiter.waiting) == (0, 0)
    assert waiter.cancelled()


async def test_cancelled_after_the_slot_was_handed_over_gives_it_back() -> None:
    limiter = Limiter("handoff", 1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await settle()
    limiter.release()  # hands the slot to waiter ...
    waiter.cancel()  # ... which is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (limiter.in_flight, limiter.waiting) == (0, 0)
    await asyncio.wait_for(limiter.acquire(), 1)  # the slot is free again
    assert limiter.in_flight == 1


async def test_release_without_acquire_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="released more times"):
        Limiter("x", 1).release()


async def test_rate_limit_lets_a_burst_start_then_spaces_the_rest(clock: ManualClock) -> None:
    limiter = Limiter("quota", 100, per_second=20, burst=3)
    started = 0

    async def start() -> None:
        nonlocal started
        await limiter.acquire()
        started += 1

    tasks = [asyncio.create_task(start()) for _ in range(6)]
    await settle()
    assert started == 3  # the burst started at once
    assert limiter.waiting == 3
    # then one start every 1/20 s: never earlier, and a late one does not push the rest back
    for k in (1, 2, 3):
        await clock.advance_to(k / 20 - 0.001)
        assert started == 2 + k
        await clock.advance_to(k / 20 + 0.001)
        assert started == 3 + k
    await asyncio.gather(*tasks)
    assert (limiter.in_flight, limiter.waiting) == (6, 0)


async def test_rate_limit_without_burst_starts_one_at_a_time(clock: ManualClock) -> None:
    limiter = Limiter("quota", 10, per_second=1)
    tasks = [asyncio.create_task(limiter.acquire()) for _ in range(3)]
    await settle(3)
    assert (limiter.in_flight, limiter.waiting) == (1, 2)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert (limiter.in_flight, limiter.waiting) == (1, 0)  # cancelled waiters gave slots back


async def test_a_waiter_cancelled_before_its_start_gives_its_start_back(
    clock: ManualClock,
) -> None:
    limiter = Limiter("quota", 10, per_second=1)
    await limiter.acquire()  # starts at 0
    given_up = asyncio.create_task(limiter.acquire())  # due at 1
    await settle()
    given_up.cancel()
    await asyncio.gather(given_up, return_exceptions=True)
    late = asyncio.create_task(limiter.acquire())  # takes the start at 1, not 2
    await clock.advance_to(1.001)
    assert late.done()
    assert (limiter.in_flight, limiter.waiting) == (2, 0)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"limit": 0}, ConfigurationError, "limit"),
        ({"limit": "2"}, TypeError, "limit"),
        ({"limit": 2, "per_second": 0}, ConfigurationError, "per_second"),
        ({"limit": 2, "per_second": -1.5}, ConfigurationError, "per_second"),
        ({"limit": 2, "per_second": float("nan")}, ConfigurationError, "per_second"),
        ({"limit": 2, "per_second": 5, "burst": 0}, ConfigurationError, "burst"),
    ],
)
def test_bad_arguments_name_themselves(
    kwargs: dict[str, object], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        Limiter("x", **kwargs)  # type: ignore[arg-type]


def test_can_be_created_outside_a_running_loop() -> None:
    limiter = Limiter("import-time", 2, per_second=10, burst=2)
    assert "import-time" in repr(limiter)
    assert (limiter.in_flight, limiter.waiting) == (0, 0)
