"""TaskSupervisor.aclose is bounded even by tasks that ignore cancellation (issue 12 item 11).

Invariant: ``aclose(timeout)`` returns within ``timeout + cancel_timeout``, whatever the tasks
do; a task spawned while the drain runs is drained too, one spawned after it is rejected with a
logged reason.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from concurrency_probe import settle
from hypothesis import given, settings
from hypothesis import strategies as st

from sight_core.concurrency import TaskSupervisor


async def _stubborn(release: asyncio.Event, cancels: list[int]) -> None:
    """Ignores every cancellation until ``release`` is set."""
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancels.append(1)


async def test_aclose_returns_when_a_task_ignores_cancellation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release, cancels = asyncio.Event(), []
    supervisor = TaskSupervisor("bg", cancel_timeout=0.1)
    stubborn = supervisor.spawn(_stubborn(release, cancels), name="stubborn")
    await settle()  # inside its loop: from now on it ignores cancellation
    try:
        with caplog.at_level(logging.WARNING, logger="sight_core.concurrency"):
            start = time.monotonic()
            await asyncio.wait_for(supervisor.aclose(timeout=0.2), 5)  # never returned before
            assert time.monotonic() - start < 0.2 + 0.1 + 2.0
        assert cancels == [1]
        assert "stubborn" in caplog.text and "left behind" in caplog.text
        assert supervisor.running == frozenset({stubborn})  # still referenced, still visible
    finally:
        release.set()
        await stubborn


async def test_an_outer_timeout_bounds_aclose_without_a_timeout() -> None:
    release, cancels = asyncio.Event(), []
    supervisor = TaskSupervisor("bg", cancel_timeout=0.05)
    stubborn = supervisor.spawn(_stubborn(release, cancels), name="stubborn")
    await settle()
    start = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await supervisor.aclose(timeout=None)
        assert time.monotonic() - start < 0.1 + 0.05 + 2.0  # hung forever before
        assert cancels  # the outer cancellation reached the task
    finally:
        release.set()
        await stubborn


async def test_tasks_spawned_by_a_draining_task_are_drained_too() -> None:
    supervisor = TaskSupervisor("bg")
    done: list[str] = []

    async def child() -> None:
        await settle(3)
        done.append("child")

    async def parent() -> None:
        await settle(2)  # aclose has started by now
        supervisor.spawn(child(), name="child")
        done.append("parent")

    supervisor.spawn(parent(), name="parent")
    await supervisor.aclose(timeout=5)
    assert done == ["parent", "child"]
    assert supervisor.running == frozenset()


async def test_a_spawn_after_the_drain_is_rejected_with_a_logged_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = TaskSupervisor("bg", cancel_timeout=1.0)
    outcome: list[str] = []

    async def late_spawner() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:  # cleanup after the drain tries to spawn more work
            try:
                supervisor.spawn(asyncio.sleep(0), name="cleanup-report")
            except RuntimeError as exc:
                outcome.append(str(exc))
            raise

    supervisor.spawn(late_spawner(), name="late")
    await settle()  # it is waiting inside its try block
    with caplog.at_level(logging.WARNING, logger="sight_core.concurrency"):
        await supervisor.aclose(timeout=0)
    assert outcome and "'cleanup-report' rejected" in outcome[0]
    assert "rejected task 'cleanup-report'" in caplog.text


@settings(max_examples=15, deadline=None)
@given(
    plans=st.lists(
        st.tuples(
            st.sampled_from(["finish", "ignore-cancel", "spawn-child"]),
            st.floats(min_value=0, max_value=0.03),
        ),
        max_size=5,
    ),
    timeout=st.floats(min_value=0, max_value=0.03),
    cancel_timeout=st.floats(min_value=0, max_value=0.03),
)
async def test_aclose_is_bounded_whatever_the_tasks_do(
    plans: list[tuple[str, float]], timeout: float, cancel_timeout: float
) -> None:
    supervisor = TaskSupervisor(
        "prop", cancel_timeout=cancel_timeout, logger=logging.getLogger("prop")
    )
    release = asyncio.Event()
    finished: list[str] = []

    async def work(kind: str, seconds: float) -> None:
        if kind == "ignore-cancel":
            await _stubborn(release, [])
            return
        await asyncio.sleep(seconds)
        if kind == "spawn-child":
            try:
                supervisor.spawn(asyncio.sleep(seconds), name="child")
            except RuntimeError:
                finished.append("rejected")
        finished.append(kind)

    spawned = [supervisor.spawn(work(kind, s), name=kind) for kind, s in plans]
    await settle(2)
    start = time.monotonic()
    await supervisor.aclose(timeout=timeout)
    assert time.monotonic() - start < timeout + cancel_timeout + 1.0  # generous: loaded CI
    await settle(3)  # a cancelled task needs a loop turn to end (cancel_timeout may be 0)
    left = supervisor.running
    # only tasks that ignore cancellation may outlive aclose
    assert all(task.get_name() == "ignore-cancel" for task in left)
    assert all(task.done() for task in spawned if task.get_name() != "ignore-cancel")
    release.set()
    await asyncio.gather(*left, return_exceptions=True)
