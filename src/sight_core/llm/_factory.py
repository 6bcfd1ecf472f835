"""``build_chat_model()``: the one way services get a chat model.

One instance per configuration is built on first use and reused (a model holds an HTTP
client; building one per call was a leak and a latency cost). Limiters and breakers are
shared per model name (and per cap / breaker thresholds), so every configuration of
``gemini-2.5-pro`` built from the same settings counts against the same concurrency cap and
the same circuit, whatever its sampling parameters.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING, Any, Literal

from sight_core.concurrency import Limiter
from sight_core.errors import ConfigurationError
from sight_core.resilience import BreakerStore, CircuitBreaker, RetryPolicy, classify
from sight_core.settings import LLMSettings, SightSettings

from ._embeddings import EmbeddingCache, ResilientEmbeddings
from ._limit import SharedLimiter
from ._quota import QuotaGovernor
from ._resilient import ResilientChatModel
from ._usage import normalize_model_name

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel
    from redis.asyncio import Redis

    from ._response_cache import ResponseCache

__all__ = [
    "Provider",
    "Tier",
    "aclose_models",
    "EmbeddingTier",
    "build_chat_model",
    "build_embeddings",
    "clear_model_cache",
    "is_rate_limit",
    "model_limiter",
]

Tier = Literal["flash", "pro"]
Provider = Literal["google", "fake"]
EmbeddingTier = Literal["default"]
"""Embedding tiers: ``default`` is ``SIGHT_LLM__EMBEDDING_MODEL``."""

_lock = threading.Lock()
_models: dict[tuple[Any, ...], ResilientChatModel] = {}
_embedders: dict[tuple[Any, ...], ResilientEmbeddings] = {}
_limiters: dict[tuple[str, str, int], SharedLimiter] = {}
_breakers: dict[tuple[Any, ...], CircuitBreaker] = {}
_governors: dict[tuple[Any, ...], QuotaGovernor | None] = {}
_default: list[LLMSettings] = []
_fingerprints: dict[int, tuple[LLMSettings, str]] = {}
_FAKE_SCRIPTING = frozenset(
    {"script", "failure_rate", "failure", "retry_delay", "seed", "responses"}
)
"""Fake-provider overrides that shape injected failures; the fallback does not inherit them."""


def _settings(settings: LLMSettings | SightSettings | None) -> LLMSettings:
    if isinstance(settings, SightSettings):
        return settings.llm
    if settings is not None:
        return settings
    if not _default:
        _default.append(SightSettings().llm)  # read the environment once, on first use
    return _default[0]


def _fingerprint(settings: LLMSettings) -> str:
    """What identifies a settings object's model configuration (memoised per object)."""
    known = _fingerprints.get(id(settings))
    if known is not None and known[0] is settings:
        return known[1]
    key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
    secret = hashlib.sha256(key.encode()).hexdigest()[:16]
    fingerprint = settings.model_dump_json() + secret
    with _lock:
        _fingerprints[id(settings)] = (settings, fingerprint)
    return fingerprint


def model_limiter(provider: str, model: str, limit: int) -> Limiter:
    """The process-wide :class:`Limiter` of one model and cap (created on first use).

    It is a :class:`SharedLimiter`: sync calls (on the sync API's loop) and async calls (on
    the application's loop) count against the same cap."""
    name = normalize_model_name(model)
    with _lock:
        limiter = _limiters.get((provider, name, limit))
        if limiter is None:
            limiter = _limiters[(provider, name, limit)] = SharedLimiter(f"llm:{name}", limit)
        return limiter


def is_rate_limit(exc: BaseException) -> bool:
    """Whether ``exc`` is a 429: the server pacing us, not failing. Such errors are retried
    (honouring ``retryDelay``) but do not count against the model's circuit breaker, so a
    burst of throttled requests from one fan-out cannot open the circuit of a healthy model.
    A 429 asking for more than ``max_server_wait`` or naming a per-day quota is different: it
    puts the model in a cooldown (see :class:`~sight_core.resilience.CircuitBreaker`)."""
    found = classify(exc)
    return found.status == 429 or found.reason == "rate_limit"


