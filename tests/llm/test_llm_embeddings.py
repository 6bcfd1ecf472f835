"""``build_embeddings``: the chat models' policy (retries, shared breaker, cap, usage) for
embeddings, batching to the provider's limit, the embedding cache, and the real
``GoogleGenerativeAIEmbeddings`` against the local fake Gemini server.

Invariant (hypothesis): whatever the texts (duplicates included) and the batch size, the answer
is the vector of each text, in order; no request carries more than the batch size; each
distinct text is sent once when nothing fails.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_gemini_server import FakeGeminiServer, Reply
from redis.asyncio import Redis

from sight_core.cache import Cache, MemoryBackend
from sight_core.errors import (
    BudgetExceededError,
    CircuitOpenError,
    ConfigurationError,
    RateLimitedError,
)
from sight_core.llm import (
    EmbeddingCache,
    FakeEmbeddings,
    QuotaGovernor,
    ResilientEmbeddings,
    build_embeddings,
    estimate_tokens,
    fake_vector,
    model_limiter,
    usage_scope,
)
from sight_core.resilience import CircuitBreaker, RetryPolicy
from sight_core.settings import LLMSettings, QuotaLimit


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _price() -> float:
    return LLMSettings().prices["fake-embedding"].input


# ------------------------------------------------------------------ the fake's similarity


def test_fake_vectors_are_deterministic_unit_and_related_texts_are_close() -> None:
    question = "which coffee does the persona drink in the morning"
    memories = [
        "I drink black coffee every morning before work",
        "my daughter plays the violin in the school orchestra",
        "the quarterly tax filing deadline is next week",
    ]
    q = fake_vector(question, 64)
    assert q == fake_vector(question, 64)
    assert math.isclose(sum(v * v for v in q), 1.0)
    scores = [_cosine(q, fake_vector(m, 64)) for m in memories]
    assert scores[0] == max(scores)
    assert scores[0] > 0.3 > max(scores[1:])


# ------------------------------------------------------------------ policy, batching, usage


async def test_1000_texts_with_20_percent_429s_all_embedded_batched_and_billed(
    fake_settings: LLMSettings,
) -> None:
    texts = [f"memory {i} about topic {i % 37}" for i in range(1000)]
    settings = fake_settings.model_copy(update={"max_attempts": 8})
    emb = build_embeddings(
        provider="fake", dimensions=16, settings=settings, failure_rate=0.2, seed=7
    )
    fake = emb.provider
    assert isinstance(fake, FakeEmbeddings)
    async with usage_scope() as usage:
        vectors = await emb.aembed_documents(texts)
    assert vectors == [fake_vector(t, 16) for t in texts]
    assert max(fake.batch_sizes) <= 100 and fake.served == 10
    assert fake.attempts > fake.served  # failures were injected and retried
    tokens = sum(estimate_tokens(len(t)) for t in texts)
    [record] = usage.records
    assert record.model == "fake-embedding" and record.outcome == "ok"
    assert (record.input_tokens, record.output_tokens) == (tokens, 0)
    assert record.attempts == fake.attempts
    assert record.failed_attempts == fake.attempts - fake.served
    assert record.cost_usd == pytest.approx(tokens * _price() / 1e6)
    assert usage.input_tokens == tokens and usage.cost_usd == record.cost_usd


def _direct(fake: FakeEmbeddings, batch_size: int, **kwargs: object) -> ResilientEmbeddings:
    return ResilientEmbeddings(
        fake,
        model_name=fake.model,
        provider_name="fake",
        dimensions=fake.dimensions,
        batch_size=batch_size,
        limiter=model_limiter("fake", f"direct-{batch_size}", 4),
        policy=RetryPolicy(name="t", max_attempts=4),
        breaker=CircuitBreaker("t"),
        **kwargs,  # type: ignore[arg-type]
    )


@settings(max_examples=40, deadline=None)
@given(
    texts=st.lists(st.sampled_from(["a b", "c", "", "a b", "long " * 50, "é ü", "x"]), max_size=30),
    batch_size=st.integers(1, 7),
)
async def test_any_texts_any_batch_size_give_each_texts_vector_in_order(
    texts: list[str], batch_size: int
) -> None:
    fake = FakeEmbeddings(dimensions=8)
    emb = _direct(fake, batch_size)
    vectors = await emb.aembed_documents(texts)
    assert vectors == [fake_vector(t, 8) for t in texts]
    assert all(size <= batch_size for size in fake.batch_sizes)
    assert sum(fake.batch_sizes) == len(set(texts))  # duplicates embedded once


async def test_a_400_is_not_retried_and_is_recorded_as_an_error(fake_settings: LLMSettings) -> None:
    emb = build_embeddings(provider="fake", dimensions=8, settings=fake_settings)
    fake = emb.provider
    assert isinstance(fake, FakeEmbeddings)
    fake.push("bad_request")
    async with usage_scope() as usage:
        with pytest.raises(Exception, match="400"):
            await emb.aembed_query("hello")
    assert fake.attempts == 1
    assert usage.errors == 1 and usage.failed_attempts == 1


async def test_breaker_is_shared_by_every_embeddings_object_of_the_model(
    fake_settings: LLMSettings,
) -> None:
    settings = fake_settings.model_copy(update={"max_attempts": 1, "breaker_failure_threshold": 2})
    first = build_embeddings(provider="fake", dimensions=8, settings=settings, seed=1)
    other = build_embeddings(provider="fake", dimensions=8, settings=settings, seed=2)
    assert first is not other and first.breaker is other.breaker
    fake = first.provider
    assert isinstance(fake, FakeEmbeddings)
    fake.push("server_error", "server_error")
    for _ in range(2):
        with pytest.raises(Exception, match=r"503|overloaded"):
            await first.aembed_query("x")
    second = other.provider
    assert isinstance(second, FakeEmbeddings)
    with pytest.raises(CircuitOpenError):
        await other.aembed_query("x")
    assert second.attempts == 0


async def test_concurrency_cap_holds_across_batches(fake_settings: LLMSettings) -> None:
    settings = fake_settings.model_copy(
        update={"embedding_concurrency": 2, "embedding_batch_size": 10}
    )
    emb = build_embeddings(provider="fake", dimensions=8, settings=settings, latency=0.02)
    fake = emb.provider
    assert isinstance(fake, FakeEmbeddings)
    await emb.aembed_documents([f"t{i}" for i in range(100)])
    assert len(fake.batch_sizes) == 10 and fake.max_in_flight == 2


async def test_budget_refuses_before_any_request(fake_settings: LLMSettings) -> None:
    emb = build_embeddings(provider="fake", dimensions=8, settings=fake_settings)
    fake = emb.provider
    assert isinstance(fake, FakeEmbeddings)
    async with usage_scope(budget_tokens=5):
        await emb.aembed_documents(["a long enough text to spend the budget"])
        with pytest.raises(BudgetExceededError):
            await emb.aembed_query("x")
    assert fake.attempts == 1


def test_sync_api_runs_the_same_path(fake_settings: LLMSettings) -> None:
    emb = build_embeddings(provider="fake", dimensions=8, settings=fake_settings)
    fake = emb.provider
    assert isinstance(fake, FakeEmbeddings)
    fake.push("rate_limit")
    assert emb.embed_documents(["a", "b"]) == [fake_vector("a", 8), fake_vector("b", 8)]
    assert emb.embed_query("a") == fake_vector("a", 8)
    assert fake.attempts == 3


def test_bad_configuration_is_refused_naming_the_value(fake_settings: LLMSettings) -> None:
    with pytest.raises(ConfigurationError, match="tier='pro'"):
        build_embeddings("pro", settings=fake_settings)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="dimensions=0"):
        build_embeddings(provider="fake", dimensions=0, settings=fake_settings)
    with pytest.raises(ConfigurationError, match="API key"):
        build_embeddings(provider="google", settings=LLMSettings(provider="google"))


# ------------------------------------------------------------------ the embedding cache


@pytest.fixture
def memory_cache() -> Cache:
    cache = Cache(prefix="t")
    cache.bind(MemoryBackend())
    return cache


async def test_cache_keys_on_model_dimensions_task_and_text(
    fake_settings: LLMSettings, memory_cache: Cache
) -> None:
    store = EmbeddingCache(memory_cache)
    emb = build_embeddings(provider="fake", dimensions=8, settings=fake_settings, cache=store)
    fake = emb.provider
    assert isinstance(fake, FakeEmbeddings)
    texts = ["alpha", "beta", "alpha"]
    first = await emb.aembed_documents(texts)
    async with usage_scope() as usage:
        again = await emb.aembed_documents(texts)
    assert again == first == [fake_vector(t, 8) for t in texts]
    assert fake.batch_sizes == [2]  # the second call sent nothing
    assert usage.cache_hits == 1 and usage.calls == 0 and usage.cost_usd == 0
    assert usage.saved_usd == pytest.approx(
        (estimate_tokens(5) + estimate_tokens(4)) * _price() / 1e6
    )
    await emb.aembed_query("alpha")  # a query is not a document
    await emb.aembed_documents(["alpha", "gamma"])  # only gamma is new
    assert fake.batch_sizes == [2, 1, 1]
    wider = build_embeddings(provider="fake", dimensions=16, settings=fake_settings, cache=store)
    assert await wider.aembed_documents(["alpha"]) == [fake_vector("alpha", 16)]


async def test_cache_on_redis_fails_open_when_redis_is_gone(
    fake_settings: LLMSettings, redis_client: Redis
) -> None:
    cache = Cache(prefix="t", op_timeout=0.5)
    cache.bind(redis_client)
    emb = build_embeddings(
        provider="fake", dimensions=8, settings=fake_settings, cache=EmbeddingCache(cache)
    )
    fake = emb.provider
    assert isinstance(fake, FakeEmbeddings)
    assert await emb.aembed_documents(["a", "b"]) == [fake_vector("a", 8), fake_vector("b", 8)]
    assert await emb.aembed_documents(["a", "b"]) == [fake_vector("a", 8), fake_vector("b", 8)]
    assert fake.batch_sizes == [2]
    await redis_client.aclose()
    unbound = Cache(prefix="t", op_timeout=0.2)
    unbound.bind(Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))
    down = build_embeddings(
        provider="fake", dimensions=8, settings=fake_settings, cache=EmbeddingCache(unbound)
    )
    assert await down.aembed_documents(["a"]) == [fake_vector("a", 8)]
    await unbound.aclose()


# ------------------------------------------------------------------ the real Google SDK


@pytest.fixture
def embed_settings(google_settings: LLMSettings) -> LLMSettings:
    return google_settings.model_copy(update={"embedding_dimensions": 8})


async def test_google_embeddings_batch_to_100_one_request_per_batch(
    gemini: FakeGeminiServer, embed_settings: LLMSettings
) -> None:
    emb = build_embeddings(settings=embed_settings)
    texts = [f"persona memory number {i}" for i in range(250)]
    async with usage_scope() as usage:
        vectors = await emb.aembed_documents(texts)
    assert vectors == [fake_vector(t, 8) for t in texts]
    requests = gemini.requests
    assert sorted(len(r.body["requests"]) for r in requests) == [50, 100, 100]
    assert {r.path for r in requests} == {"/v1beta/models/gemini-embedding-001:batchEmbedContents"}
    first = requests[0].body["requests"][0]
    assert first["outputDimensionality"] == 8 and first["taskType"] == "RETRIEVAL_DOCUMENT"
    [record] = usage.records
    tokens = sum(estimate_tokens(len(t)) for t in texts)
    assert record.input_tokens == tokens
    assert record.cost_usd == pytest.approx(tokens * 0.15 / 1e6)


async def test_google_query_429_retried_by_us_one_request_per_attempt(
    gemini: FakeGeminiServer, embed_settings: LLMSettings
) -> None:
    gemini.push(Reply.rate_limited("3s"), Reply.unavailable())
    emb = build_embeddings(settings=embed_settings)
    async with usage_scope() as usage:
        vector = await emb.aembed_query("what does she drink")
    assert vector == fake_vector("what does she drink", 8)
    assert gemini.count == 3
    assert gemini.requests[-1].body["requests"][0]["taskType"] == "RETRIEVAL_QUERY"
    assert usage.failed_attempts == 2 and usage.calls == 1


async def test_google_400_is_not_retried(
    gemini: FakeGeminiServer, embed_settings: LLMSettings
) -> None:
    gemini.push(Reply.bad_request("Request contains an invalid argument."))
    emb = build_embeddings(settings=embed_settings)
    with pytest.raises(Exception, match="400"):
        await emb.aembed_documents(["x"])
    assert gemini.count == 1


async def test_google_answer_of_the_wrong_length_is_refused(
    gemini: FakeGeminiServer, embed_settings: LLMSettings
) -> None:
    gemini.push(Reply(body={"embeddings": [{"values": [0.1, 0.2]}]}))
    emb = build_embeddings(settings=embed_settings.model_copy(update={"max_attempts": 1}))
    with pytest.raises(ValueError, match="2-dimension vector where 8 were asked"):
        await emb.aembed_documents(["x"])


async def test_google_slow_answer_times_out_per_attempt(
    gemini: FakeGeminiServer, embed_settings: LLMSettings
) -> None:
    settings = embed_settings.model_copy(update={"timeout": 0.3, "max_attempts": 2})
    gemini.push(Reply(body={"embeddings": []}, delay=1.0))
    emb = build_embeddings(settings=settings)
    assert await emb.aembed_query("late") == fake_vector("late", 8)
    assert gemini.count == 2


# ------------------------------------------------------------------ the quota governor


async def test_quota_books_every_request_and_stops_at_the_limit(
    fake_settings: LLMSettings, redis_client: Redis
) -> None:
    governor = QuotaGovernor(
        redis_client, model="fake-embedding", limits=QuotaLimit(rpm=3), project="t18"
    )
    settings = fake_settings.model_copy(update={"deadline": 1.0, "max_attempts": 2})
    emb = build_embeddings(provider="fake", dimensions=8, settings=settings, quota=governor)
    fake = emb.provider
    assert isinstance(fake, FakeEmbeddings)
    texts = [f"text {i}" for i in range(250)]
    assert await emb.aembed_documents(texts) == [fake_vector(t, 8) for t in texts]
    assert fake.attempts == 3 and await governor.outstanding() == 0  # all settled
    with pytest.raises(RateLimitedError):
        await emb.aembed_query("one request too many this minute")
    assert fake.attempts == 3  # refused before any request


async def test_quota_refuses_a_batch_larger_than_the_token_limit(
    fake_settings: LLMSettings,
) -> None:
    governor = QuotaGovernor(None, model="fake-embedding", limits=QuotaLimit(tpm=10))
    emb = build_embeddings(provider="fake", dimensions=8, settings=fake_settings, quota=governor)
    fake = emb.provider
    assert isinstance(fake, FakeEmbeddings)
    with pytest.raises(RateLimitedError):
        await emb.aembed_query("x" * 100)  # 25 estimated tokens: never admissible
    assert fake.attempts == 0


def test_google_sync_api_sends_one_request_per_batch(
    gemini: FakeGeminiServer, embed_settings: LLMSettings
) -> None:
    gemini.push(Reply.unavailable())
    emb = build_embeddings(settings=embed_settings)
    texts = [f"note {i}" for i in range(120)]
    assert emb.embed_documents(texts) == [fake_vector(t, 8) for t in texts]
    sizes = sorted(len(r.body["requests"]) for r in gemini.requests)
    assert sizes in ([20, 20, 100], [20, 100, 100])  # two batches, the 503'd one sent twice
