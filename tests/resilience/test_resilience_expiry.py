"""The deadline's expiry: long limits share one timer per slice of time, never fire early."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sight_core.errors import DeadlineExceededError
from sight_core.resilience import RetryPolicy
from sight_core.resilience._expiry import COARSE_FROM, arm, disarm


@pytest.fixture
async def timers(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays of the timer handles the running loop schedules from now on."""
    loop = asyncio.get_running_loop()
    scheduled: list[float] = []
    call_at = loop.call_at

    def counting(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        scheduled.append(when - loop.time())
        return call_at(when, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counting)
    return scheduled


async def test_long_deadlines_of_many_calls_share_one_timer(timers: list[float]) -> None:
    async def answer() -> str:
        return "ok"

    policy = RetryPolicy(deadline=180.0)
    results = await asyncio.gather(*(policy.call(answer) for _ in range(200)))
    assert results == ["ok"] * 200
    assert len(timers) <= 2  # one per slice of 180/1024 s the arms fell into (not 200)
    assert all(180.0 <= delay <= 180.0 * 1.001 + 0.01 for delay in timers)


async def test_short_limits_keep_their_own_exact_timer(timers: list[float]) -> None:
    async def answer() -> str:
        return "ok"

    for _ in range(3):
        assert await RetryPolicy(deadline=COARSE_FROM / 2).call(answer) == "ok"
    assert len(timers) == 3


async def test_a_coarse_expiry_cancels_never_early_and_at_most_a_slice_late() -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    start = loop.time()
    expiry = arm(task, loop, COARSE_FROM)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(5)
    task.uncancel()
    elapsed = loop.time() - start
    assert expiry.fired
    assert COARSE_FROM <= elapsed < COARSE_FROM + 1.0  # slice: 1/1024 s; the rest is load
    disarm(expiry)  # after firing: a no-op


async def test_a_disarmed_coarse_expiry_never_fires() -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    expiry = arm(task, loop, COARSE_FROM)
    disarm(expiry)
    await asyncio.sleep(COARSE_FROM + 0.05)  # the shared timer fires as a no-op
    assert not expiry.fired
    assert task.cancelling() == 0


async def test_a_coarse_deadline_still_cuts_a_hung_attempt() -> None:
    calls = 0

    async def hangs() -> None:
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()

    with pytest.raises(DeadlineExceededError):
        await asyncio.wait_for(RetryPolicy(deadline=COARSE_FROM).call(hangs), timeout=10)
    assert calls == 1
