"""The sync API (``invoke``, ``stream``, ``batch``) through the real SDK, as correct as async.

Each sync call runs the resilient async path on one long-lived background loop; the provider
request itself goes through the SDK's sync client. The server counts every request, so a lost
("Event loop is closed" after the request was sent) or duplicated answer shows up as a count.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_gemini_server import FakeGeminiServer, Reply

from sight_core.llm import (
    FakeChatModel,
    ResilientChatModel,
    UsageRecord,
    add_usage_sink,
    build_chat_model,
    remove_usage_sink,
    usage_scope,
)
from sight_core.settings import LLMSettings


def _numbered(gemini: FakeGeminiServer, n: int) -> None:
    gemini.push(*(Reply.text(f"answer {i}") for i in range(n)))


def test_100_sequential_invokes_through_the_sdk(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    _numbered(gemini, 100)
    llm = build_chat_model("flash", settings=google_settings)
    answers = [llm.invoke(f"q{i}").text for i in range(100)]
    assert answers == [f"answer {i}" for i in range(100)]
    assert gemini.count == 100  # one request per call: nothing lost, nothing retried


def test_sync_stream_through_the_sdk(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    llm = build_chat_model("flash", settings=google_settings)
    for i in range(10):
        gemini.push(Reply.stream(f"part{i} ", "and ", "more"))
        assert "".join(c.text for c in llm.stream("hi")) == f"part{i} and more"
    assert gemini.count == 10
    assert all(r.stream for r in gemini.requests)


def test_batch_of_50_with_cap_4_through_the_sdk(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    settings = google_settings.model_copy(update={"flash_concurrency": 4})
    gemini.default = Reply.text("batched", delay=0.02)
    llm = build_chat_model("flash", settings=settings)
    records: list[UsageRecord] = []
    add_usage_sink(records.append)
    try:
        answers = llm.batch([f"q{i}" for i in range(50)], config={"max_concurrency": 16})
    finally:
        remove_usage_sink(records.append)
    assert [a.text for a in answers] == ["batched"] * 50
    assert gemini.count == 50
    assert gemini.max_in_flight <= 4  # the cap held
    assert len(records) == 50 and all(r.outcome == "ok" for r in records)
    assert llm.limiter.in_flight == 0


def test_batch_more_items_than_the_cap_does_not_deadlock(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    settings = google_settings.model_copy(update={"flash_concurrency": 2, "deadline": 10.0})
    gemini.default = Reply.text("ok", delay=0.01)
    llm = build_chat_model("flash", settings=settings)
    answers = llm.batch([f"q{i}" for i in range(8)], config={"max_concurrency": 8})
    assert [a.text for a in answers] == ["ok"] * 8
    assert gemini.count == 8


def test_the_cap_holds_across_sync_and_async_callers(fake_settings: LLMSettings) -> None:
    """Sync callers in threads and async callers on their own loop share one cap."""
    settings = fake_settings.model_copy(update={"flash_concurrency": 3, "fake_latency": 0.01})
    llm = build_chat_model("flash", settings=settings)
    fake = llm.primary
    assert isinstance(fake, FakeChatModel)
    results: list[str] = []

    def sync_caller() -> None:
        results.extend(a.text for a in llm.batch(["s"] * 10, config={"max_concurrency": 5}))

    async def async_callers() -> None:
        answers = await asyncio.gather(*(llm.ainvoke("a") for _ in range(20)))
        results.extend(a.text for a in answers)

    threads = [threading.Thread(target=sync_caller) for _ in range(2)]
    for t in threads:
        t.start()
    asyncio.run(async_callers())
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 40
    assert fake.attempts == 40
    assert fake.max_in_flight <= 3
    assert llm.limiter.in_flight == 0


def test_sync_invoke_inside_a_running_loop_is_refused(fake_settings: LLMSettings) -> None:
    llm = build_chat_model("flash", settings=fake_settings)

    async def main() -> None:
        from sight_core.errors import ConfigurationError

        with pytest.raises(ConfigurationError, match="ainvoke"):
            llm.invoke("x")

    asyncio.run(main())


def test_sync_retries_and_falls_back_like_async(fake_settings: LLMSettings) -> None:
    llm = build_chat_model("pro", settings=fake_settings, script=["server_error"] * 4)
    assert isinstance(llm, ResilientChatModel) and llm.fallback is not None
    answer = llm.invoke("hello")
    assert "fake-flash" in answer.text
    assert llm.primary.attempts == 4  # type: ignore[attr-defined]


async def test_shared_limiter_cancelled_waiter_gives_a_granted_slot_back() -> None:
    from sight_core.llm._limit import SharedLimiter

    limiter = SharedLimiter("t", 1)
    await limiter.acquire()
    waiter = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    assert limiter.waiting == 1
    limiter.release()  # the slot passes to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.in_flight == 0 and limiter.waiting == 0
    await limiter.acquire()  # nothing leaked
    limiter.release()


def test_shared_limiter_hands_slots_across_loops() -> None:
    """A slot released on one loop wakes a waiter of another loop (in another thread)."""
    from sight_core.llm._limit import SharedLimiter

    limiter = SharedLimiter("t", 1)
    held = threading.Event()
    order: list[str] = []

    async def holder() -> None:
        await limiter.acquire()
        held.set()
        await asyncio.sleep(0.05)
        order.append("holder done")
        limiter.release()

    async def other() -> None:
        held.wait(5)
        await limiter.acquire()
        order.append("other got it")
        limiter.release()

    thread = threading.Thread(target=lambda: asyncio.run(other()))
    thread.start()
    asyncio.run(holder())
    thread.join(5)
    assert order == ["holder done", "other got it"]
    assert limiter.in_flight == 0


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 4),
    plans=st.lists(
        st.tuples(st.integers(0, 3), st.one_of(st.none(), st.integers(0, 4))),
        min_size=1,
        max_size=12,
    ),
)
def test_shared_limiter_never_exceeds_its_limit_and_leaks_nothing(
    limit: int, plans: list[tuple[int, int | None]]
) -> None:
    """Invariant: at most ``limit`` holders at any time, whatever is cancelled when; once every
    task has ended, nothing is held and nobody waits."""
    from sight_core.llm._limit import SharedLimiter

    limiter = SharedLimiter("t", limit)
    holding = 0
    peak = 0

    async def worker(hold_steps: int) -> None:
        nonlocal holding, peak
        await limiter.acquire()
        try:
            holding += 1
            peak = max(peak, holding)
            assert limiter.in_flight <= limit
            for _ in range(hold_steps):
                await asyncio.sleep(0)
        finally:
            holding -= 1
            limiter.release()

    async def main() -> None:
        tasks = [asyncio.ensure_future(worker(hold)) for hold, _ in plans]
        for step in range(6):
            for task, (_, cancel_at) in zip(tasks, plans, strict=True):
                if cancel_at == step:
                    task.cancel()
            await asyncio.sleep(0)
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    assert peak <= limit
    assert limiter.in_flight == 0 and limiter.waiting == 0


# ------------------------------------------------------------- where usage sinks of sync calls run


class _Where:
    """An async sink noting the loop and thread it runs on, and signalling its loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.arrived = asyncio.Event()
        self.seen: list[tuple[UsageRecord, asyncio.AbstractEventLoop, threading.Thread]] = []

    async def __call__(self, record: UsageRecord) -> None:
        await asyncio.sleep(0)  # a real sink awaits its client here
        self.seen.append((record, asyncio.get_running_loop(), threading.current_thread()))
        self.arrived.set()


