"""The response cache: key contents, single flight, never storing blocked answers, BaseCache."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.globals import set_llm_cache
from langchain_core.messages import HumanMessage, SystemMessage
from redis.asyncio import Redis

from sight_core.cache import Cache, MemoryBackend
from sight_core.errors import ConfigurationError, ContentBlockedError
from sight_core.llm import (
    FakeChatModel,
    ResilientChatModel,
    ResponseCache,
    SightLLMCache,
    build_chat_model,
    clear_model_cache,
    request_digest,
    usage_scope,
)
from sight_core.settings import LLMSettings


@pytest.fixture
def memory_cache() -> Cache:
    cache = Cache(prefix="t")
    cache.bind(MemoryBackend())
    return cache


def test_digest_depends_on_model_params_messages_tools_not_operations() -> None:
    msgs = [SystemMessage("be brief"), HumanMessage("hello  \r\n")]
    base = request_digest("m", {"temperature": 0.2}, msgs)
    assert (
        request_digest(
            "m", {"temperature": 0.2}, [SystemMessage("be brief"), HumanMessage("hello")]
        )
        == base
    )
    assert request_digest("m", {"temperature": 0.2}, msgs, kwargs={"timeout": 3}) == base
    assert request_digest("m", {"temperature": 0.2}, msgs, kwargs={"response_cache": True}) == base
    assert request_digest("m2", {"temperature": 0.2}, msgs) != base
    assert request_digest("m", {"temperature": 0.9}, msgs) != base
    assert request_digest("m", {"temperature": 0.2}, [HumanMessage("hello")]) != base
    assert request_digest("m", {"temperature": 0.2}, msgs, kwargs={"tools": [{"n": 1}]}) != base
    assert request_digest("m", {"temperature": 0.2}, msgs, stop=["\n"]) != base


async def test_hit_is_served_not_billed(memory_cache: Cache) -> None:
    fake_settings = LLMSettings(provider="fake")
    llm = build_chat_model(settings=fake_settings, response_cache=ResponseCache(memory_cache))
    async with usage_scope() as usage:
        first = await llm.ainvoke("hello")
        second = await llm.ainvoke("hello")
        await llm.ainvoke("hello", response_cache=False)
    assert second.text == first.text
    fake = llm.primary
    assert isinstance(fake, FakeChatModel)
    assert fake.attempts == 2
    assert (usage.calls, usage.cache_hits) == (2, 1)
    hit = next(r for r in usage.records if r.outcome == "cache_hit")
    assert hit.billed is False and hit.cost_usd == 0.0 and hit.saved_usd > 0
    assert usage.cost_usd == pytest.approx(sum(r.cost_usd for r in usage.records))


async def test_concurrent_identical_prompts_reach_the_model_once(memory_cache: Cache) -> None:
    llm = build_chat_model(
        settings=LLMSettings(provider="fake"),
        response_cache=ResponseCache(memory_cache),
        latency=0.05,
    )
    async with usage_scope() as usage:
        answers = await asyncio.gather(*(llm.ainvoke("same prompt") for _ in range(20)))
    assert len({a.text for a in answers}) == 1
    fake = llm.primary
    assert isinstance(fake, FakeChatModel)
    assert fake.attempts == 1
    assert (usage.calls, usage.cache_hits) == (1, 19)


async def test_identical_prompts_through_redis_reach_the_model_once(redis_client: Redis) -> None:
    def build() -> FakeChatModel:
        cache = Cache(prefix="t")
        cache.bind(redis_client)
        clear_model_cache()  # a fresh model and cache object, as in another worker process
        llm = build_chat_model(
            settings=LLMSettings(provider="fake"), response_cache=ResponseCache(cache), latency=0.05
        )
        fake = llm.primary
        assert isinstance(fake, FakeChatModel)
        models.append(llm)
        return fake

    models: list[ResilientChatModel] = []
    first = build()
    await asyncio.gather(*(models[0].ainvoke("same prompt") for _ in range(10)))
    second = build()
    await models[1].ainvoke("same prompt")
    assert (first.attempts, second.attempts) == (1, 0)
    keys = [k async for k in redis_client.scan_iter("t:v1:llm:*")]
    assert len(keys) == 1


async def test_blocked_answers_are_never_cached(memory_cache: Cache) -> None:
    llm = build_chat_model(
        settings=LLMSettings(provider="fake"),
        response_cache=ResponseCache(memory_cache),
        script=["blocked"],
    )
    with pytest.raises(ContentBlockedError):
        await llm.ainvoke("hello")
    answer = await llm.ainvoke("hello")
    assert answer.text
    fake = llm.primary
    assert isinstance(fake, FakeChatModel)
    assert fake.attempts == 2


async def test_response_cache_true_without_a_cache_is_an_error() -> None:
    llm = build_chat_model(settings=LLMSettings(provider="fake"))
    with pytest.raises(ConfigurationError):
        await llm.ainvoke("hello", response_cache=True)


async def test_langchain_set_llm_cache(memory_cache: Cache) -> None:
    lc_cache = SightLLMCache(memory_cache)
    fake = FakeChatModel()
    set_llm_cache(lc_cache)
    try:
        first = await fake.ainvoke("hello")
        second = await fake.ainvoke("hello")
    finally:
        set_llm_cache(None)
    assert first.text == second.text
    assert fake.attempts == 1
    assert (lc_cache.hits, lc_cache.misses) == (1, 1)


async def test_langchain_cache_skips_empty_answers(memory_cache: Cache) -> None:
    lc_cache = SightLLMCache(memory_cache)
    fake = FakeChatModel(script=["empty"], cache=lc_cache)
    await fake.ainvoke("hello")
    await fake.ainvoke("hello")
    assert fake.attempts == 2


def test_keys_are_versioned_and_namespaced(memory_cache: Cache) -> None:
    digest = request_digest("m", {}, [HumanMessage("hi")])
    assert ResponseCache(memory_cache).key(digest) == f"t:v1:llm:{digest}"
    assert ResponseCache(memory_cache, version=3, namespace="personas").key(digest) == (
        f"t:v3:personas:{digest}"
    )


async def test_a_fallback_answer_is_not_stored_under_the_requested_model(
    memory_cache: Cache,
) -> None:
    llm = build_chat_model(
        "pro",
        settings=LLMSettings(provider="fake", max_attempts=2),
        response_cache=ResponseCache(memory_cache),
        script=["server_error", "server_error"],
    )
    first = await llm.ainvoke("hello")
    assert first.text.startswith("fake-flash")  # pro failed twice; flash answered
    second = await llm.ainvoke("hello")
    assert second.text.startswith("fake-pro")  # pro is asked again, not flash's answer reused
    third = await llm.ainvoke("hello")
    assert third.text == second.text  # pro's own answer is cached
    fake = llm.primary
    assert isinstance(fake, FakeChatModel)
    assert fake.attempts == 3  # two failures, then the answer that is cached
