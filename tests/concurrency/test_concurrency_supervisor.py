"""TaskSupervisor: strong references, failure logs, draining and cancelling on close."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import weakref

import pytest
from concurrency_probe import ManualClock, settle

from sight_core.concurrency import TaskSupervisor


async def test_spawned_tasks_are_kept_until_they_finish() -> None:
    supervisor = TaskSupervisor("bg")
    gate = asyncio.Event()
    done = []

    async def job() -> None:
        await gate.wait()
        done.append(True)

    supervisor.spawn(job(), name="job")  # the returned task is dropped on purpose
    gc.collect()
    await settle()
    assert [t.get_name() for t in supervisor.running] == ["job"]
    assert len(supervisor) == 1
    gate.set()
    await settle()
    assert done == [True]
    assert supervisor.running == frozenset()


async def test_a_task_only_the_supervisor_references_survives_garbage_collection() -> None:
    # the test above cannot show this: its task is also reachable through the Event it waits on
    supervisor = TaskSupervisor("bg")

    async def orphan() -> None:
        await asyncio.get_running_loop().create_future()  # a future nothing else holds

    task = weakref.ref(supervisor.spawn(orphan(), name="orphan"))
    await settle()
    gc.collect()
    alive = task()
    assert alive is not None
    assert not alive.done()
    del alive
    await supervisor.aclose(timeout=0)
    assert supervisor.running == frozenset()


async def test_a_failure_is_logged_with_the_task_name_not_its_arguments(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = TaskSupervisor("bg")

    async def send_prompt(prompt: str) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("upstream refused")

    with caplog.at_level(logging.ERROR, logger="sight_core.concurrency"):
        supervisor.spawn(send_prompt("SECRET persona data"), name="persona-refresh")
        await settle()
    assert supervisor.failures == 1
    [record] = caplog.records
    assert "persona-refresh" in record.getMessage()
    assert "RuntimeError" in record.getMessage()
    assert "SECRET" not in caplog.text
    assert record.exc_info is not None


async def test_default_name_is_the_coroutine_name() -> None:
    supervisor = TaskSupervisor()

    async def nightly_sync() -> None:
        await asyncio.sleep(0)

    task = supervisor.spawn(nightly_sync())
    assert "nightly_sync" in task.get_name()
    await supervisor.aclose()


async def test_aclose_drains_then_cancels_what_is_left(
    caplog: pytest.LogCaptureFixture, clock: ManualClock
) -> None:
    supervisor = TaskSupervisor("bg")
    finished, cancelled = [], []

    async def quick() -> None:
        await settle(2)
        finished.append("quick")

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append("stuck")
            raise

    supervisor.spawn(quick(), name="quick")
    supervisor.spawn(stuck(), name="stuck")
    with caplog.at_level(logging.WARNING, logger="sight_core.concurrency"):
        closing = asyncio.create_task(supervisor.aclose(timeout=0.2))
        await settle()  # the clock stays at 0
        assert finished == ["quick"]  # drained within the timeout
        await clock.advance_to(0.199)
        assert cancelled == []
        assert not closing.done()
        await clock.advance_to(0.2)
        await closing
    assert cancelled == ["stuck"]
    assert supervisor.running == frozenset()
    assert "stuck" in caplog.text
    assert "quick" not in caplog.text


async def test_spawn_after_close_is_refused_and_closes_the_coroutine() -> None:
    supervisor = TaskSupervisor("bg")
    await supervisor.aclose()
    assert supervisor.closed

    async def job() -> None: ...

    coro = job()
    with pytest.raises(RuntimeError, match="closed"):
        supervisor.spawn(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited"


async def test_spawn_rejects_a_non_coroutine() -> None:
    with pytest.raises(TypeError, match="coro"):
        TaskSupervisor().spawn(asyncio.sleep)  # type: ignore[arg-type]


async def test_context_manager_drains_on_a_clean_exit() -> None:
    finished = []

    async def job() -> None:
        await settle(3)
        finished.append(True)

    async with TaskSupervisor("bg") as supervisor:
        supervisor.spawn(job(), name="job")
    assert finished == [True]


async def test_context_manager_cancels_at_once_when_the_body_raises() -> None:
    cancelled = []

    async def job() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    supervisor = TaskSupervisor("bg", close_timeout=None)

    async def body() -> None:
        async with supervisor:
            supervisor.spawn(job(), name="job")
            await settle()
            raise KeyError("body failed")

    with pytest.raises(KeyError):
        await body()
    assert cancelled == [True]
    assert supervisor.running == frozenset()


async def test_cancelling_aclose_cancels_every_task() -> None:
    supervisor = TaskSupervisor("bg")
    for i in range(3):
        supervisor.spawn(asyncio.Event().wait(), name=f"wait-{i}")
    closer = asyncio.create_task(supervisor.aclose(timeout=None))
    await settle()
    closer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closer
    assert supervisor.running == frozenset()


def test_bad_timeouts_name_themselves() -> None:
    with pytest.raises(ValueError, match="close_timeout"):
        TaskSupervisor(close_timeout=-1)
