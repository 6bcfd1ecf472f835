"""Resilient embeddings: a LangChain ``Embeddings`` with the chat models' policy and accounting.

Every call of :class:`ResilientEmbeddings` goes through, in order:

1. the usage scope's budget check (no request when it is spent);
2. the opt-in :class:`EmbeddingCache`, keyed on (model, dimensions, task, text digest): cached
   texts cost nothing; identical texts in one call are embedded once;
3. batching of the remaining texts to the provider's limits (``SIGHT_LLM__EMBEDDING_BATCH_SIZE``
   texts and the SDK's 20,000-token estimate per request, so the SDK never splits a batch into
   requests we did not count);
4. per batch, concurrently: the retry policy, around the model's circuit breaker (shared with
   every embeddings object of that model: one cooldown, one circuit), around the optional
   :class:`~sight_core.llm.QuotaGovernor` (one request and the batch's estimated tokens booked
   before each attempt), around the model's shared concurrency cap and the per-attempt
   timeout, around one provider request.

One :class:`~sight_core.llm.UsageRecord` is written per call (``outcome="incomplete"`` for a
call cancelled midway), with the estimated input tokens of the batches that were answered
(four characters a token, :func:`estimate_tokens`; Gemini does not report them for
embeddings) priced at the model's embedding price, attempts and
failed attempts summed over batches. Cache hits are recorded separately
(``outcome="cache_hit"``, the avoided cost in ``saved_usd``).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import string
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from langchain_core.embeddings import Embeddings

from sight_core.concurrency import Limiter, gather_limited
from sight_core.errors import ConfigurationError
from sight_core.resilience import CircuitBreaker, RetryPolicy
from sight_core.settings import ModelPrice

from ._quota import QuotaGovernor, estimate_tokens
from ._sync import in_sync_call, run_sync, to_thread
from ._usage import (
    Outcome,
    UsageRecord,
    active_labels,
    check_budget,
    cost_of,
    emit_usage,
    note_unpriced,
    price_for,
    usage_wanted,
)

if TYPE_CHECKING:
    from sight_core.cache import Cache

__all__ = ["EmbeddingCache", "ResilientEmbeddings", "Task", "batches", "text_digest"]

Task = Literal["document", "query"]
"""Gemini embeds a query (``RETRIEVAL_QUERY``) and a document (``RETRIEVAL_DOCUMENT``)
differently; the cache keeps them apart."""

SDK_MAX_BATCH_TOKENS = 20_000
"""langchain-google-genai splits a batch whose estimated tokens exceed this."""
_SDK_SPLIT = re.compile(f"([{re.escape(string.punctuation)}\t\n ])")


def _sdk_tokens(text: str) -> int:
    """langchain-google-genai's own batch-size estimate of ``text`` (twice its words,
    punctuation and whitespace), so our batches are never split by the SDK."""
    return 2 * sum(1 for segment in _SDK_SPLIT.split(text) if segment)


def batches(texts: Sequence[str], max_texts: int) -> list[list[int]]:
    """Indices of ``texts`` grouped into requests of at most ``max_texts`` texts and at most
    :data:`SDK_MAX_BATCH_TOKENS` estimated tokens (a longer text goes alone)."""
    groups: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i, text in enumerate(texts):
        cost = _sdk_tokens(text)
        if current and (len(current) >= max_texts or tokens + cost > SDK_MAX_BATCH_TOKENS):
            groups.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += cost
    if current:
        groups.append(current)
    return groups


def _tokens(texts: Sequence[str]) -> int:
    """Estimated input tokens of ``texts`` (what the usage record and the quota count)."""
    return sum(estimate_tokens(len(text)) for text in texts)


def text_digest(text: str) -> str:
    """SHA-256 of ``text`` (UTF-8), hex: what the cache keys a text by."""
    return hashlib.sha256(text.encode()).hexdigest()


class EmbeddingCache:
    """Cache embeddings in ``cache`` (a bound :class:`~sight_core.cache.Cache`), one entry per
    (model, dimensions, task, text digest).

    A call reads every text in one ``MGET`` and writes the missing ones in one pipeline
    (:meth:`~sight_core.cache.Cache.cached_many`); a Redis outage makes every text a miss,
    never an error. ``version``: bump it to drop every cached vector at once.
    """

    def __init__(
        self,
        cache: Cache,
        *,
        ttl: float = 30 * 86_400.0,
        namespace: str = "embeddings",
        version: int = 1,
    ) -> None:
        self.cache = cache
        self.ttl = ttl

        async def vectors(
            digests: list[str],
            model: str,
            dimensions: int,
            task: str,
            compute: Callable[[list[str]], Awaitable[dict[str, list[float]]]],
        ) -> dict[str, list[float]]:
            return await compute(digests)

        self._cached = cache.cached_many(
            namespace=namespace,
            version=version,
            ttl=ttl,
            key="{model}:{dimensions}:{task}:{digests}",
            items="digests",
        )(vectors)

    async def get_or_embed(
        self,
        model: str,
        dimensions: int,
        task: Task,
        digests: list[str],
        compute: Callable[[list[str]], Awaitable[dict[str, list[float]]]],
    ) -> dict[str, list[float]]:
        """The vector of every digest: cached ones read, the others from ``compute(missing)``
        (which must return every digest it is given) and stored."""
        return await self._cached(digests, model, dimensions, task, compute)


class _Tally:
    """Requests of one call, across its batches."""

    __slots__ = ("attempts", "failed", "tokens")

    def __init__(self) -> None:
        self.attempts = 0
        self.failed = 0
        self.tokens = 0


class ResilientEmbeddings(Embeddings):
    """A provider's ``Embeddings`` with retries, a breaker, a concurrency cap, batching, an
    optional cache and usage records.

    Build it with :func:`~sight_core.llm.build_embeddings`; the constructor is for tests and
    custom wiring. ``await emb.aembed_documents(texts)`` / ``aembed_query(text)``; the sync
    methods run the same path on the library's sync loop (and refuse inside a running loop).

    Raises (from calls): the provider's permanent errors (a 400 is not retried);
    :class:`~sight_core.errors.CircuitOpenError` / ``RateLimitedError`` while the model's
    circuit is open or cooling down; :class:`~sight_core.errors.DeadlineExceededError`; the
    last transient error once attempts run out; ``BudgetExceededError``;
    :class:`ValueError` when the provider answers a vector of the wrong length or with a
    NaN/infinite component.
    """

    def __init__(
        self,
        provider: Embeddings,
        *,
        model_name: str,
        provider_name: str = "custom",
        dimensions: int,
        batch_size: int = 100,
        limiter: Limiter,
        policy: RetryPolicy,
        breaker: CircuitBreaker,
        attempt_timeout: float | None = None,
        cache: EmbeddingCache | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        quota: QuotaGovernor | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError(f"ResilientEmbeddings(batch_size={batch_size}): use >= 1")
        self.provider = provider
        self.model_name = model_name
        self.provider_name = provider_name
        self.dimensions = dimensions
        self.batch_size = batch_size
        self.limiter = limiter
        self.policy = policy
        self.breaker = breaker
        self.attempt_timeout = attempt_timeout
        self.cache = cache
        self.quota = quota
        self.price: ModelPrice | None = price_for(model_name, prices or {})

    def __repr__(self) -> str:
        return (
            f"ResilientEmbeddings(model={self.model_name!r}, provider={self.provider_name!r}, "
            f"dimensions={self.dimensions}, batch_size={self.batch_size})"
        )

    # ---------------------------------------------------------------- LangChain API

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order (``RETRIEVAL_DOCUMENT`` on Gemini)."""
        return await self._embed(list(texts), "document")

    async def aembed_query(self, text: str) -> list[float]:
        """The vector of a search query (``RETRIEVAL_QUERY`` on Gemini)."""
        return (await self._embed([text], "query"))[0]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Sync :meth:`aembed_documents` (same policy, cap and usage)."""
        return run_sync("embed_documents", lambda: self.aembed_documents(texts))

    def embed_query(self, text: str) -> list[float]:
        """Sync :meth:`aembed_query`."""
        return run_sync("embed_query", lambda: self.aembed_query(text))

    async def aclose(self) -> None:
        """Close the provider's HTTP client, if it has one that can be closed."""
        client = getattr(self.provider, "client", None)
        aio = getattr(client, "aio", None)
        close = getattr(aio, "aclose", None)
        if close is not None:
            await close()

    # ---------------------------------------------------------------- the call

    async def _embed(self, texts: list[str], task: Task) -> list[list[float]]:
        check_budget()
        if not texts:
            return []
        started = time.perf_counter()
        digests = [text_digest(t) for t in texts]
        by_digest = dict(zip(digests, texts, strict=True))
        tally = _Tally()
        computed: set[str] = set()

        async def compute(missing: list[str]) -> dict[str, list[float]]:
            computed.update(missing)
            wanted = [by_digest[d] for d in missing]
            vectors = await self._embed_uncached(wanted, task, tally)
            return dict(zip(missing, vectors, strict=True))

        unique = list(by_digest)
        try:
            if self.cache is None:
                found = await compute(unique)
            else:
                found = await self.cache.get_or_embed(
                    self.model_name, self.dimensions, task, unique, compute
                )
        except Exception as exc:
            await self._record("error", tally, time.perf_counter() - started, type(exc).__name__)
            raise
        except BaseException as exc:  # cancelled: the batches answered so far were billed
            await self._record(
                "incomplete", tally, time.perf_counter() - started, type(exc).__name__
            )
            raise
        latency = time.perf_counter() - started
        if tally.attempts:
            await self._record("ok", tally, latency)
        if self.cache is not None and len(computed) < len(unique) and usage_wanted():
            await self._record_hits([by_digest[d] for d in unique if d not in computed], latency)
        return [found[d] for d in digests]

    async def _embed_uncached(
        self, texts: list[str], task: Task, tally: _Tally
    ) -> list[list[float]]:
        groups = batches(texts, self.batch_size)

        async def one(group: list[int]) -> list[list[float]]:
            batch = [texts[i] for i in group]
            vectors: list[list[float]] = await self.policy.call(
                self.breaker.call, self._attempt, batch, task, tally
            )
            tally.tokens += _tokens(batch)
            return vectors

        # as many batches in flight as the model's cap lets run: no task per batch waiting
        # on the limiter (a million texts would otherwise be 10,000 parked tasks)
        results = await gather_limited((one(g) for g in groups), limit=self.limiter.limit)
        return [v for batch_vectors in results for v in batch_vectors]

    async def _attempt(self, batch: list[str], task: Task, tally: _Tally) -> list[list[float]]:
        tally.attempts += 1
        try:
            quota = self.quota
            if quota is None:
                vectors = await self._capped(batch, task)
            else:
                # one request and the batch's estimated tokens, booked before it is sent;
                # released if it fails, kept as booked (the estimate is the usage) if it answers
                lease = await quota.reserve(1, _tokens(batch), 0, deadline=self.policy.deadline)
                async with lease:
                    vectors = await self._capped(batch, task)
            self._check(batch, vectors)
        except BaseException:
            tally.failed += 1
            raise
        return vectors

    async def _capped(self, batch: list[str], task: Task) -> list[list[float]]:
        """One provider request under the concurrency cap and the per-attempt timeout."""
        limiter = self.limiter
        await limiter.acquire()
        try:
            if self.attempt_timeout is None:
                return await self._provider_call(batch, task)
            async with asyncio.timeout(self.attempt_timeout):
                return await self._provider_call(batch, task)
        finally:
            limiter.release()

    async def _provider_call(self, batch: list[str], task: Task) -> list[list[float]]:
        provider = self.provider
        if task == "query":
            if in_sync_call():
                return [await to_thread(provider.embed_query, batch[0])]
            return [await provider.aembed_query(batch[0])]
        if in_sync_call():
            return await to_thread(provider.embed_documents, batch)
        return await provider.aembed_documents(batch)

    def _check(self, batch: list[str], vectors: list[list[float]]) -> None:
        if len(vectors) != len(batch):
            raise ValueError(f"{self.model_name}: {len(vectors)} vectors for {len(batch)} texts")
        for vector in vectors:
            if len(vector) != self.dimensions:
                raise ValueError(
                    f"{self.model_name}: a {len(vector)}-dimension vector where "
                    f"{self.dimensions} were asked (SIGHT_LLM__EMBEDDING_DIMENSIONS)"
                )
            if not all(map(math.isfinite, vector)):  # pgvector would refuse it at the write
                position = next(i for i, x in enumerate(vector) if not math.isfinite(x))
                raise ValueError(
                    f"{self.model_name}: component {position} of an answered vector is "
                    f"{vector[position]!r}; a vector must be finite"
                )

    # ---------------------------------------------------------------- accounting

    def _usage_record(
        self,
        outcome: Outcome,
        tally: _Tally,
        latency: float,
        error: str | None = None,
    ) -> UsageRecord:
        tokens = tally.tokens
        price = self.price
        cost = cost_of(price, tokens, 0) if price is not None else 0.0
        hit = outcome == "cache_hit"
        return UsageRecord(
            model=self.model_name,
            requested_model=self.model_name,
            provider=self.provider_name,
            outcome=outcome,
            input_tokens=tokens,
            cost_usd=0.0 if hit else cost,
            saved_usd=cost if hit else 0.0,
            billed=not hit,
            priced=price is not None,
            attempts=tally.attempts,
            failed_attempts=tally.failed,
            error=error,
            latency_s=latency,
            labels=active_labels(),
        )

    async def _record(
        self, outcome: Outcome, tally: _Tally, latency: float, error: str | None = None
    ) -> None:
        if self.price is None and tally.tokens:
            note_unpriced(self.model_name)
        if usage_wanted():
            await emit_usage(self._usage_record(outcome, tally, latency, error))

    async def _record_hits(self, texts: Sequence[str], latency: float) -> None:
        tally = _Tally()
        tally.tokens = _tokens(texts)
        await emit_usage(self._usage_record("cache_hit", tally, latency))
