"""Resilient LLM models: one ``build_chat_model()``, classified retries, breaker, usage, cost.

- :func:`build_chat_model`: a cached LangChain chat model per tier (``flash``/``pro``) with
  SDK retries off, an explicit timeout, a shared per-model concurrency cap, the retry policy,
  the circuit breaker and the ``pro`` → ``flash`` fallback.
- :class:`FakeChatModel` (provider ``fake``): scripted failures, latency, deterministic answers.
- :func:`structured_output` / :func:`parse_structured`: validated objects from answers.
- :class:`ResponseCache` / :class:`SightLLMCache`: opt-in caching of identical requests.
- :func:`usage_scope`: tokens and money of every call, per project or operation.
- :class:`QuotaGovernor`: requests and tokens per minute and requests per day of a model,
  reserved in one step across every worker through Redis, settled with the real usage.
- :func:`build_embeddings`: a resilient LangChain ``Embeddings`` with the same policy, batched
  to the provider's limit, optional :class:`EmbeddingCache`; :class:`FakeEmbeddings` gives
  deterministic vectors in which related texts are close.
"""

from ._embeddings import EmbeddingCache, ResilientEmbeddings
from ._factory import (
    EmbeddingTier,
    Provider,
    Tier,
    aclose_models,
    build_chat_model,
    build_embeddings,
    clear_model_cache,
    model_limiter,
)
from ._fake import FailureKind, FakeChatModel, FakeFailure, ScriptItem
from ._fake_embeddings import FakeEmbeddings, fake_vector
from ._limit import SharedLimiter
from ._quota import QuotaDimension, QuotaGovernor, QuotaLease, estimate_tokens
from ._resilient import BLOCK_REASONS, ResilientChatModel, check_content
from ._response_cache import ResponseCache, SightLLMCache, request_digest
from ._structured import (
    NativeStructuredOutput,
    StructuredMethod,
    extract_json,
    parse_structured,
    redact_excerpt,
    structured_output,
)
from ._usage import (
    ModelUsage,
    Usage,
    UsageRecord,
    UsageSink,
    add_usage_sink,
    cost_of,
    current_usage,
    normalize_model_name,
    price_for,
    remove_usage_sink,
    usage_scope,
)

__all__ = [
    "BLOCK_REASONS",
    "EmbeddingCache",
    "EmbeddingTier",
    "FailureKind",
    "FakeChatModel",
    "FakeEmbeddings",
    "FakeFailure",
    "ModelUsage",
    "NativeStructuredOutput",
    "Provider",
    "QuotaDimension",
    "QuotaGovernor",
    "QuotaLease",
    "ResilientChatModel",
    "ResilientEmbeddings",
    "ResponseCache",
    "ScriptItem",
    "SharedLimiter",
    "SightLLMCache",
    "StructuredMethod",
    "Tier",
    "Usage",
    "UsageRecord",
    "UsageSink",
    "aclose_models",
    "add_usage_sink",
    "build_chat_model",
    "build_embeddings",
    "check_content",
    "clear_model_cache",
    "cost_of",
    "current_usage",
    "estimate_tokens",
    "extract_json",
    "fake_vector",
    "model_limiter",
    "normalize_model_name",
    "parse_structured",
    "price_for",
    "redact_excerpt",
    "remove_usage_sink",
    "request_digest",
    "structured_output",
    "usage_scope",
]
