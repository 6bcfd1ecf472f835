"""The real ``ChatGoogleGenerativeAI`` against a local fake Gemini server (``base_url``).

Every exception here is the one the SDK raises for a real HTTP answer, so these tests prove
the classifier, the SDK's single attempt and the breaker on production types, counting the
requests that reached the server. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import pytest
from llm_gemini_server import FakeGeminiServer, Reply
from pydantic import BaseModel

from sight_core.errors import (
    CircuitOpenError,
    ConfigurationError,
    ContentBlockedError,
    ContextOverflowError,
    DeadlineExceededError,
)
from sight_core.llm import build_chat_model, usage_scope
from sight_core.resilience import BreakerState, RetryEvent
from sight_core.settings import LLMSettings


async def test_success_usage_and_price(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.push(Reply.text("Hi!", prompt_tokens=1000, output_tokens=200, model="gemini-2.5-pro"))
    llm = build_chat_model("pro", settings=google_settings)
    async with usage_scope(project="p1") as usage:
        answer = await llm.ainvoke("hello")
    assert answer.text == "Hi!"
    assert gemini.count == 1
    primary = llm.primary
    assert primary.max_retries == 1  # type: ignore[attr-defined]
    assert primary.timeout == google_settings.timeout  # type: ignore[attr-defined]
    assert gemini.requests[0].path == "/v1beta/models/gemini-2.5-pro:generateContent"
    [record] = usage.records
    assert (record.model, record.input_tokens, record.output_tokens) == (
        "gemini-2.5-pro",
        1000,
        200,
    )
    assert record.cost_usd == pytest.approx((1000 * 1.25 + 200 * 10.0) / 1e6)
    assert record.labels == {"project": "p1"}


async def test_429_with_retry_delay_retried_by_us_not_the_sdk(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.push(Reply.rate_limited("7s"), Reply.rate_limited("7s"), Reply.text("ok"))
    llm = build_chat_model("flash", settings=google_settings)
    events: list[RetryEvent] = []
    llm.policy = llm.policy.with_options(on_retry=[events.append])
    async with usage_scope() as usage:
        answer = await llm.ainvoke("hello")
    assert answer.text == "ok"
    assert gemini.count == 3  # one request per attempt: the SDK does not retry on its own
    assert [e.classification.status for e in events] == [429, 429]
    assert all(e.classification.retry_after == 7.0 and e.wait >= 7.0 for e in events)
    assert usage.calls == 1 and usage.failed_attempts == 2


async def test_retry_after_header_is_honoured(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.push(Reply.rate_limited(None, retry_after="3"), Reply.text("ok"))
    llm = build_chat_model("flash", settings=google_settings)
    events: list[RetryEvent] = []
    llm.policy = llm.policy.with_options(on_retry=[events.append])
    await llm.ainvoke("hello")
    assert [e.classification.retry_after for e in events] == [3.0]


async def test_one_503_costs_one_request_per_attempt(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    settings = google_settings.model_copy(update={"max_attempts": 1})
    gemini.push(Reply.unavailable())
    with pytest.raises(Exception, match="503"):
        await build_chat_model("flash", settings=settings).ainvoke("hello")
    assert gemini.count == 1


async def test_400_is_not_retried(gemini: FakeGeminiServer, google_settings: LLMSettings) -> None:
    gemini.push(Reply.bad_request())
    llm = build_chat_model("pro", settings=google_settings)
    with pytest.raises(Exception, match="INVALID_ARGUMENT"):
        await llm.ainvoke("hello")
    assert gemini.count == 1  # and no fallback request either


async def test_failing_pro_opens_breaker_then_flash_answers_without_touching_pro(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    settings = google_settings.model_copy(update={"max_attempts": 1})
    llm = build_chat_model("pro", settings=settings)
    gemini.push(
        Reply.unavailable(),
        Reply.text("flash 1"),
        Reply.unavailable(),
        Reply.text("flash 2"),
        Reply.unavailable(),
        Reply.text("flash 3"),
    )
    for i in range(1, 4):
        assert (await llm.ainvoke("hello")).text == f"flash {i}"
    assert llm.breaker.state is BreakerState.OPEN
    before = [r.model for r in gemini.requests]
    assert before.count("gemini-2.5-pro") == 3
    answer = await llm.ainvoke("hello")
    models = [r.model for r in gemini.requests]
    assert models.count("gemini-2.5-pro") == 3  # the open circuit sent nothing to pro
    assert models[-1] == "gemini-2.5-flash"
    assert answer.text == "Hello from fake Gemini."


async def test_open_breaker_without_fallback_raises_circuit_open(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    settings = google_settings.model_copy(update={"max_attempts": 1})
    llm = build_chat_model("flash", settings=settings)
    gemini.default = Reply.unavailable()
    for _ in range(3):
        with pytest.raises(Exception, match="503"):
            await llm.ainvoke("hello")
    with pytest.raises(CircuitOpenError):
        await llm.ainvoke("hello")
    assert gemini.count == 3


async def test_context_overflow_does_not_go_to_a_same_size_window(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.push(Reply.context_overflow(), Reply.text("short answer"))
    with pytest.raises(ContextOverflowError):
        await build_chat_model("pro", settings=google_settings).ainvoke("long")
    # pro and flash both take 1,048,576 tokens: asking flash would be a wasted request
    assert [r.model for r in gemini.requests] == ["gemini-2.5-pro"]


@pytest.mark.parametrize("reply", [Reply.prompt_blocked(), Reply.answer_blocked()])
async def test_safety_blocks_raise(
    gemini: FakeGeminiServer, google_settings: LLMSettings, reply: Reply
) -> None:
    gemini.push(reply)
    with pytest.raises(ContentBlockedError):
        await build_chat_model("pro", settings=google_settings).ainvoke("hello")
    assert gemini.count == 1


async def test_sdk_timeout_is_transient(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    # 1 s per request: the retried request must answer within it even on a loaded machine
    settings = google_settings.model_copy(update={"timeout": 1.0})
    gemini.push(Reply.slow(2.5), Reply.text("in time"))
    answer = await build_chat_model("flash", settings=settings).ainvoke("hello")
    assert answer.text == "in time"
    assert gemini.count == 2


async def test_stream_through_the_sdk(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.push(Reply.rate_limited("1s"), Reply.stream("Hel", "lo ", "world"))
    llm = build_chat_model("flash", settings=google_settings)
    async with usage_scope() as usage:
        text = "".join([c.text async for c in llm.astream("hi")])
    assert text == "Hello world"
    assert gemini.count == 2
    assert all(r.stream for r in gemini.requests)
    assert usage.calls == 1 and usage.input_tokens == 12


async def test_native_structured_output_sends_the_schema(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    class Persona(BaseModel):
        name: str
        age: int

    gemini.push(Reply.text('{"name": "Ada", "age": 36}'))
    llm = build_chat_model("flash", settings=google_settings)
    persona = await llm.with_structured_output(Persona).ainvoke("make a persona")
    assert persona == Persona(name="Ada", age=36)
    config = gemini.requests[0].body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"]["required"] == ["name", "age"]


async def test_retry_delay_beyond_the_deadline_fails_fast_or_falls_back(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    settings = google_settings.model_copy(update={"deadline": 5.0})
    gemini.push(Reply.rate_limited("30s"))
    with pytest.raises(DeadlineExceededError):
        await build_chat_model("flash", settings=settings).ainvoke("hello")
    assert gemini.count == 1
    gemini.reset()
    gemini.push(Reply.rate_limited("30s"), Reply.text("flash answer"))
    answer = await build_chat_model("pro", settings=settings).ainvoke("hello")
    assert answer.text == "flash answer"
    assert [r.model for r in gemini.requests] == ["gemini-2.5-pro", "gemini-2.5-flash"]


@pytest.mark.parametrize("reason", ["RECITATION", "SAFETY"])
async def test_stream_cut_by_a_block_after_text_raises(
    gemini: FakeGeminiServer, google_settings: LLMSettings, reason: str
) -> None:
    gemini.push(Reply.stream("The lyrics ", "go like", finish_reason=reason))
    llm = build_chat_model("flash", settings=google_settings)
    seen: list[str] = []
    async with usage_scope() as usage:
        with pytest.raises(ContentBlockedError, match=reason):
            async for chunk in llm.astream("sing"):
                seen.append(chunk.text)
    assert seen  # the text already streamed cannot be taken back, but the call fails
    assert gemini.count == 1  # a block is not retried
    assert (usage.calls, usage.errors) == (0, 1)


@pytest.mark.parametrize(
    "call_kwargs",
    [
        {"max_retries": 6},
        {"retries": 6},
        {"http_options": {"retry_options": {"attempts": 6}}},
    ],
)
async def test_call_time_sdk_retries_are_refused(
    gemini: FakeGeminiServer, google_settings: LLMSettings, call_kwargs: dict[str, object]
) -> None:
    gemini.default = Reply.unavailable()
    llm = build_chat_model("flash", settings=google_settings)
    with pytest.raises(ConfigurationError, match="single attempt"):
        await llm.ainvoke("hello", **call_kwargs)
    with pytest.raises(ConfigurationError, match="single attempt"):
        await llm.bind(**call_kwargs).ainvoke("hello")
    with pytest.raises(ConfigurationError, match="single attempt"):
        async for _ in llm.astream("hello", **call_kwargs):
            pass
    assert gemini.count == 0  # the SDK never got the chance to retry on its own


async def test_response_cache_key_covers_every_sampling_field_not_operations(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    from sight_core.cache import Cache, MemoryBackend
    from sight_core.llm import ResponseCache

    cache = Cache(prefix="keys")
    cache.bind(MemoryBackend())
    responses = ResponseCache(cache)

    async def ask(**overrides: object) -> None:
        llm = build_chat_model(
            "flash", settings=google_settings, response_cache=responses, **overrides
        )
        await llm.ainvoke("the same prompt")

    await ask(seed=1)
    await ask(seed=1, timeout=30.0)  # operational: same answer, served from the cache
    assert gemini.count == 1
    await ask(seed=2)  # another seed samples another answer
    await ask(seed=1, stop=["END"])
    await ask(seed=1, response_mime_type="text/x.enum")
    assert gemini.count == 4
    from langchain_google_genai import HarmBlockThreshold, HarmCategory

    harassment = {HarmCategory.HARM_CATEGORY_HARASSMENT: HarmBlockThreshold.BLOCK_NONE}
    await ask(seed=1, safety_settings=harassment)  # enum keys: the digest must encode them
    await ask(seed=1, safety_settings=harassment)
    assert gemini.count == 5


async def test_a_burst_of_64_concurrent_calls_reaches_the_server_without_connection_errors(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    """The fake server's listen backlog fits a burst: no refused connection, no retry."""
    import asyncio

    settings = google_settings.model_copy(update={"flash_concurrency": 64})
    gemini.default = Reply.text("ok", delay=0.05)
    llm = build_chat_model("flash", settings=settings)
    async with usage_scope() as usage:
        answers = await asyncio.gather(*(llm.ainvoke(f"q{i}") for i in range(64)))
    assert [a.text for a in answers] == ["ok"] * 64
    assert gemini.count == 64
    assert usage.failed_attempts == 0
    assert llm.breaker.state is BreakerState.CLOSED
