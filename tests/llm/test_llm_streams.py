"""Streams that end early still pay: abandoned and cancelled streams leave an incomplete record.

Gemini bills the tokens it generated whether or not the consumer read them all. A stream the
consumer leaves (``break``, ``aclose()``, a sync generator closed) or whose task is cancelled
is recorded with the tokens seen so far, ``outcome="incomplete"``, priced, charged to the
scope's budget and counted in ``sight_llm_calls_total{outcome="incomplete"}``.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest
from llm_gemini_server import FakeGeminiServer, Reply

from sight_core import observability
from sight_core.errors import BudgetExceededError
from sight_core.llm import (
    UsageRecord,
    add_usage_sink,
    build_chat_model,
    remove_usage_sink,
    usage_scope,
)
from sight_core.settings import LLMSettings

FLASH = LLMSettings().prices["gemini-2.5-flash"]


def _incomplete_calls() -> float:
    return observability.snapshot().counter(
        "sight_llm_calls_total", model="gemini-2.5-flash", outcome="incomplete"
    )


async def test_abandoned_async_stream_records_the_tokens_seen(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.push(Reply.stream("one ", "two ", "three", prompt_tokens=1000, chunk_delay=0.05))
    llm = build_chat_model("flash", settings=google_settings)
    before = _incomplete_calls()
    async with usage_scope(budget_usd=1.0) as usage, aclosing(llm.astream("count")) as stream:
        async for chunk in stream:
            assert chunk.text == "one "
            break
    [record] = usage.records
    assert record.outcome == "incomplete"
    assert (record.input_tokens, record.output_tokens) == (1000, 1)  # what the first chunk said
    assert record.cost_usd == pytest.approx((1000 * FLASH.input + 1 * FLASH.output) / 1e6)
    assert usage.cost_usd == record.cost_usd and usage.incomplete == 1
    assert _incomplete_calls() == before + 1
    assert llm.limiter.in_flight == 0


async def test_cancelled_stream_records_the_tokens_seen(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.push(Reply.stream("one ", "two ", "three", prompt_tokens=1000, chunk_delay=5.0))
    llm = build_chat_model("flash", settings=google_settings)
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in llm.astream("count"):
            first.set()

    async with usage_scope() as usage:
        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 5)
        await asyncio.sleep(0.05)  # the stream now waits for the server's second chunk
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    [record] = usage.records
    assert record.outcome == "incomplete"
    assert (record.input_tokens, record.output_tokens) == (1000, 1)
    assert record.error == "CancelledError"
    assert llm.limiter.in_flight == 0


def test_abandoned_sync_stream_records_the_tokens_seen(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.push(Reply.stream("one ", "two ", "three", prompt_tokens=1000))
    llm = build_chat_model("flash", settings=google_settings)
    records: list[UsageRecord] = []
    add_usage_sink(records.append)
    try:
        stream = llm.stream("count")
        assert next(stream).text == "one "
        stream.close()  # the consumer leaves: GeneratorExit reaches the async path
    finally:
        remove_usage_sink(records.append)
    [record] = records
    assert record.outcome == "incomplete"
    assert (record.input_tokens, record.output_tokens) == (1000, 1)
    assert llm.limiter.in_flight == 0


async def test_an_incomplete_stream_is_charged_to_the_budget(fake_settings: LLMSettings) -> None:
    llm = build_chat_model("flash", settings=fake_settings, responses=["a b c d e f"])
    async with usage_scope(budget_tokens=5) as usage:
        async with aclosing(llm.astream("x" * 40)) as stream:
            async for _ in stream:
                break
        assert usage.total_tokens >= 10  # the fake's first chunk carries the prompt's tokens
        with pytest.raises(BudgetExceededError):
            await llm.ainvoke("more")


async def test_blocked_prompts_and_answers_record_what_the_sdk_reports(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    """docs/usage.md "Failed attempts": an answer stopped for safety reports its prompt tokens
    and is recorded with them; a prompt refused before generation comes back from the SDK's
    non-streaming call without usage (recorded with 0 tokens), and with usage when streamed."""
    from sight_core.errors import ContentBlockedError

    llm = build_chat_model("flash", settings=google_settings)
    records: list[UsageRecord] = []
    add_usage_sink(records.append)
    try:
        gemini.push(Reply.answer_blocked(), Reply.prompt_blocked(), Reply.prompt_blocked())
        with pytest.raises(ContentBlockedError, match="answer blocked"):
            await llm.ainvoke("one")
        with pytest.raises(ContentBlockedError, match="prompt blocked"):
            await llm.ainvoke("two")
        with pytest.raises(ContentBlockedError, match="prompt blocked"):
            async for _ in llm.astream("three"):
                pass
    finally:
        remove_usage_sink(records.append)
    assert gemini.count == 3  # none retried
    assert [(r.outcome, r.error, r.input_tokens) for r in records] == [
        ("error", "ContentBlockedError", 12),  # the server's promptTokenCount
        ("error", "ContentBlockedError", 0),  # the SDK drops it for a refused prompt
        ("error", "ContentBlockedError", 12),  # the streaming path keeps it
    ]