def _breaker(
    provider: str, model: str, settings: LLMSettings, store: BreakerStore | None
) -> CircuitBreaker:
    name = normalize_model_name(model)
    key = (
        provider,
        name,
        id(store) if store is not None else 0,
        settings.breaker_failure_threshold,
        settings.breaker_recovery_timeout,
        settings.breaker_half_open_max_calls,
        settings.max_server_wait,
        settings.quota_cooldown,
    )
    with _lock:
        breaker = _breakers.get(key)
        if breaker is None:
            breaker = _breakers[key] = CircuitBreaker.from_settings(
                f"llm:{name}",
                settings,
                store=store,
                exclude=(is_rate_limit,),
                # a longer server wait, or a per-day quota: a cooldown shared through ``store``
                max_server_wait=settings.max_server_wait,
                quota_cooldown=settings.quota_cooldown,
            )
        return breaker


def _governor(model: str, settings: LLMSettings, redis: Redis | None) -> QuotaGovernor | None:
    """The process-wide quota governor of ``model`` (``None``: the settings give it no quota),
    one per Redis client and quota settings, so every tier and configuration of the model
    books into the same ledger."""
    name = normalize_model_name(model)
    limits = settings.quotas.get(name)
    if limits is None:
        return None
    key = (
        name,
        id(redis) if redis is not None else 0,
        limits,
        settings.quota_project,
        settings.quota_workers,
        settings.quota_window,
        settings.quota_margin,
        settings.quota_op_timeout,
        settings.deadline + settings.timeout,
    )
    with _lock:
        governor = _governors.get(key)
        if governor is None:
            governor = _governors[key] = QuotaGovernor.from_settings(redis, name, settings)
        return governor


def clear_model_cache() -> None:
    """Forget every built model, limiter and breaker, and the default settings.

    For tests and for reloading settings; models already handed out keep working.
    """
    with _lock:
        _models.clear()
        _embedders.clear()
        _limiters.clear()
        _breakers.clear()
        _governors.clear()
        _default.clear()
        _fingerprints.clear()


async def aclose_models() -> None:
    """Close the HTTP clients of every built model, then :func:`clear_model_cache`.

    Call it at application shutdown (e.g. in a FastAPI lifespan), on the loop that used them.
    """
    with _lock:
        models = list(_models.values())
        embedders = list(_embedders.values())
    try:
        for model in models:
            await model.aclose()
        for embedder in embedders:
            await embedder.aclose()
    finally:
        clear_model_cache()


def _provider_model(
    provider: Provider, tier: Tier, model: str, settings: LLMSettings, overrides: dict[str, Any]
) -> BaseChatModel:
    if provider == "fake":
        from ._fake import FakeChatModel

        params: dict[str, Any] = {
            "model": model,
            "latency": settings.fake_latency,
            "timeout": settings.timeout,
        }
        params.update(overrides)
        return FakeChatModel(**params)
    from ._google import build_google_model

    return build_google_model(model, settings, **overrides)