async def test_async_scope_sink_of_a_sync_call_runs_on_the_scopes_loop(
    fake_settings: LLMSettings,
) -> None:
    """A scope's async sink belongs to the loop that entered the scope (its clients live
    there): a sync ``invoke`` made from a worker thread inside the scope hands the record to
    that loop instead of awaiting the sink on sight-core's sync loop."""
    llm = build_chat_model("flash", settings=fake_settings)
    sink = _Where()
    async with usage_scope(sink=sink, job="sync-in-thread") as usage:
        answer = await asyncio.to_thread(llm.invoke, "hello")
        await asyncio.wait_for(sink.arrived.wait(), timeout=5)
    assert answer.text
    [(record, loop, thread)] = sink.seen
    assert loop is sink.loop and thread is threading.main_thread()
    assert record.labels == {"job": "sync-in-thread"} and record.outcome == "ok"
    assert usage.calls == 1  # the scope's totals are kept at once, by the call


async def test_async_global_sink_of_a_sync_stream_runs_on_its_loop(
    fake_settings: LLMSettings,
) -> None:
    llm = build_chat_model("flash", settings=fake_settings)
    sink = _Where()
    add_usage_sink(sink)
    try:
        chunks = await asyncio.to_thread(lambda: [c.text for c in llm.stream("hello")])
        await asyncio.wait_for(sink.arrived.wait(), timeout=5)
    finally:
        remove_usage_sink(sink)
    assert "".join(chunks)
    [(record, loop, thread)] = sink.seen
    assert loop is sink.loop and thread is threading.main_thread()
    assert record.outcome == "ok"


def test_async_sink_added_outside_a_loop_is_awaited_before_invoke_returns(
    fake_settings: LLMSettings,
) -> None:
    """A sink registered from sync code has no loop of its own: the sync call awaits it (on
    sight-core's loop thread) before returning, so a script sees its records persisted."""
    seen: list[tuple[UsageRecord, str]] = []

    async def sink(record: UsageRecord) -> None:
        await asyncio.sleep(0)
        seen.append((record, threading.current_thread().name))

    llm = build_chat_model("flash", settings=fake_settings)
    add_usage_sink(sink)
    try:
        llm.invoke("hello")
        assert [(r.outcome, name) for r, name in seen] == [("ok", "sight-llm-loop")]
    finally:
        remove_usage_sink(sink)


def test_async_sink_whose_loop_closed_is_still_awaited_by_the_sync_call(
    fake_settings: LLMSettings,
) -> None:
    """``asyncio.run(setup())`` registered the sink, then the script calls ``invoke``: the
    sink's loop is gone, so the call awaits it itself rather than losing the record."""
    seen: list[UsageRecord] = []

    async def sink(record: UsageRecord) -> None:
        seen.append(record)

    async def setup() -> None:
        add_usage_sink(sink)

    asyncio.run(setup())
    llm = build_chat_model("flash", settings=fake_settings)
    try:
        llm.invoke("hello")
        assert [r.outcome for r in seen] == ["ok"]
    finally:
        remove_usage_sink(sink)


async def test_async_sink_of_an_async_call_on_its_loop_is_awaited_by_the_call(
    fake_settings: LLMSettings,
) -> None:
    llm = build_chat_model("flash", settings=fake_settings)
    sink = _Where()
    async with usage_scope(sink=sink):
        await llm.ainvoke("hello")
        assert len(sink.seen) == 1  # awaited before ainvoke returned, no hand-over
