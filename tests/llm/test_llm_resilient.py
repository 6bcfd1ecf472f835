"""The resilient wrapper on the fake provider: retries, breaker, fallback, cap, content checks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel
from redis.asyncio import Redis

from sight_core.concurrency import Limiter
from sight_core.errors import (
    BudgetExceededError,
    CircuitOpenError,
    ConfigurationError,
    ContentBlockedError,
    ContextOverflowError,
    DeadlineExceededError,
)
from sight_core.llm import (
    FakeChatModel,
    FakeFailure,
    ResilientChatModel,
    build_chat_model,
    check_content,
    usage_scope,
)
from sight_core.resilience import (
    BreakerState,
    CircuitBreaker,
    RetryEvent,
    RetryPolicy,
    circuit_of,
    set_testing,
)
from sight_core.settings import LLMSettings


def wrap(
    fake: FakeChatModel,
    *,
    events: list[RetryEvent] | None = None,
    breaker: CircuitBreaker | None = None,
    fallback: ResilientChatModel | None = None,
    limit: int = 16,
    max_attempts: int = 4,
    deadline: float | None = 60.0,
    attempt_timeout: float | None = None,
) -> ResilientChatModel:
    settings = LLMSettings(provider="fake")
    name = fake.model_name
    return ResilientChatModel(
        fake,
        provider="fake",
        limiter=Limiter(f"test:{name}", limit),
        policy=RetryPolicy(
            name=name,
            max_attempts=max_attempts,
            initial=0.5,
            max_backoff=5.0,
            deadline=deadline,
            max_server_wait=30.0,
            on_retry=[events.append] if events is not None else (),
        ),
        breaker=breaker or CircuitBreaker(f"test:{name}", failure_threshold=3),
        fallback=fallback,
        attempt_timeout=attempt_timeout,
        prices=settings.prices,
    )


async def test_429_twice_then_success_returns_on_attempt_3_with_server_waits() -> None:
    fake = FakeChatModel(model="fake-pro", script=["rate_limit", "rate_limit"], retry_delay=7.0)
    events: list[RetryEvent] = []
    llm = wrap(fake, events=events)
    async with usage_scope(project="p") as usage:
        answer = await llm.ainvoke("hello")
    assert answer.text.startswith("fake-pro answer")
    assert fake.attempts == 3
    assert [e.attempt for e in events] == [1, 2]
    assert all(e.classification.reason == "http_429" for e in events)
    # the server's retryDelay (7 s) beats the backoff window (<= 2 s by attempt 2)
    # jittered upwards only (item 9 of issue 13): never before the server's time
    assert all(7.0 <= e.wait <= 10.5 for e in events)
    assert len(usage.records) == 1
    record = usage.records[0]
    assert (record.model, record.attempts, record.failed_attempts) == ("fake-pro", 3, 2)
    assert record.outcome == "ok"
    price = LLMSettings().prices["fake-pro"]
    expected = (record.input_tokens * price.input + record.output_tokens * price.output) / 1e6
    assert record.cost_usd == pytest.approx(expected)
    assert usage.calls == 1
    assert usage.failed_attempts == 2


async def test_400_is_never_retried() -> None:
    fake = FakeChatModel(script=["bad_request"])
    llm = wrap(fake)
    with pytest.raises(Exception, match="INVALID_ARGUMENT"):
        await llm.ainvoke("hello")
    assert fake.attempts == 1
    assert llm.breaker.stats()["failures"] == 0


async def test_400_never_falls_back() -> None:
    flash = FakeChatModel(model="fake-flash")
    pro = FakeChatModel(model="fake-pro", script=["bad_request"])
    llm = wrap(pro, fallback=wrap(flash))
    with pytest.raises(Exception, match="INVALID_ARGUMENT"):
        await llm.ainvoke("hello")
    assert (pro.attempts, flash.attempts) == (1, 0)


async def test_retry_delay_beyond_deadline_fails_fast_without_sleeping() -> None:
    fake = FakeChatModel(script=[FakeFailure("rate_limit", retry_delay=30.0)])
    waits: list[RetryEvent] = []  # one event per wait, announced before it starts
    llm = wrap(fake, deadline=5.0, events=waits)
    with pytest.raises(DeadlineExceededError):
        await llm.ainvoke("hello")
    assert fake.attempts == 1
    assert waits == []  # no wait, not even a skipped one


async def test_retry_delay_beyond_deadline_falls_back_at_once() -> None:
    flash = FakeChatModel(model="fake-flash")
    pro = FakeChatModel(model="fake-pro", script=[FakeFailure("rate_limit", retry_delay=30.0)])
    waits: list[RetryEvent] = []
    llm = wrap(pro, deadline=5.0, fallback=wrap(flash), events=waits)
    async with usage_scope() as usage:
        answer = await llm.ainvoke("hello")
    assert waits == []
    assert answer.text.startswith("fake-flash")
    assert (pro.attempts, flash.attempts) == (1, 1)
    [record] = usage.records
    assert (record.model, record.requested_model, record.fallback) == (
        "fake-flash",
        "fake-pro",
        True,
    )
    price = LLMSettings().prices["fake-flash"]  # priced as the model that answered
    expected = (record.input_tokens * price.input + record.output_tokens * price.output) / 1e6
    assert record.cost_usd == pytest.approx(expected)


async def test_exhausted_transient_errors_fall_back_to_flash() -> None:
    flash = FakeChatModel(model="fake-flash")
    pro = FakeChatModel(model="fake-pro", failure_rate=1.0, failure="server_error")
    llm = wrap(pro, fallback=wrap(flash), max_attempts=3)
    answer = await llm.ainvoke("hello")
    assert answer.text.startswith("fake-flash")
    assert (pro.attempts, flash.attempts) == (3, 1)


async def test_open_breaker_rejects_without_a_request_and_fast() -> None:
    fake = FakeChatModel(failure_rate=1.0, failure="server_error")
    breaker = CircuitBreaker("test:open", failure_threshold=3, recovery_timeout=60)
    llm = wrap(fake, breaker=breaker, max_attempts=1)
    for _ in range(3):
        with pytest.raises(Exception, match="503"):
            await llm.ainvoke("hello")
    assert breaker.state is BreakerState.OPEN
    before = fake.attempts
    with pytest.raises(CircuitOpenError):
        await llm.ainvoke("hello")
    assert fake.attempts == before  # no request reached the model
    assert breaker.stats()["rejected"] == 1
    assert llm.limiter.in_flight == 0
    # the refusal awaits nothing (no store round trip, no request): it raises on the first
    # step of the coroutine. Its speed (< 1 ms) is measured by benchmarks/llm.py, not here.
    refusal = breaker.call(fake.ainvoke, "hello")
    with pytest.raises(CircuitOpenError):
        refusal.send(None)
    assert fake.attempts == before


async def test_open_breaker_falls_back_to_flash_without_touching_pro() -> None:
    flash = FakeChatModel(model="fake-flash")
    pro = FakeChatModel(model="fake-pro", failure_rate=1.0, failure="server_error")
    breaker = CircuitBreaker("test:pro", failure_threshold=2, recovery_timeout=60)
    llm = wrap(pro, breaker=breaker, fallback=wrap(flash), max_attempts=2)
    await llm.ainvoke("first")  # 2 failures open the circuit, flash answers
    assert breaker.state is BreakerState.OPEN
    assert pro.attempts == 2
    answer = await llm.ainvoke("second")
    assert answer.text.startswith("fake-flash")
    assert pro.attempts == 2
    assert flash.attempts == 2


async def test_half_open_admits_only_the_configured_probes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        "test:half",
        failure_threshold=1,
        recovery_timeout=10,
        half_open_max_calls=2,
        clock=lambda: now[0],
    )
    fake = FakeChatModel(script=["server_error"], latency=3600.0)  # probes stay in flight
    llm = wrap(fake, breaker=breaker, max_attempts=1)
    with pytest.raises(Exception, match="503"):
        await llm.ainvoke("x")
    assert breaker.state is BreakerState.OPEN
    now[0] = 11.0
    calls = [asyncio.create_task(llm.ainvoke(f"p{i}")) for i in range(5)]
    async with asyncio.timeout(30):  # a hang guard, not a measurement
        while sum(c.done() for c in calls) < 3 or fake.in_flight < 2:
            await asyncio.sleep(0)
    rejected = [c for c in calls if c.done() and isinstance(c.exception(), CircuitOpenError)]
    assert len(rejected) == 3
    assert fake.attempts == 1 + 2  # only two probes reached the model
    assert fake.in_flight == 2
    for c in calls:
        c.cancel()  # a cancelled probe is neutral and gives its slot back
    await asyncio.gather(*calls, return_exceptions=True)
    assert breaker.state is BreakerState.HALF_OPEN


async def test_cancelled_call_is_not_a_failure() -> None:
    fake = FakeChatModel(latency=10.0)
    breaker = CircuitBreaker("test:cancel", failure_threshold=1)
    llm = wrap(fake, breaker=breaker)
    task = asyncio.create_task(llm.ainvoke("slow"))
    while fake.in_flight == 0:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is BreakerState.CLOSED
    assert breaker.stats()["failures"] == 0
    assert fake.in_flight == 0
    assert llm.limiter.in_flight == 0


@pytest.mark.parametrize("kind", ["blocked", "empty"])
async def test_blocked_or_empty_answers_raise_and_are_not_retried(kind: str) -> None:
    flash = FakeChatModel(model="fake-flash")
    pro = FakeChatModel(model="fake-pro", script=[kind])  # type: ignore[list-item]
    llm = wrap(pro, fallback=wrap(flash))
    async with usage_scope() as usage:
        with pytest.raises(ContentBlockedError):
            await llm.ainvoke("hello")
    assert (pro.attempts, flash.attempts) == (1, 0)
    assert usage.errors == 1
    assert llm.breaker.stats()["failures"] == 0


async def test_a_blocked_fallback_answer_is_priced_as_the_fallback_and_totalled() -> None:
    flash = FakeChatModel(model="fake-flash", script=["blocked"])
    pro = FakeChatModel(model="fake-pro", script=["server_error"] * 4)
    llm = wrap(pro, fallback=wrap(flash))
    async with usage_scope() as usage:
        with pytest.raises(ContentBlockedError):
            await llm.ainvoke("a prompt that flash answers with a block")
    [record] = usage.records
    assert (record.model, record.requested_model, record.fallback) == (
        "fake-flash",
        "fake-pro",
        True,
    )
    assert record.input_tokens > 0  # Gemini reports (and bills) the blocked prompt's tokens
    price = LLMSettings().prices["fake-flash"]  # flash produced them, not pro
    assert record.cost_usd == pytest.approx(record.input_tokens * price.input / 1e6)
    assert usage.cost_usd == pytest.approx(record.cost_usd)  # the scope totals what it billed
    assert usage.input_tokens == record.input_tokens
    assert (usage.calls, usage.errors) == (0, 1)
    assert usage.by_model["fake-flash"].cost_usd == pytest.approx(record.cost_usd)


async def test_context_overflow_is_not_retried_nor_sent_to_a_same_size_window() -> None:
    flash = FakeChatModel(model="fake-flash")
    pro = FakeChatModel(model="fake-pro", script=["context_overflow"])
    llm = wrap(pro, fallback=wrap(flash))
    with pytest.raises(ContextOverflowError, match="larger context window"):
        await llm.ainvoke("a very long prompt")
    assert (pro.attempts, flash.attempts) == (1, 0)  # flash's window is no larger


async def test_context_overflow_without_fallback_raises_our_error() -> None:
    fake = FakeChatModel(script=["context_overflow"])
    with pytest.raises(ContextOverflowError) as info:
        await wrap(fake).ainvoke("too long")
    assert fake.attempts == 1
    assert info.value.__cause__ is not None


async def test_attempt_timeout_is_transient_and_retried() -> None:
    fake = FakeChatModel(latency=3600.0)
    llm = wrap(fake, attempt_timeout=0.01, max_attempts=2)
    with pytest.raises(TimeoutError):
        await llm.ainvoke("slow")
    assert fake.attempts == 2


async def test_abatch_respects_the_shared_cap() -> None:
    fake = FakeChatModel(latency=0.02)
    llm = wrap(fake, limit=3)
    answers = await llm.abatch([f"q{i}" for i in range(10)], config={"max_concurrency": 10})
    assert len(answers) == 10
    assert fake.max_in_flight == 3


async def test_prompt_pipe_parser_and_structured_output_through_the_wrapper() -> None:
    class Persona(BaseModel):
        name: str
        age: int

    fake = FakeChatModel()
    llm = wrap(fake)
    chain = (
        ChatPromptTemplate.from_messages([("human", "Describe {who}")]) | llm | StrOutputParser()
    )
    text = await chain.ainvoke({"who": "a shopper"})
    assert "Describe a shopper" in text
    persona = await llm.with_structured_output(Persona).ainvoke("make one")
    assert isinstance(persona, Persona)
    via_tools = await llm.with_structured_output(Persona, method="function_calling").ainvoke("x")
    assert isinstance(via_tools, Persona)
    assert fake.attempts == 3


async def test_bind_tools_goes_through_the_wrapper() -> None:
    def lookup(city: str) -> str:
        """Look a city up."""
        return city

    fake = FakeChatModel(script=["rate_limit"])
    llm = wrap(fake)
    message = await llm.bind_tools([lookup], tool_choice="lookup").ainvoke("weather?")
    assert message.tool_calls[0]["name"] == "lookup"
    assert fake.attempts == 2


async def test_astream_retries_only_before_the_first_chunk() -> None:
    fake = FakeChatModel(script=["rate_limit"])
    llm = wrap(fake)
    async with usage_scope() as usage:
        chunks = [c async for c in llm.astream("stream this")]
    assert "".join(c.text for c in chunks).startswith("fake-flash answer")
    assert fake.attempts == 2
    assert usage.calls == 1 and usage.output_tokens > 0
    assert llm.limiter.in_flight == 0

    fake.reset([FakeFailure("server_error", after_chunks=2)])
    seen: list[str] = []
    with pytest.raises(Exception, match="503"):
        async for chunk in llm.astream("stream this"):
            seen.append(chunk.text)
    assert len(seen) == 2
    assert fake.attempts == 1  # not retried after the first chunk
    assert llm.limiter.in_flight == 0


async def test_blocked_stream_raises() -> None:
    fake = FakeChatModel(script=["blocked"])
    with pytest.raises(ContentBlockedError):
        async for _ in wrap(fake).astream("x"):
            pass


async def test_stream_stopped_for_safety_after_text_raises() -> None:
    fake = FakeChatModel(script=[FakeFailure("blocked", after_chunks=2)])
    llm = wrap(fake)
    seen: list[str] = []
    async with usage_scope() as usage:
        with pytest.raises(ContentBlockedError, match="SAFETY"):
            async for chunk in llm.astream("stream this"):
                seen.append(chunk.text)
    assert "".join(seen)  # two chunks of text reached the caller before the block
    assert fake.attempts == 1
    assert (usage.calls, usage.errors) == (0, 1)
    assert llm.limiter.in_flight == 0


async def test_budget_refuses_calls_beyond_it() -> None:
    fake = FakeChatModel(model="fake-pro", responses=["x" * 4000])
    llm = wrap(fake)
    async with usage_scope(budget_usd=0.005) as usage:
        await llm.ainvoke("first")
        assert usage.cost_usd > 0.005
        with pytest.raises(BudgetExceededError):
            await llm.ainvoke("second")
    assert fake.attempts == 1


async def test_factory_caches_and_shares_limiters_and_breakers(fake_settings: LLMSettings) -> None:
    a = build_chat_model("pro", settings=fake_settings)
    assert build_chat_model("pro", settings=fake_settings) is a
    b = build_chat_model("pro", settings=fake_settings, temperature=0.2)
    assert b is not a
    assert b.limiter is a.limiter and b.breaker is a.breaker
    assert a.limiter.limit == fake_settings.pro_concurrency
    assert a.fallback is not None and a.fallback.model_name == "fake-flash"
    assert build_chat_model("flash", settings=fake_settings).fallback is None
    assert isinstance(a.primary, FakeChatModel)
    assert a.primary.timeout == fake_settings.timeout  # the provider enforces it per request
    assert a.policy.max_attempts == fake_settings.max_attempts


async def test_factory_rejects_bad_arguments(fake_settings: LLMSettings) -> None:
    with pytest.raises(ConfigurationError):
        build_chat_model("ultra", settings=fake_settings)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="API key"):
        build_chat_model(settings=LLMSettings(provider="google"))
    with pytest.raises(ConfigurationError, match="max_retries"):
        build_chat_model(settings=LLMSettings(api_key="k"), max_retries=3)  # type: ignore[arg-type]


async def test_fake_fallback_does_not_inherit_the_failure_script(
    fake_settings: LLMSettings,
) -> None:
    llm = build_chat_model("pro", settings=fake_settings, script=["server_error"] * 4)
    answer = await llm.ainvoke("hello")
    assert answer.text.startswith("fake-flash")


async def test_a_burst_of_429s_does_not_open_the_models_breaker(
    fake_settings: LLMSettings,
) -> None:
    settings = fake_settings.model_copy(update={"breaker_failure_threshold": 2})
    llm = build_chat_model(settings=settings, script=["rate_limit"] * 6)
    answers = await asyncio.gather(*(llm.ainvoke(f"q{i}") for i in range(6)))
    assert len(answers) == 6
    assert llm.breaker.state is BreakerState.CLOSED
    assert llm.breaker.stats()["failures"] == 0
    failing = build_chat_model(settings=settings, script=["server_error"] * 2, temperature=0.1)
    with pytest.raises(Exception, match="503") as info:
        await failing.ainvoke("x")  # two 503s count and open it; no 3rd attempt is made
    assert circuit_of(info.value) is not None  # the real error, with the circuit's state
    assert failing.breaker is llm.breaker
    assert llm.breaker.state is BreakerState.OPEN


async def test_breaker_state_shared_through_redis_between_two_workers(
    fake_settings: LLMSettings, redis_client: Redis
) -> None:
    from sight_core.llm import clear_model_cache
    from sight_core.resilience import RedisBreakerStore

    settings = fake_settings.model_copy(update={"max_attempts": 1, "breaker_failure_threshold": 2})

    def worker(**overrides: Any) -> ResilientChatModel:
        clear_model_cache()  # a fresh breaker object, as in another process
        return build_chat_model(
            settings=settings, breaker_store=RedisBreakerStore(redis_client), **overrides
        )

    failing = worker(failure_rate=1.0, failure="server_error")
    for _ in range(2):
        with pytest.raises(Exception, match="503"):
            await failing.ainvoke("x")
    other = worker()
    assert other.breaker is not failing.breaker
    with pytest.raises(CircuitOpenError):
        await other.ainvoke("x")
    fake = other.primary
    assert isinstance(fake, FakeChatModel)
    assert fake.attempts == 0


async def test_stream_falls_back_before_the_first_chunk() -> None:
    flash = FakeChatModel(model="fake-flash")
    pro = FakeChatModel(model="fake-pro", script=["server_error"] * 4)
    llm = wrap(pro, fallback=wrap(flash))
    async with usage_scope() as usage:
        text = "".join([c.text async for c in llm.astream("long")])
    assert text.startswith("fake-flash")
    assert (pro.attempts, flash.attempts) == (3, 1)  # the 3rd 503 opened the circuit: no 4th
    assert usage.records[0].model == "fake-flash"
    assert usage.records[0].fallback is True


def test_sync_invoke_outside_a_loop() -> None:
    fake = FakeChatModel(script=["rate_limit"])
    llm = wrap(fake)
    with set_testing(True):
        assert llm.invoke("hello").text.startswith("fake-flash")
    assert fake.attempts == 2


async def test_sync_invoke_inside_a_loop_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="ainvoke"):
        wrap(FakeChatModel()).invoke("hello")


@pytest.mark.parametrize(
    "reason",
    [
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    ],
)
def test_withheld_answers_raise_even_with_some_text(reason: str) -> None:
    message = AIMessage("partial", response_metadata={"finish_reason": reason})
    with pytest.raises(ContentBlockedError, match=reason):
        check_content(message)


@pytest.mark.parametrize("block_reason", ["SAFETY", "JAILBREAK", "MODEL_ARMOR", "OTHER"])
def test_prompt_block_reasons(block_reason: str) -> None:
    blocked = AIMessage("", response_metadata={"prompt_feedback": {"block_reason": block_reason}})
    with pytest.raises(ContentBlockedError, match="prompt blocked"):
        check_content(blocked)


@pytest.mark.parametrize("block_reason", [None, 0, "BLOCKED_REASON_UNSPECIFIED"])
def test_an_unspecified_prompt_block_reason_is_not_a_block(block_reason: object) -> None:
    fine = AIMessage(
        "an answer", response_metadata={"prompt_feedback": {"block_reason": block_reason}}
    )
    check_content(fine)  # raises if it is taken for a block
