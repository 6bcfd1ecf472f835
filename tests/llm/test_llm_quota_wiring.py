"""build_chat_model() under a shared quota, against the fake Gemini enforcing a true sliding
window through the real langchain-google-genai SDK, and the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from llm_gemini_server import FakeGeminiServer, Quota, Reply
from redis.asyncio import Redis

from sight_core import observability
from sight_core.errors import RateLimitedError
from sight_core.llm import QuotaGovernor, aclose_models, build_chat_model
from sight_core.resilience import classify
from sight_core.settings import LLMSettings, QuotaLimit
from sight_core.testing import FaultProxy

FLASH = "gemini-2.5-flash"
PROMPT = "Describe one persona of a small bakery's customers in two sentences."  # 17 tokens


def _settings(gemini: FakeGeminiServer, **quota: Any) -> LLMSettings:
    return LLMSettings(
        provider="google",
        api_key="test-key",  # type: ignore[arg-type]
        base_url=gemini.url,
        timeout=5.0,
        max_attempts=4,
        deadline=30.0,
        quotas={FLASH: QuotaLimit(**quota)},
        quota_window=1.0,
        quota_margin=0.3,
    )


async def test_a_burst_under_the_governor_gets_no_429(
    gemini: FakeGeminiServer, redis_client: Redis
) -> None:
    server_quota = gemini.enforce(FLASH, Quota(rpm=8, tpm=8 * 17, window=1.0))
    llm = build_chat_model(
        "flash", settings=_settings(gemini, rpm=8, tpm=8 * 17), quota_redis=redis_client
    )
    answers = await asyncio.gather(*(llm.ainvoke(PROMPT) for _ in range(24)))
    assert len(answers) == 24
    assert server_quota.refused == 0  # the estimate (chars / 4) is the fake's own count
    assert len(server_quota.admitted) == 24
    requests, tokens = server_quota.max_in_window()
    assert requests <= 8 and tokens <= 8 * 17
    assert await llm.quota.outstanding() == 0  # type: ignore[union-attr]


async def test_the_same_burst_without_the_governor_is_refused_by_the_fake(
    gemini: FakeGeminiServer,
) -> None:
    """The control: the fake's quota does refuse a burst nobody paces."""
    server_quota = gemini.enforce(FLASH, Quota(rpm=8, tpm=8 * 17, window=1.0))
    settings = _settings(gemini, rpm=8).model_copy(update={"quotas": {}})
    llm = build_chat_model("flash", settings=settings)
    await asyncio.gather(*(llm.ainvoke(PROMPT) for _ in range(24)), return_exceptions=True)
    assert server_quota.refused > 0


async def test_the_fakes_429_is_what_gemini_sends(gemini: FakeGeminiServer) -> None:
    gemini.enforce(FLASH, Quota(rpm=1, window=30.0))
    llm = build_chat_model("flash", settings=_settings(gemini, rpm=100), fallback=False)
    await llm.ainvoke(PROMPT)
    with pytest.raises(Exception) as caught:
        await llm.primary.ainvoke(PROMPT)  # the SDK's own error, no wrapper
    found = classify(caught.value)
    assert found.status == 429 and found.kind == "transient"
    assert found.retry_after is not None and 28 <= found.retry_after <= 30
    assert not found.daily_quota


async def test_settled_with_usage_and_reserved_with_max_output(
    gemini: FakeGeminiServer, redis_client: Redis
) -> None:
    observability.reset()
    gemini.enforce(FLASH, Quota(tpm=10_000, window=1.0))
    gemini.default = Reply.text(output_tokens=7)
    llm = build_chat_model(
        "flash",
        settings=_settings(gemini, tpm=10_000),
        quota_redis=redis_client,
        max_output_tokens=64,
    )
    await llm.ainvoke(PROMPT)
    snap = observability.snapshot()

    def tokens(metric: str, kind: str) -> float:
        return snap.counter(metric, model=FLASH, kind=kind)

    assert tokens("sight_llm_quota_tokens_reserved_total", "input") == 17
    assert tokens("sight_llm_quota_tokens_reserved_total", "output") == 64
    assert tokens("sight_llm_quota_tokens_settled_total", "input") == 17
    assert tokens("sight_llm_quota_tokens_settled_total", "output") == 7


async def test_a_stream_is_settled_when_it_closes(
    gemini: FakeGeminiServer, redis_client: Redis
) -> None:
    gemini.enforce(FLASH, Quota(tpm=10_000, window=1.0))
    gemini.default = Reply.stream("Hello ", "there, ", "friend.")
    llm = build_chat_model(
        "flash", settings=_settings(gemini, tpm=10_000), quota_redis=redis_client
    )
    chunks = [chunk async for chunk in llm.astream(PROMPT)]
    assert chunks
    assert await llm.quota.outstanding() == 0  # type: ignore[union-attr]


