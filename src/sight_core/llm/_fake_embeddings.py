"""A deterministic embedding model for tests, docs and benchmarks (provider ``fake``).

:class:`FakeEmbeddings` is a real LangChain ``Embeddings``. A text's vector is a hashed bag of
its words and of their character trigrams, each feature added at a few hashed positions with
hashed signs, then L2-normalised: texts that share words (or word pieces) are close in cosine
distance, unrelated texts are near-orthogonal, and the same text always gets the same vector.
Tests can therefore assert rankings ("the memory about coffee is nearest to the coffee
question") without a model.

Each *request* (one ``aembed_documents``/``aembed_query`` call of this object) first consumes
the next item of ``script``; with the script used up, ``failure_rate`` (seeded) decides whether
it fails with ``failure``. Injected failures are the exceptions ``GoogleGenerativeAIEmbeddings``
raises for the same HTTP answers (``GoogleGenerativeAIError`` from the SDK's ``ClientError`` /
``ServerError``), so the resilience classifier sees what production sees. A request with more
than ``max_batch`` texts fails with a 400, like Gemini's batch limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.embeddings import Embeddings

from sight_core.errors import ConfigurationError

__all__ = ["EmbeddingFailureKind", "FakeEmbeddings", "fake_vector"]

EmbeddingFailureKind = Literal["rate_limit", "server_error", "timeout", "bad_request"]

_WORD = re.compile(r"\w+", re.UNICODE)
_SPREAD = 4
"""Positions each feature is added at (more positions: smoother similarity in small dims)."""


def _features(text: str) -> list[tuple[str, float]]:
    words = _WORD.findall(text.lower())
    features: list[tuple[str, float]] = []
    for word in words:
        if len(word) <= 3:  # "the", "in", "a": little meaning, so little weight
            features.append(("w:" + word, 0.2))
            continue
        features.append(("w:" + word, 1.0))
        padded = f"#{word}#"
        features.extend(("t:" + padded[i : i + 3], 0.35) for i in range(len(padded) - 2))
    return features


def fake_vector(text: str, dimensions: int) -> list[float]:
    """The fake provider's embedding of ``text``: deterministic, unit length, similar texts
    close. An empty (or punctuation-only) text gets a fixed unit vector."""
    vector = [0.0] * dimensions
    for feature, weight in _features(text):
        digest = hashlib.blake2b(feature.encode(), digest_size=8 * _SPREAD).digest()
        for i in range(_SPREAD):
            word = int.from_bytes(digest[8 * i : 8 * i + 8], "little")
            sign = 1.0 if word & 1 else -1.0
            vector[(word >> 1) % dimensions] += sign * weight
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        vector[0] = 1.0
        return vector
    return [v / norm for v in vector]


class FakeEmbeddings(Embeddings):
    """Deterministic embeddings with similarity structure and scripted failures.

    Counters (``attempts``, ``served``, ``batch_sizes``, ``max_in_flight``) let tests assert how
    many requests reached the "provider", how large they were and how many ran at once.
    """

    def __init__(
        self,
        *,
        model: str = "fake-embedding",
        dimensions: int = 64,
        max_batch: int = 100,
        latency: float = 0.0,
        script: Sequence[Literal["ok"] | EmbeddingFailureKind] = (),
        failure_rate: float = 0.0,
        failure: EmbeddingFailureKind = "rate_limit",
        retry_delay: float | None = 1.0,
        seed: int = 0,
    ) -> None:
        if dimensions < 1:
            raise ConfigurationError(f"FakeEmbeddings(dimensions={dimensions}): use >= 1")
        if not 0.0 <= failure_rate <= 1.0:
            raise ConfigurationError(
                f"FakeEmbeddings(failure_rate={failure_rate}): use a fraction in [0, 1]"
            )
        self.model = model
        self.dimensions = dimensions
        self.max_batch = max_batch
        self.latency = latency
        self.failure_rate = failure_rate
        self.failure: EmbeddingFailureKind = failure
        self.retry_delay = retry_delay
        self._script: deque[str] = deque(script)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.attempts = 0
        self.served = 0
        self.batch_sizes: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        if failure_rate or any(item != "ok" for item in script):
            import langchain_google_genai.embeddings  # noqa: F401  (error types, off the loop)

    def push(self, *items: Literal["ok"] | EmbeddingFailureKind) -> None:
        """Append items to the remaining script."""
        with self._lock:
            self._script.extend(items)

    # ---------------------------------------------------------------- one request

    def _begin(self, size: int) -> str:
        with self._lock:
            self.attempts += 1
            self.batch_sizes.append(size)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self._script:
                return self._script.popleft()
            if self.failure_rate and self._rng.random() < self.failure_rate:
                return self.failure
            return "ok"

    def _end(self, item: str) -> None:
        with self._lock:
            self.in_flight -= 1
            if item == "ok":
                self.served += 1

    def _answer(self, item: str, texts: Sequence[str]) -> list[list[float]]:
        if len(texts) > self.max_batch:
            raise _error("bad_request", None, f"at most {self.max_batch} requests in a batch")
        if item != "ok":
            raise _error(item, self.retry_delay)
        return [fake_vector(text, self.dimensions) for text in texts]

    async def _arequest(self, texts: Sequence[str]) -> list[list[float]]:
        item = self._begin(len(texts))
        try:
            if self.latency and item in ("ok", "timeout"):
                await asyncio.sleep(self.latency)
            return self._answer(item, texts)
        finally:
            self._end(item)

    def _request(self, texts: Sequence[str]) -> list[list[float]]:
        item = self._begin(len(texts))
        try:
            if self.latency and item in ("ok", "timeout"):
                time.sleep(self.latency)
            return self._answer(item, texts)
        finally:
            self._end(item)

    # ---------------------------------------------------------------- LangChain API

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One request for all ``texts``."""
        return self._request(texts)

    def embed_query(self, text: str) -> list[float]:
        """One request for ``text``."""
        return self._request([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """One request for all ``texts``."""
        return await self._arequest(texts)

    async def aembed_query(self, text: str) -> list[float]:
        """One request for ``text``."""
        return (await self._arequest([text]))[0]


def _error(kind: str, retry_delay: float | None, message: str | None = None) -> Exception:
    """The exception ``GoogleGenerativeAIEmbeddings`` raises for the same HTTP answer."""
    from google.genai.errors import ClientError, ServerError
    from langchain_google_genai._common import GoogleGenerativeAIError

    if kind == "timeout":
        import httpx

        cause: Exception = httpx.ReadTimeout("fake read timeout")
        exc = GoogleGenerativeAIError(f"Error embedding content: {cause}")
    elif kind == "server_error":
        body = _body(503, "The model is overloaded.", "UNAVAILABLE")
        cause = ServerError(503, body)
        exc = GoogleGenerativeAIError(f"Error embedding content: {cause}")
    elif kind == "rate_limit":
        error = _body(429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED")
        if retry_delay is not None:
            error["error"]["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{retry_delay:g}s",
                }
            ]
        cause = ClientError(429, error)
        exc = GoogleGenerativeAIError(f"Error embedding content (429): {cause}")
    else:
        cause = ClientError(400, _body(400, message or "Invalid argument.", "INVALID_ARGUMENT"))
        exc = GoogleGenerativeAIError(f"Error embedding content (400): {cause}")
    exc.__cause__ = cause
    return exc


def _body(code: int, message: str, status: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}
