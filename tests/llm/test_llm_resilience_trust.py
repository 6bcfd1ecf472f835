"""Issue 13 items 5-10 through the real langchain-google-genai SDK and the local fake Gemini.

One deadline across fallbacks, no sleeping into an open circuit, quota cooldowns, nested
retries that don't multiply, jittered server hints, malformed function calls retried, context
overflow routed only to a larger window. Every count is of requests the server received.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from llm_gemini_server import FakeGeminiServer, Reply
from redis.asyncio import Redis

from sight_core.errors import (
    CircuitOpenError,
    DeadlineExceededError,
    RateLimitedError,
)
from sight_core.llm import build_chat_model, usage_scope
from sight_core.resilience import (
    BreakerState,
    RedisBreakerStore,
    RetryEvent,
    circuit_of,
    retried_by,
    retrying,
)
from sight_core.settings import LLMSettings
from sight_core.testing import FaultProxy

PRO, FLASH = "gemini-2.5-pro", "gemini-2.5-flash"


def models(gemini: FakeGeminiServer) -> list[str]:
    return [r.model for r in gemini.requests]


# ---------------------------------------------------------------- item 5: one deadline


async def test_one_deadline_for_the_whole_call_when_both_models_hang(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    settings = google_settings.model_copy(update={"deadline": 4.0, "timeout": 30.0})
    gemini.default = Reply.slow(8.0)  # Pro and Flash both hang
    llm = build_chat_model("pro", settings=settings)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        await llm.ainvoke("hello")
    assert time.monotonic() - started < 5.0  # ~4 s: the fallback gets no fresh deadline
    assert models(gemini) == [PRO]  # nothing was left for Flash


async def test_the_fallback_gets_what_is_left_of_the_deadline(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    settings = google_settings.model_copy(
        update={"deadline": 4.0, "timeout": 30.0, "max_attempts": 1}
    )
    failing_late = Reply.error(503, "overloaded", "UNAVAILABLE")
    gemini.answer(PRO, Reply(status=503, body=failing_late.body, delay=2.5))
    gemini.answer(FLASH, Reply.slow(8.0))
    llm = build_chat_model("pro", settings=settings)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        await llm.ainvoke("hello")
    assert time.monotonic() - started < 5.0  # 2.5 s on Pro + the 1.5 s left on Flash
    assert models(gemini) == [PRO, FLASH]


# ---------------------------------------------------------------- item 6: circuit opens mid-retry


async def test_an_open_circuit_sends_the_call_to_the_fallback_without_waiting(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.answer(PRO, Reply.unavailable())  # breaker threshold 3, max_attempts 4
    llm = build_chat_model("pro", settings=google_settings)
    waits: list[RetryEvent] = []
    llm.policy = llm.policy.with_options(on_retry=[waits.append])
    async with usage_scope() as usage:
        answer = await llm.ainvoke("hello")
    assert answer.text == "Hello from fake Gemini."
    assert models(gemini) == [PRO, PRO, PRO, FLASH]  # the 3rd 503 opened Pro's circuit
    assert [e.attempt for e in waits] == [1, 2]  # no wait after it
    assert llm.breaker.state is BreakerState.OPEN
    [record] = usage.records
    assert (record.model, record.fallback, record.failed_attempts) == (FLASH, True, 3)


async def test_without_a_fallback_the_last_real_error_carries_the_circuit_state(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.default = Reply.unavailable()
    llm = build_chat_model("pro", settings=google_settings, fallback=False)
    with pytest.raises(Exception, match="503") as info:
        await llm.ainvoke("hello")
    assert not isinstance(info.value, CircuitOpenError)
    circuit = circuit_of(info.value)
    assert circuit is not None
    assert (circuit.name, circuit.state) == (f"llm:{PRO}", BreakerState.OPEN)
    assert gemini.count == 3
    with pytest.raises(CircuitOpenError):  # a later call, circuit open: refused, no request
        await llm.ainvoke("hello")
    assert gemini.count == 3


# ---------------------------------------------------------------- item 7: cooldowns


async def test_a_long_retry_delay_cools_pro_down_and_flash_answers(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.answer(PRO, Reply.rate_limited("600s"))
    llm = build_chat_model("pro", settings=google_settings)
    async with usage_scope() as usage:
        answers = [await llm.ainvoke(f"q{i}") for i in range(6)]
    assert all(a.text == "Hello from fake Gemini." for a in answers)
    assert models(gemini) == [PRO] + [FLASH] * 6  # one request told Pro's answer for ten minutes
    assert all(r.model == FLASH and r.fallback for r in usage.records)
    assert llm.breaker.state is BreakerState.OPEN


async def test_a_cooldown_without_a_fallback_fails_at_once_with_retry_after(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.default = Reply.rate_limited("600s")
    llm = build_chat_model("pro", settings=google_settings, fallback=False)
    with pytest.raises(RateLimitedError) as first:
        await llm.ainvoke("hello")
    assert first.value.retry_after is not None and 590 < first.value.retry_after <= 600
    assert first.value.__cause__ is not None  # the server's 429
    with pytest.raises(RateLimitedError) as second:
        await llm.ainvoke("hello")
    assert second.value.retry_after is not None and second.value.retry_after <= 600
    assert gemini.count == 1


async def test_a_per_day_quota_cools_down_for_quota_cooldown(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    settings = google_settings.model_copy(update={"quota_cooldown": 1800.0})
    gemini.answer(PRO, Reply.daily_quota("20s"))  # the hint is short; the quota is for the day
    llm = build_chat_model("pro", settings=settings)
    for i in range(4):
        assert (await llm.ainvoke(f"q{i}")).text == "Hello from fake Gemini."
    assert models(gemini) == [PRO] + [FLASH] * 4
    with pytest.raises(RateLimitedError) as info:
        await llm.breaker.call(asyncio.sleep, 0)
    assert info.value.retry_after is not None and 1790 < info.value.retry_after <= 1800


async def test_a_short_retry_delay_is_still_waited_and_retried(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.push(Reply.rate_limited("7s"))
    llm = build_chat_model("pro", settings=google_settings)
    assert (await llm.ainvoke("hello")).text == "Hello from fake Gemini."
    assert models(gemini) == [PRO, PRO]
    assert llm.breaker.state is BreakerState.CLOSED


# ---------------------------------------------------------------- item 8: nested retries


async def test_retrying_around_ainvoke_does_not_multiply_requests(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.default = Reply.rate_limited("1s")  # a 429 storm
    llm = build_chat_model("flash", settings=google_settings)

    @retrying(max_attempts=4)
    async def ask(prompt: str) -> str:
        return (await llm.ainvoke(prompt)).text

    with pytest.raises(Exception, match="429") as info:
        await ask("hello")
    assert gemini.count == google_settings.max_attempts  # 4, not 4 * 4
    assert retried_by(info.value) == f"llm:{FLASH}"


# ---------------------------------------------------------------- item 9: jittered hints


async def test_twenty_callers_told_the_same_hint_are_spread(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.push(*[Reply.rate_limited("1.5s")] * 20)
    llm = build_chat_model("flash", settings=google_settings)
    events: list[RetryEvent] = []
    llm.policy = llm.policy.with_options(on_retry=[events.append])
    answers = await asyncio.gather(*(llm.ainvoke(f"q{i}") for i in range(20)))
    assert len(answers) == 20 and gemini.count == 40
    waits = [e.wait for e in events]
    assert len(waits) == 20
    assert min(waits) >= 1.5  # never before the server's time
    assert max(waits) - min(waits) >= 0.3  # not all in the same instant


# ---------------------------------------------------------------- item 10: classification


async def test_malformed_function_call_is_retried(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.push(Reply.text("", finish_reason="MALFORMED_FUNCTION_CALL"))
    llm = build_chat_model("flash", settings=google_settings)
    async with usage_scope() as usage:
        answer = await llm.ainvoke("call the tool")
    assert answer.text == "Hello from fake Gemini."
    assert gemini.count == 2
    assert usage.records[0].failed_attempts == 1


async def test_context_overflow_falls_back_to_a_larger_window(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    wide = build_chat_model("pro", model="gemini-1.5-pro", settings=google_settings)
    llm = build_chat_model("flash", settings=google_settings, fallback=wide)
    gemini.push(Reply.context_overflow())
    answer = await llm.ainvoke("a very long prompt")
    assert answer.text == "Hello from fake Gemini."
    assert models(gemini) == [FLASH, "gemini-1.5-pro"]  # 1,048,576 -> 2,097,152 tokens


async def test_an_error_record_names_the_model_that_failed(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    settings = google_settings.model_copy(update={"max_attempts": 2})
    gemini.answer(PRO, Reply.unavailable())
    gemini.answer(FLASH, Reply.bad_request())
    llm = build_chat_model("pro", settings=settings)
    async with usage_scope() as usage:
        with pytest.raises(Exception, match="400"):
            await llm.ainvoke("hello")
    [record] = usage.records
    assert (record.model, record.requested_model, record.fallback) == (FLASH, PRO, True)
    assert (record.attempts, record.failed_attempts) == (3, 3)


# ---------------------------------------------------------------- item 12: Redis dead


async def test_redis_dead_keeps_pros_shared_circuit_open_and_caps_probes_through_the_sdk(
    gemini: FakeGeminiServer,
    google_settings: LLMSettings,
    redis_url: str,
    fault_proxy: Callable[[str], FaultProxy],
) -> None:
    """Pro's circuit opened in Redis, then Redis died and the recovery timeout passed: 50
    concurrent calls send at most ``half_open_max_calls`` requests to Pro (was 50: the local
    fallback store started CLOSED), and the others fall back to Flash."""
    proxy = fault_proxy(redis_url)
    client = Redis.from_url(proxy.url_for(redis_url))
    settings = google_settings.model_copy(
        update={
            "max_attempts": 1,
            "breaker_failure_threshold": 1,
            "breaker_recovery_timeout": 1.0,
            "breaker_half_open_max_calls": 1,
        }
    )
    store = RedisBreakerStore(client, op_timeout=0.5)
    try:
        llm = build_chat_model("pro", settings=settings, breaker_store=store)
        gemini.answer(PRO, Reply.unavailable())
        assert (await llm.ainvoke("first")).text  # Pro's 503 opened its circuit; Flash answered
        assert models(gemini) == [PRO, FLASH]
        proxy.refuse()  # Redis dies while the circuit is open
        await asyncio.sleep(1.2)  # the recovery timeout passes with Redis dead
        gemini.reset()
        gemini.answer(PRO, Reply.slow(1.0))  # a probe that reaches Pro stays in flight a while
        answers = await asyncio.gather(*(llm.ainvoke(f"q{i}") for i in range(50)))
        assert len(answers) == 50 and all(a.text for a in answers)
        assert models(gemini).count(PRO) <= 1  # the probe cap held without Redis
        assert models(gemini).count(FLASH) >= 49
    finally:
        proxy.restore()
        await client.aclose()
