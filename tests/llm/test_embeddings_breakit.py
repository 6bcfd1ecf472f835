"""Break-it attacks on ``build_embeddings`` (issue 18): the real ``GoogleGenerativeAIEmbeddings``
against the local fake Gemini server (and the fake provider where the SDK does not matter).

Each test tries to make an embeddings call return a vector for the wrong text, lose or
duplicate a text across retries and batch boundaries, or count usage wrongly.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from llm_gemini_server import FakeGeminiServer, Reply

from sight_core.cache import Cache, MemoryBackend
from sight_core.llm import (
    EmbeddingCache,
    build_embeddings,
    estimate_tokens,
    fake_vector,
    usage_scope,
)
from sight_core.settings import LLMSettings

DIMS = 8


@pytest.fixture
def embed_settings(google_settings: LLMSettings) -> LLMSettings:
    return google_settings.model_copy(update={"embedding_dimensions": DIMS})


def _texts_of(request_body: dict[str, object]) -> list[str]:
    return [
        "".join(p.get("text", "") for p in r["content"]["parts"])  # type: ignore[index]
        for r in request_body["requests"]  # type: ignore[attr-defined]
    ]


def _tokens(texts: list[str]) -> int:
    return sum(estimate_tokens(len(t)) for t in texts)


@pytest.mark.parametrize(("count", "sizes"), [(0, []), (1, [1]), (100, [100]), (101, [1, 100])])
async def test_batch_boundaries(
    gemini: FakeGeminiServer, embed_settings: LLMSettings, count: int, sizes: list[int]
) -> None:
    texts = [f"text number {i}" for i in range(count)]
    emb = build_embeddings(settings=embed_settings)
    vectors = await emb.aembed_documents(texts)
    assert vectors == [fake_vector(t, DIMS) for t in texts]
    assert sorted(len(r.body["requests"]) for r in gemini.requests) == sizes
    sent = [t for r in gemini.requests for t in _texts_of(r.body)]
    assert sorted(sent) == sorted(texts)


async def test_duplicates_and_empty_strings_keep_their_places(
    gemini: FakeGeminiServer, embed_settings: LLMSettings
) -> None:
    texts = ["b", "", "a", "b", "", "c", "a", " "]
    emb = build_embeddings(settings=embed_settings)
    async with usage_scope() as usage:
        vectors = await emb.aembed_documents(texts)
    assert vectors == [fake_vector(t, DIMS) for t in texts]
    sent = [t for r in gemini.requests for t in _texts_of(r.body)]
    assert sorted(sent) == sorted(set(texts))  # each distinct text sent once
    assert usage.input_tokens == _tokens(sorted(set(texts)))


async def test_a_text_longer_than_the_sdk_batch_estimate_goes_alone_and_keeps_its_place(
    gemini: FakeGeminiServer, embed_settings: LLMSettings
) -> None:
    long = "word " * 11_000  # 22,000 SDK tokens: over the 20,000 the SDK packs in one request
    texts = ["before", long, "after", "word " * 4_000, "word " * 4_001]
    emb = build_embeddings(settings=embed_settings)
    async with usage_scope() as usage:
        vectors = await emb.aembed_documents(texts)
    assert vectors == [fake_vector(t, DIMS) for t in texts]
    batches = [_texts_of(r.body) for r in gemini.requests]
    assert [long] in batches
    assert sorted(t for b in batches for t in b) == sorted(texts)
    [record] = usage.records
    assert record.attempts == len(gemini.requests) and record.failed_attempts == 0
    assert record.input_tokens == _tokens(texts)


async def test_429_and_503_mid_call_retry_only_the_failed_batches(
    gemini: FakeGeminiServer, embed_settings: LLMSettings
) -> None:
    texts = [f"memory {i}" for i in range(350)]  # 4 batches
    settings = embed_settings.model_copy(update={"max_attempts": 5, "embedding_concurrency": 1})
    gemini.push(
        Reply(), Reply.rate_limited("0s"), Reply(), Reply.unavailable(), Reply.unavailable()
    )
    emb = build_embeddings(settings=settings)
    async with usage_scope() as usage:
        vectors = await emb.aembed_documents(texts)
    assert vectors == [fake_vector(t, DIMS) for t in texts]
    requests = gemini.requests
    assert len(requests) == 7  # 4 answered + 3 refused
    per_text = Counter(t for r in requests for t in _texts_of(r.body))
    refused = [_texts_of(requests[i].body) for i in (1, 3, 4)]
    retried = {t for batch in refused for t in batch}
    # a refused batch is sent again whole, the others exactly once
    assert all(per_text[t] == (1 + sum(t in b for b in refused)) for t in texts)
    assert len(retried) > 0 and len(per_text) == len(texts)
    [record] = usage.records
    assert (record.attempts, record.failed_attempts) == (7, 3)
    assert record.input_tokens == _tokens(texts)  # billed once per text, not per attempt


async def test_cancelled_mid_call_records_the_answered_batches_once_and_poisons_nothing(
    gemini: FakeGeminiServer, embed_settings: LLMSettings
) -> None:
    cache = Cache(prefix="t")
    cache.bind(MemoryBackend())
    settings = embed_settings.model_copy(update={"embedding_concurrency": 1})
    emb = build_embeddings(settings=settings, cache=EmbeddingCache(cache))
    texts = [f"note {i}" for i in range(250)]  # 3 batches, one at a time
    gemini.push(Reply(), Reply(), Reply(body={"embeddings": []}, delay=3.0))
    async with usage_scope() as usage:
        task = asyncio.create_task(emb.aembed_documents(texts))
        for _ in range(200):
            await asyncio.sleep(0.02)
            if len(gemini.requests) == 3:
                break
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    answered = [t for r in gemini.requests[:2] for t in _texts_of(r.body)]
    assert len(answered) == 200
    [record] = usage.records  # the billed batches are recorded once, not lost
    assert (record.outcome, record.error) == ("incomplete", "CancelledError")
    assert (record.attempts, record.failed_attempts) == (3, 1)
    assert usage.input_tokens == _tokens(answered)
    gemini.reset()
    again = await emb.aembed_documents(texts)
    assert again == [fake_vector(t, DIMS) for t in texts]
    await cache.aclose()


async def test_cache_never_answers_for_another_model_dimension_or_task(
    gemini: FakeGeminiServer, embed_settings: LLMSettings
) -> None:
    cache = Cache(prefix="t")
    cache.bind(MemoryBackend())
    store = EmbeddingCache(cache)
    base = build_embeddings(settings=embed_settings, cache=store)
    wider = build_embeddings(
        settings=embed_settings.model_copy(update={"embedding_dimensions": DIMS * 2}), cache=store
    )
    other_model = build_embeddings(
        settings=embed_settings.model_copy(update={"embedding_model": "text-embedding-004"}),
        cache=store,
    )
    assert await base.aembed_documents(["same"]) == [fake_vector("same", DIMS)]
    assert await wider.aembed_documents(["same"]) == [fake_vector("same", DIMS * 2)]
    await other_model.aembed_documents(["same"])
    await base.aembed_query("same")
    assert [r.model for r in gemini.requests] == [
        "gemini-embedding-001",
        "gemini-embedding-001",
        "text-embedding-004",
        "gemini-embedding-001",
    ]
    assert gemini.requests[-1].body["requests"][0]["taskType"] == "RETRIEVAL_QUERY"
    assert await base.aembed_documents(["same"]) == [fake_vector("same", DIMS)]
    assert len(gemini.requests) == 4  # the hit came from the cache
    await cache.aclose()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
async def test_a_provider_vector_with_nan_or_inf_is_refused_not_returned(
    gemini: FakeGeminiServer, embed_settings: LLMSettings, bad: float
) -> None:
    """pgvector refuses NaN/inf at insert: a vector like that must fail the embedding call
    (naming the model), not be returned and cached for the write to fail later."""
    values = [0.1] * DIMS
    values[2] = bad
    gemini.push(Reply(body={"embeddings": [{"values": values}]}))
    emb = build_embeddings(settings=embed_settings.model_copy(update={"max_attempts": 1}))
    with pytest.raises(ValueError, match=r"gemini-embedding-001: .*component 2"):
        await emb.aembed_documents(["x"])


async def test_cached_and_missing_texts_with_a_429_between_them_keep_their_places(
    gemini: FakeGeminiServer, embed_settings: LLMSettings
) -> None:
    cache = Cache(prefix="t")
    cache.bind(MemoryBackend())
    emb = build_embeddings(settings=embed_settings, cache=EmbeddingCache(cache))
    await emb.aembed_documents(["a", "c"])
    gemini.reset()
    gemini.push(Reply.rate_limited("0s"))
    texts = ["a", "b", "c", "d", "b", "a"]
    async with usage_scope() as usage:
        vectors = await emb.aembed_documents(texts)
    assert vectors == [fake_vector(t, DIMS) for t in texts]
    assert [sorted(_texts_of(r.body)) for r in gemini.requests] == [["b", "d"], ["b", "d"]]
    assert usage.cache_hits == 1 and usage.calls == 1 and usage.failed_attempts == 1
    assert usage.input_tokens == _tokens(["b", "d"])
    await cache.aclose()
