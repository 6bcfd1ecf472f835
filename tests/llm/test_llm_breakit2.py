"""Adversarial checks, round 2: the shared deadline timer, sinks handed across loops, threads,
fallbacks under a deadline, token and price accounting, a black-holed Redis.

Everything goes through the real langchain-google-genai SDK against the local fake Gemini
(tests/llm/llm_gemini_server.py). Each test asserts counts: requests, records, tokens, dollars.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from llm_gemini_server import FakeGeminiServer, Reply
from pydantic import BaseModel
from redis.asyncio import Redis
from test_llm_resilience_trust import FLASH, PRO, models

from sight_core.errors import (
    BudgetExceededError,
    ConfigurationError,
    ContentBlockedError,
    DeadlineExceededError,
)
from sight_core.llm import (
    ResilientChatModel,
    UsageRecord,
    add_usage_sink,
    build_chat_model,
    clear_model_cache,
    remove_usage_sink,
    usage_scope,
)
from sight_core.llm._usage import cost_of
from sight_core.resilience import RedisBreakerStore, RetryPolicy
from sight_core.resilience._expiry import COARSE_FROM
from sight_core.settings import LLMSettings
from sight_core.testing import FaultProxy

# ---------------------------------------------------------------- the shared deadline timer


async def test_many_deadlines_either_side_of_the_coarse_limit_are_each_kept(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    """Sixteen concurrent calls, eight deadlines (below and above ``COARSE_FROM``, some sharing
    a slice), every request answered after 1.2 s: a call whose deadline is shorter fails with
    ``DeadlineExceededError`` no earlier than its deadline; a longer one gets its answer."""
    gemini.default = Reply.text(delay=1.2)
    deadlines = [0.4, 0.9, 0.999, COARSE_FROM, 1.0005, 3.0, 3.0004, 4.5]

    def model_with(deadline: float) -> ResilientChatModel:
        settings = google_settings.model_copy(update={"deadline": deadline, "max_attempts": 1})
        return build_chat_model("flash", settings=settings)

    async def call(deadline: float, llm: ResilientChatModel) -> tuple[float, float, str]:
        started = time.monotonic()
        try:
            await llm.ainvoke("hello")
            outcome = "ok"
        except DeadlineExceededError:
            outcome = "deadline"
        return deadline, time.monotonic() - started, outcome

    built = [(d, model_with(d)) for d in deadlines for _ in range(2)]  # building blocks the loop
    results = await asyncio.gather(*(call(d, llm) for d, llm in built))
    for deadline, took, outcome in results:
        if deadline < 1.2:
            assert outcome == "deadline", (deadline, took)
            assert deadline * 0.999 <= took < deadline + 1.0, (deadline, took)
        else:
            assert outcome == "ok", (deadline, took)
    assert 6 <= gemini.count <= 16  # a request cut by a short deadline may never be sent


async def test_external_cancel_of_a_long_deadline_call_is_a_cancel_not_a_deadline(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    """Cancelling a call that waits under a coarse (shared-timer) deadline propagates
    ``CancelledError``; the same task's next call under the same bucket is not hit by the
    first one's left-over timer."""
    settings = google_settings.model_copy(update={"deadline": 1.5, "max_attempts": 1})
    llm = build_chat_model("flash", settings=settings)
    gemini.push(Reply.text(delay=3.0))

    async def caller() -> str:
        inner = asyncio.ensure_future(llm.ainvoke("first"))
        await asyncio.sleep(0.3)
        inner.cancel()
        with pytest_raises_cancelled():
            await inner
        # the first call's bucket fires ~1.2 s from now: this call must survive it
        answer = await llm.ainvoke("second")  # default reply: immediate
        await asyncio.sleep(1.5)  # past the first call's bucket
        return answer.text

    assert await asyncio.wait_for(caller(), timeout=10) == "Hello from fake Gemini."
    assert gemini.count == 2


class pytest_raises_cancelled:  # reads like pytest.raises at the call site
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> bool:
        assert kind is asyncio.CancelledError, kind
        return True