def build_chat_model(
    tier: Tier = "flash",
    *,
    model: str | None = None,
    provider: Provider | None = None,
    settings: LLMSettings | SightSettings | None = None,
    fallback: bool | ResilientChatModel = True,
    response_cache: ResponseCache | None = None,
    breaker_store: BreakerStore | None = None,
    quota_redis: Redis | None = None,
    **overrides: Any,
) -> ResilientChatModel:
    """A resilient LangChain chat model for ``tier``, cached per configuration.

    Args:
        tier: ``"flash"`` (``SIGHT_LLM__FLASH_MODEL``) or ``"pro"`` (``SIGHT_LLM__PRO_MODEL``).
        model: a model name instead of the tier's (limits and fallback still follow ``tier``).
        provider: ``"google"`` or ``"fake"``; default ``SIGHT_LLM__PROVIDER``. The fake's model
            names are ``fake-flash``/``fake-pro`` unless ``model`` is given.
        settings: ``LLMSettings`` or ``SightSettings``; default: read from the environment once.
        fallback: for ``pro``, ``True`` falls back to the flash tier on exhausted transient
            errors, an open circuit or a context overflow; ``False`` never; or a model. The
            flash fallback gets the same overrides, except the fake's failure scripting.
        response_cache: opt-in :class:`~sight_core.llm.ResponseCache` for identical requests.
        breaker_store: where breakers keep state (e.g. ``RedisBreakerStore(redis)`` to share
            an open circuit across worker processes); default in memory.
        quota_redis: the Redis client through which every worker shares the model's quota
            (``SIGHT_LLM__QUOTAS__<model>__RPM|TPM|OUTPUT_TPM|RPD``, see
            :class:`~sight_core.llm.QuotaGovernor`); without it a quota in the settings is
            enforced per process at ``1 / SIGHT_LLM__QUOTA_WORKERS`` of each limit.
        **overrides: provider constructor arguments (``temperature``, ``max_output_tokens``,
            ``thinking_budget``; for the fake: ``script``, ``failure_rate``, ``latency``...).

    The provider makes one attempt per request (SDK retries off) with ``SIGHT_LLM__TIMEOUT``;
    retries follow ``SIGHT_LLM__MAX_ATTEMPTS``/``BACKOFF_*``/``DEADLINE``; the per-model cap is
    ``SIGHT_LLM__FLASH_CONCURRENCY``/``PRO_CONCURRENCY``. Building costs a dict lookup once
    cached; the provider client is created on first build only.

    Raises:
        ConfigurationError: unknown tier/provider, missing API key, or an override that would
            turn SDK retries back on.
    """
    if tier not in ("flash", "pro"):
        raise ConfigurationError(f"build_chat_model(tier={tier!r}): expected 'flash' or 'pro'")
    llm = _settings(settings)
    chosen: Provider = provider or llm.provider
    if chosen not in ("google", "fake"):
        raise ConfigurationError(
            f"build_chat_model(provider={chosen!r}): expected 'google' or 'fake'"
        )
    name = model or (
        f"fake-{tier}"
        if chosen == "fake"
        else (llm.pro_model if tier == "pro" else llm.flash_model)
    )
    key = (
        tier,
        name,
        chosen,
        _fingerprint(llm),
        fallback if isinstance(fallback, bool) else id(fallback),
        id(response_cache),
        id(breaker_store),
        id(quota_redis),
        repr(sorted(overrides.items())),
    )
    cached = _models.get(key)
    if cached is not None:
        return cached
    primary = _provider_model(chosen, tier, name, llm, dict(overrides))
    backup: ResilientChatModel | None = None
    if isinstance(fallback, ResilientChatModel):
        backup = fallback
    elif fallback and tier == "pro":
        inherited = {
            k: v for k, v in overrides.items() if not (chosen == "fake" and k in _FAKE_SCRIPTING)
        }
        backup = build_chat_model(
            "flash",
            provider=chosen,
            settings=llm,
            fallback=False,
            breaker_store=breaker_store,
            quota_redis=quota_redis,
            **inherited,
        )
    limit = llm.pro_concurrency if tier == "pro" else llm.flash_concurrency
    built = ResilientChatModel(
        primary,
        model_name=name,
        provider=chosen,
        limiter=model_limiter(chosen, name, limit),
        policy=RetryPolicy.from_settings(llm, name=f"llm:{normalize_model_name(name)}"),
        breaker=_breaker(chosen, name, llm, breaker_store),
        attempt_timeout=None,  # the provider enforces SIGHT_LLM__TIMEOUT per request
        fallback=backup,
        response_cache=response_cache,
        prices=llm.prices,
        quota=_governor(name, llm, quota_redis),
        quota_chars_per_token=llm.quota_chars_per_token,
    )
    with _lock:
        return _models.setdefault(key, built)


def _provider_embeddings(
    provider: Provider,
    model: str,
    dimensions: int,
    settings: LLMSettings,
    overrides: dict[str, Any],
) -> Embeddings:
    if provider == "fake":
        from ._fake_embeddings import FakeEmbeddings

        params: dict[str, Any] = {
            "model": model,
            "dimensions": dimensions,
            "latency": settings.fake_latency,
        }
        params.update(overrides)
        return FakeEmbeddings(**params)
    from ._google import build_google_embeddings

    return build_google_embeddings(model, dimensions, settings, **overrides)