async def test_a_per_day_429_stops_every_worker_until_the_reset(
    gemini: FakeGeminiServer, redis_url: str, redis_client: Redis
) -> None:
    gemini.answer(FLASH, Reply.daily_quota("20s"))
    settings = _settings(gemini, rpm=100)
    llm = build_chat_model("flash", settings=settings, quota_redis=redis_client)
    with pytest.raises(Exception):  # noqa: B017 - the first worker meets the server's refusal
        await llm.ainvoke(PROMPT)
    seen = gemini.count
    await aclose_models()  # another worker: its own models, breakers and Redis client
    other = Redis.from_url(redis_url)
    try:
        worker = build_chat_model("flash", settings=settings, quota_redis=other)
        with pytest.raises(RateLimitedError) as caught:
            await worker.ainvoke(PROMPT)
    finally:
        await other.aclose()
    assert gemini.count == seen  # refused before any request
    assert caught.value.retry_after is not None and caught.value.retry_after > 60


# ------------------------------------------------------------------------------ fail-open


def _proxied(fault_proxy: Callable[..., FaultProxy], redis_url: str) -> tuple[FaultProxy, Redis]:
    proxy = fault_proxy(redis_url)
    client = Redis.from_url(proxy.url_for(redis_url), socket_timeout=5, socket_connect_timeout=2)
    return proxy, client


@pytest.mark.parametrize("fault", ["blackhole", "reset"])
async def test_a_dead_redis_never_blocks_calls(
    gemini: FakeGeminiServer,
    redis_url: str,
    redis_client: Redis,
    fault_proxy: Callable[..., FaultProxy],
    fault: str,
) -> None:
    observability.reset()
    proxy, client = _proxied(fault_proxy, redis_url)
    try:
        settings = _settings(gemini, rpm=40).model_copy(
            update={"quota_workers": 4, "quota_window": 10.0}
        )
        llm = build_chat_model("flash", settings=settings, quota_redis=client)
        await llm.ainvoke(PROMPT)  # shared: booked in Redis
        getattr(proxy, fault)()
        answers = await asyncio.wait_for(
            asyncio.gather(*(llm.ainvoke(PROMPT) for _ in range(10))), timeout=10
        )
        assert len(answers) == 10
        snap = observability.snapshot()

        def admitted(mode: str) -> float:
            return snap.counter("sight_llm_quota_admitted_total", model=FLASH, mode=mode)

        if fault == "reset":  # the client reconnects: Redis is alive, every call is booked
            assert admitted("shared") + admitted("local") == 11
            return
        assert admitted("local") == 10
        assert snap.counter("sight_llm_quota_redis_errors_total", model=FLASH) >= 1
        governor = llm.quota
        assert isinstance(governor, QuotaGovernor) and governor.degraded
        # the local share is a quarter of the quota: 10 requests per window
        with pytest.raises(RateLimitedError):
            await governor.reserve(deadline=0)
    finally:
        proxy.restore()
        await client.aclose()


def test_sync_calls_book_in_the_local_share_without_degrading(redis_url: str) -> None:
    """``invoke`` runs on the sync API's own loop, where the async Redis client (bound to the
    application's loop) cannot be used: it books in the local share; async calls stay shared."""
    observability.reset()
    settings = LLMSettings(
        provider="fake", quotas={"fake-flash": QuotaLimit(rpm=100)}, quota_window=1.0
    )

    async def make() -> tuple[Any, Redis]:
        redis = Redis.from_url(redis_url)
        llm = build_chat_model("flash", settings=settings, quota_redis=redis)
        await llm.ainvoke(PROMPT)  # shared, on this loop
        return llm, redis

    loop = asyncio.new_event_loop()
    try:
        llm, redis = loop.run_until_complete(make())
        assert llm.invoke(PROMPT).content  # another loop
        loop.run_until_complete(llm.ainvoke(PROMPT))
        assert not llm.quota.degraded
        loop.run_until_complete(redis.aclose())
    finally:
        loop.run_until_complete(aclose_models())
        loop.close()
    snap = observability.snapshot()
    counted = snap.counter
    assert counted("sight_llm_quota_admitted_total", model="fake-flash", mode="shared") == 2
    assert counted("sight_llm_quota_admitted_total", model="fake-flash", mode="local") == 1