async def test_a_short_deadline_firing_while_the_fallback_runs_ends_the_call(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    """Deadline 0.8 s (an exact timer, under ``COARSE_FROM``): Pro fails after 0.3 s, Flash
    hangs; the call ends at the deadline with one error record naming Flash."""
    settings = google_settings.model_copy(
        update={"deadline": 0.8, "timeout": 30.0, "max_attempts": 1}
    )
    unavailable = Reply.unavailable()
    gemini.answer(PRO, Reply(status=503, body=unavailable.body, delay=0.3))
    gemini.answer(FLASH, Reply.slow(5.0))
    llm = build_chat_model("pro", settings=settings)
    started = time.monotonic()
    async with usage_scope() as usage:
        with pytest.raises(DeadlineExceededError):
            await llm.ainvoke("hello")
    took = time.monotonic() - started
    assert 0.79 <= took < 2.0
    assert models(gemini) == [PRO, FLASH]
    [record] = usage.records
    assert record.outcome == "error" and record.requested_model == PRO


# ---------------------------------------------------------------- threads, loops, scopes


async def test_sync_calls_from_threads_and_async_calls_share_one_scope_exactly(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    """8 threads x 5 ``invoke`` plus 20 ``ainvoke`` at once, all inside one scope: 60
    requests, 60 records, tokens summed exactly, nothing lost."""
    gemini.default = Reply.text(prompt_tokens=100, output_tokens=7, delay=0.02)
    llm = build_chat_model("flash", settings=google_settings)

    def worker() -> int:
        return sum(1 for _ in range(5) if llm.invoke("sync").text)

    async with usage_scope(job="mixed") as usage:
        results = await asyncio.gather(
            *(asyncio.to_thread(worker) for _ in range(8)),
            *(llm.ainvoke("async") for _ in range(20)),
        )
    assert sum(r for r in results if isinstance(r, int)) == 40
    assert gemini.count == 60
    assert usage.calls == 60
    assert (usage.input_tokens, usage.output_tokens) == (6000, 420)


class _Collect:
    def __init__(self) -> None:
        self.seen: list[UsageRecord] = []

    async def __call__(self, record: UsageRecord) -> None:
        await asyncio.sleep(0)
        self.seen.append(record)


def test_async_sink_of_a_stopped_loop_still_gets_the_sync_calls_record(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    """A script sets up on a loop it keeps (``loop.run_until_complete(setup())``, the loop
    stopped but not closed), then calls ``invoke``: the sink must get the record. Handing it
    to a loop that is not running leaves it there, never awaited."""
    sink = _Collect()

    async def setup() -> None:
        add_usage_sink(sink)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(setup())
        llm = build_chat_model("flash", settings=google_settings)
        llm.invoke("hello")
        assert [r.outcome for r in sink.seen] == ["ok"]
    finally:
        remove_usage_sink(sink)
        loop.close()


def test_sync_stream_abandoned_in_a_thread_records_once_incomplete(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.push(Reply.stream("one ", "two ", "three ", "four", chunk_delay=0.05))
    llm = build_chat_model("flash", settings=google_settings)
    records: list[UsageRecord] = []
    add_usage_sink(records.append)
    try:

        def consume() -> None:
            stream = llm.stream("count")
            assert next(stream).text == "one "
            stream.close()

        thread = threading.Thread(target=consume)
        thread.start()
        thread.join(10)
        assert not thread.is_alive()
    finally:
        remove_usage_sink(records.append)
    [record] = records
    assert record.outcome == "incomplete"
    assert record.input_tokens == 12 and record.output_tokens >= 1


# ---------------------------------------------------------------- tokens and money


async def test_thinking_tokens_are_billed_as_output(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.push(Reply.text(prompt_tokens=1000, output_tokens=50, thoughts_tokens=400))
    llm = build_chat_model("flash", settings=google_settings)
    async with usage_scope() as usage:
        await llm.ainvoke("think")
    [record] = usage.records
    assert (record.input_tokens, record.output_tokens, record.reasoning_tokens) == (
        1000,
        450,
        400,
    )
    price = google_settings.prices[FLASH]
    assert record.cost_usd == pytest.approx(cost_of(price, 1000, 450))


@pytest.mark.parametrize(("prompt", "long_rate"), [(200_000, False), (200_001, True)])
async def test_pro_tier_boundary_through_the_sdk_with_cached_tokens(
    gemini: FakeGeminiServer, google_settings: LLMSettings, prompt: int, long_rate: bool
) -> None:
    gemini.push(
        Reply.text(prompt_tokens=prompt, output_tokens=1000, cached_tokens=150_000, model=PRO)
    )
    llm = build_chat_model("pro", settings=google_settings)
    async with usage_scope() as usage:
        await llm.ainvoke("long")
    [record] = usage.records
    rate_in, rate_cached, rate_out = (2.50, 0.625, 15.0) if long_rate else (1.25, 0.31, 10.0)
    expected = ((prompt - 150_000) * rate_in + 150_000 * rate_cached + 1000 * rate_out) / 1e6
    assert record.cached_tokens == 150_000
    assert record.cost_usd == pytest.approx(expected)


async def test_429_with_retry_info_then_answer_counts_one_billed_answer(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.push(Reply.rate_limited("0.2s"), Reply.unavailable(), Reply.text(prompt_tokens=30))
    llm = build_chat_model("flash", settings=google_settings)
    async with usage_scope() as usage:
        assert (await llm.ainvoke("hi")).text
    assert gemini.count == 3
    [record] = usage.records
    assert (record.attempts, record.failed_attempts, record.input_tokens) == (3, 2, 30)


async def test_a_200_body_without_candidates_is_an_error_not_an_empty_answer(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    """A 200 whose body has no candidates and no usage: the call raises (today as an empty
    answer, ``ContentBlockedError``, not retried), with one error record of 0 tokens; it never
    returns an empty message as if it were an answer."""
    gemini.push(Reply(body={"unexpected": True}), Reply.text("fine"))
    llm = build_chat_model("flash", settings=google_settings)
    async with usage_scope() as usage:
        with pytest.raises(ContentBlockedError, match="empty answer"):
            await llm.ainvoke("hi")
    assert gemini.count == 1
    [record] = usage.records
    assert (record.outcome, record.input_tokens, record.output_tokens) == ("error", 0, 0)


class Person(BaseModel):
    name: str
    age: int


async def test_structured_output_that_fails_validation_is_billed_for_every_request(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    """The model answers JSON that does not validate, then again after the repair prompt:
    the call raises, and every paid request is in the scope's totals."""
    bad = Reply.text('{"name": "Ada", "age": "old"}', prompt_tokens=40, output_tokens=9)
    gemini.default = bad
    llm = build_chat_model("flash", settings=google_settings)
    async with usage_scope() as usage:
        with pytest.raises(Exception):  # noqa: B017 - which error is not the point
            await llm.with_structured_output(Person).ainvoke("who?")
    assert gemini.count >= 1
    assert usage.input_tokens == 40 * gemini.count
    assert usage.output_tokens == 9 * gemini.count


# ---------------------------------------------------------------- Redis black-holed mid-call


async def test_redis_black_holed_mid_burst_still_answers_every_call(
    gemini: FakeGeminiServer,
    google_settings: LLMSettings,
    redis_url: str,
    fault_proxy: Callable[[str], FaultProxy],
) -> None:
    """A shared breaker whose Redis stops answering (packets swallowed) while 30 calls are in
    flight: every call is answered, each request is made once, and no call waits much past
    the store's op timeout per operation."""
    proxy = fault_proxy(redis_url)
    client = Redis.from_url(proxy.url_for(redis_url))
    store = RedisBreakerStore(client, op_timeout=0.3)
    gemini.default = Reply.text(delay=0.3)
    settings = google_settings.model_copy(update={"deadline": 10.0})
    try:
        llm = build_chat_model("pro", settings=settings, breaker_store=store)
        assert (await llm.ainvoke("warm")).text

        async def black_hole_soon() -> None:
            await asyncio.sleep(0.1)
            proxy.blackhole()

        started = time.monotonic()
        _, *answers = await asyncio.gather(
            black_hole_soon(), *(llm.ainvoke(f"q{i}") for i in range(30))
        )
        assert len(answers) == 30 and all(a.text for a in answers)
        assert gemini.count == 31
        assert time.monotonic() - started < 5.0
    finally:
        proxy.restore()
        await client.aclose()


# ---------------------------------------------------------------- more threads and loops


async def test_sync_calls_inside_a_running_loop(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    """``invoke`` and ``stream`` on the loop's own thread are refused before any request
    (they would block the loop they need); ``batch`` runs its items on LangChain's worker
    threads, so it answers every item (blocking the loop meanwhile), each request made once."""
    llm = build_chat_model("flash", settings=google_settings)
    with pytest.raises(ConfigurationError):
        llm.invoke("a")
    with pytest.raises(ConfigurationError):
        next(iter(llm.stream("a")))
    assert gemini.count == 0
    answers = llm.batch(["a", "b", "c"])
    assert [a.text for a in answers] == ["Hello from fake Gemini."] * 3
    assert gemini.count == 3


@pytest.mark.xfail(
    strict=True,
    reason="a sync call hands an async sink's record to the sink's loop without waiting (docs/"
    "usage.md 'Where a sink runs'); asyncio.run() then cancels the sink's task at shutdown and "
    "the record of a paid call never reaches it. Waiting for the hand-over would deadlock "
    "batch() called on that loop's thread; needs a flush-at-shutdown design, not a local fix.",
)
def test_a_handed_over_sink_record_survives_the_end_of_asyncio_run(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    """``asyncio.run(main())``: main registers an async sink, makes a sync call in a thread
    and returns at once. The record handed to main's loop must reach the sink before the
    loop is torn down (``asyncio.run`` cancels what is left: the record of a paid call)."""
    seen: list[UsageRecord] = []

    async def sink(record: UsageRecord) -> None:
        await asyncio.sleep(0.05)  # a real sink awaits its database here
        seen.append(record)

    llm = build_chat_model("flash", settings=google_settings)

    async def main() -> None:
        add_usage_sink(sink)
        await asyncio.to_thread(llm.invoke, "hello")

    try:
        asyncio.run(main())
    finally:
        remove_usage_sink(sink)
    assert [r.outcome for r in seen] == ["ok"]


# ---------------------------------------------------------------- the breaker counter at export


async def test_breaker_call_counter_never_goes_down_when_a_model_is_rebuilt(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    """``sight_breaker_calls_total`` is a counter: when a model (and its breaker) is dropped
    and built again, Prometheus must not see it fall (a fall reads as a process restart)."""
    import gc

    from sight_core import observability

    settings = google_settings.model_copy(update={"flash_model": "gemini-2.5-flash"})

    def calls() -> float:
        return observability.snapshot().counter(
            "sight_breaker_calls_total",
            name=build_chat_model("flash", settings=settings).breaker.name,
        )

    llm = build_chat_model("flash", settings=settings)
    before = calls()
    for _ in range(3):
        await llm.ainvoke("hello")
    assert calls() == before + 3
    del llm
    clear_model_cache()
    gc.collect()
    await build_chat_model("flash", settings=settings).ainvoke("again")
    assert calls() >= before + 4


async def test_a_cooldown_in_redis_holds_when_redis_is_black_holed_and_when_it_is_back(
    gemini: FakeGeminiServer,
    google_settings: LLMSettings,
    redis_url: str,
    fault_proxy: Callable[[str], FaultProxy],
) -> None:
    """Pro said "retry in 600 s": its cooldown is in Redis. Redis then swallows every packet:
    20 concurrent calls are all answered by Flash and none reaches Pro (the local state kept
    the cooldown); Redis comes back: still none reaches Pro."""
    proxy = fault_proxy(redis_url)
    client = Redis.from_url(proxy.url_for(redis_url))
    store = RedisBreakerStore(client, op_timeout=0.3)
    gemini.answer(PRO, Reply.rate_limited("600s"))
    try:
        llm = build_chat_model("pro", settings=google_settings, breaker_store=store)
        assert (await llm.ainvoke("first")).text
        assert models(gemini) == [PRO, FLASH]
        proxy.blackhole()
        started = time.monotonic()
        answers = await asyncio.gather(*(llm.ainvoke(f"q{i}") for i in range(20)))
        assert all(a.text for a in answers)
        assert time.monotonic() - started < 5.0
        proxy.restore()
        answers = await asyncio.gather(*(llm.ainvoke(f"r{i}") for i in range(20)))
        assert all(a.text for a in answers)
        assert models(gemini).count(PRO) == 1
        assert models(gemini).count(FLASH) == 41
    finally:
        proxy.restore()
        await client.aclose()


async def test_a_spent_budget_refuses_the_stream_and_the_structured_repair_request(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    """``budget_tokens=30``: a structured call whose first answer (49 tokens) does not
    validate must not send its repair request, and a stream after it is refused before any
    request."""
    gemini.default = Reply.text('{"name": "Ada", "age": "old"}', prompt_tokens=40, output_tokens=9)
    llm = build_chat_model("flash", settings=google_settings)
    async with usage_scope(budget_tokens=30) as usage:
        with pytest.raises(BudgetExceededError):
            await llm.with_structured_output(Person).ainvoke("who?")
        assert gemini.count == 1
        with pytest.raises(BudgetExceededError):
            async for _ in llm.astream("more"):
                pass
    assert gemini.count == 1
    assert usage.input_tokens == 40


async def test_an_infinite_deadline_is_no_deadline_not_an_overflow(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    """``SIGHT_LLM__DEADLINE=inf`` passes validation (``gt=0``) and meant "no limit" with
    ``asyncio.timeout``; the shared timer computed ``ceil(inf)`` and every call failed with
    ``OverflowError`` before any request."""
    settings = google_settings.model_copy(update={"deadline": float("inf")})
    llm = build_chat_model("pro", settings=settings)
    gemini.push(Reply.unavailable())  # a retry and its backoff under the infinite deadline
    assert (await llm.ainvoke("hi")).text == "Hello from fake Gemini."
    assert models(gemini) == [PRO, PRO]

    async def answer() -> int:
        return 1

    policy = RetryPolicy(deadline=float("inf"), attempt_timeout=float("inf"))
    assert await policy.call(answer) == 1


def test_sync_calls_cut_by_the_deadline_keep_their_slot_while_the_request_runs(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    """Sync calls use the SDK's sync client in a worker thread, which a deadline cannot stop:
    the request goes on after ``DeadlineExceededError``. The concurrency cap (2) must count
    it until it ends, or the next calls put 4 requests in flight."""
    settings = google_settings.model_copy(
        update={"deadline": 0.5, "max_attempts": 1, "flash_concurrency": 2, "timeout": 10.0}
    )
    gemini.push(Reply.slow(2.0), Reply.slow(2.0))
    llm = build_chat_model("flash", settings=settings)

    def call() -> str:
        try:
            return llm.invoke("hi").text
        except DeadlineExceededError:
            return "deadline"

    first = [threading.Thread(target=call) for _ in range(2)]
    for thread in first:
        thread.start()
    for thread in first:
        thread.join(10)
    assert gemini.count == 2  # both cut by the deadline, their requests still running
    later = [threading.Thread(target=call) for _ in range(2)]
    for thread in later:
        thread.start()
    for thread in later:
        thread.join(10)
    time.sleep(2.0)  # let the first two requests end
    assert gemini.max_in_flight <= 2


@pytest.mark.xfail(
    strict=True,
    reason="a sync request cut by the deadline goes on in its thread and its answer (billed) "
    "arrives after the call raised; the error record has 0 tokens and nothing accounts the late "
    "answer. Needs a 'late answer' record (outcome and scope rules), not a local fix.",
)
async def test_the_tokens_of_a_sync_answer_that_arrives_after_the_deadline_are_counted(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    settings = google_settings.model_copy(
        update={"deadline": 0.5, "max_attempts": 1, "timeout": 10.0}
    )
    gemini.push(Reply.text(prompt_tokens=100, output_tokens=20, delay=1.0))
    llm = build_chat_model("flash", settings=settings)
    async with usage_scope() as usage:
        with pytest.raises(DeadlineExceededError):
            await asyncio.to_thread(llm.invoke, "hi")
        await asyncio.sleep(1.5)  # the request's answer has arrived in its thread
    assert gemini.count == 1
    assert (usage.input_tokens, usage.output_tokens) == (100, 20)