def build_embeddings(
    tier: EmbeddingTier = "default",
    *,
    model: str | None = None,
    dimensions: int | None = None,
    provider: Provider | None = None,
    settings: LLMSettings | SightSettings | None = None,
    cache: EmbeddingCache | None = None,
    breaker_store: BreakerStore | None = None,
    quota: QuotaGovernor | None = None,
    **overrides: Any,
) -> ResilientEmbeddings:
    """A resilient LangChain ``Embeddings`` from the chat models' settings, cached per
    configuration.

    Args:
        tier: ``"default"``: ``SIGHT_LLM__EMBEDDING_MODEL`` (``gemini-embedding-001``; the fake's
            is ``fake-embedding``).
        model: another model name.
        dimensions: vector length asked of the model (default
            ``SIGHT_LLM__EMBEDDING_DIMENSIONS``, 3,072); every answer is checked against it.
        provider: ``"google"`` or ``"fake"``; default ``SIGHT_LLM__PROVIDER``.
        settings: ``LLMSettings`` or ``SightSettings``; default: read from the environment once.
        cache: opt-in :class:`~sight_core.llm.EmbeddingCache` (keyed on model, dimensions,
            task and text digest).
        breaker_store: where the breaker keeps state (share a cooldown across processes).
        quota: a :class:`~sight_core.llm.QuotaGovernor` of the embedding model
            (``QuotaGovernor.from_settings(redis, model, settings)``): every attempt books one
            request and its estimated tokens first, across every worker sharing the quota.
        **overrides: provider constructor arguments (``task_type`` for Google; ``script``,
            ``failure_rate``, ``max_batch``... for the fake).

    Policy, as for chat models: one SDK attempt per request with ``SIGHT_LLM__TIMEOUT``;
    retries follow ``SIGHT_LLM__MAX_ATTEMPTS``/``BACKOFF_*``/``DEADLINE`` (per batch); the
    model's circuit breaker and cooldown are shared by every embeddings object of that model;
    at most ``SIGHT_LLM__EMBEDDING_CONCURRENCY`` requests run at once; batches hold at most
    ``SIGHT_LLM__EMBEDDING_BATCH_SIZE`` texts (Gemini's limit is 100). Usage records price the
    estimated input tokens at the model's embedding price.

    Raises:
        ConfigurationError: unknown tier/provider, missing API key, or a bad override.
    """
    if tier != "default":
        raise ConfigurationError(f"build_embeddings(tier={tier!r}): expected 'default'")
    llm = _settings(settings)
    chosen: Provider = provider or llm.provider
    if chosen not in ("google", "fake"):
        raise ConfigurationError(
            f"build_embeddings(provider={chosen!r}): expected 'google' or 'fake'"
        )
    name = model or ("fake-embedding" if chosen == "fake" else llm.embedding_model)
    size = dimensions if dimensions is not None else llm.embedding_dimensions
    if size < 1:
        raise ConfigurationError(f"build_embeddings(dimensions={size}): use a length >= 1")
    key = (
        tier,
        name,
        size,
        chosen,
        _fingerprint(llm),
        id(cache),
        id(breaker_store),
        id(quota),
        repr(sorted(overrides.items())),
    )
    cached = _embedders.get(key)
    if cached is not None:
        return cached
    built = ResilientEmbeddings(
        _provider_embeddings(chosen, name, size, llm, dict(overrides)),
        model_name=normalize_model_name(name),
        provider_name=chosen,
        dimensions=size,
        batch_size=llm.embedding_batch_size,
        limiter=model_limiter(chosen, name, llm.embedding_concurrency),
        policy=RetryPolicy.from_settings(llm, name=f"llm:{normalize_model_name(name)}"),
        breaker=_breaker(chosen, name, llm, breaker_store),
        # the Google embeddings client has no timeout setting: enforce it per attempt here
        attempt_timeout=llm.timeout if chosen == "google" else None,
        cache=cache,
        prices=llm.prices,
        quota=quota,
    )
    with _lock:
        return _embedders.setdefault(key, built)
