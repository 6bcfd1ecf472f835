"""The ``google`` provider: ``ChatGoogleGenerativeAI`` (langchain-google-genai) from settings.

The SDK's own retries are set to a single attempt (``max_retries=1``; ``0`` would mean "SDK
default", i.e. several), so the only retries are sight-core's classified ones and one 503
costs one request, not six. The per-request timeout is explicit and ``base_url`` comes from
``SIGHT_LLM__BASE_URL`` (a proxy, a regional endpoint, or a local fake server in tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sight_core.errors import ConfigurationError, MissingDependencyError
from sight_core.settings import LLMSettings

from ._provider_args import check_provider_kwargs, field_names

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel

__all__ = ["build_google_embeddings", "build_google_model"]


def _valid_fields() -> frozenset[str]:
    from langchain_google_genai import ChatGoogleGenerativeAI

    return field_names(ChatGoogleGenerativeAI)


def _require_key(settings: LLMSettings) -> None:
    if settings.api_key is None:
        raise ConfigurationError(
            "provider 'google' needs an API key: set SIGHT_LLM__API_KEY or GOOGLE_API_KEY "
            "(or SIGHT_LLM__PROVIDER=fake for tests)"
        )


def build_google_model(model: str, settings: LLMSettings, **overrides: Any) -> BaseChatModel:
    """A ``ChatGoogleGenerativeAI`` for ``model`` with one SDK attempt and an explicit timeout.

    ``overrides`` are passed to the constructor (``temperature``, ``max_output_tokens``,
    ``thinking_budget``, ...); ``max_retries``/``retries`` and unknown (misspelt) names are
    refused.

    Raises:
        ConfigurationError: no API key (``SIGHT_LLM__API_KEY`` or ``GOOGLE_API_KEY``), an
            override tries to turn SDK retries back on, or names no field of the model.
        MissingDependencyError: ``langchain-google-genai`` is not installed.
    """
    if overrides:
        check_provider_kwargs("build_chat_model(provider='google')", overrides, _valid_fields())
    _require_key(settings)
    try:
        from langchain_google_genai import ChatGoogleGenerativeAI
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise MissingDependencyError("langchain-google-genai", "google") from exc
    params: dict[str, Any] = {
        "model": model,
        "api_key": settings.api_key,
        "max_retries": 1,
        "timeout": settings.timeout,
        "vertexai": False,
    }
    if settings.base_url is not None:
        params["base_url"] = settings.base_url
    params.update(overrides)
    return ChatGoogleGenerativeAI(**params)


def build_google_embeddings(
    model: str, dimensions: int, settings: LLMSettings, **overrides: Any
) -> Embeddings:
    """A ``GoogleGenerativeAIEmbeddings`` for ``model`` asking ``dimensions`` per vector.

    The SDK makes one attempt per request (``google-genai`` retries only when given retry
    options, which are never set here); the per-attempt timeout is enforced by the resilient
    wrapper, since this client has no timeout setting. ``overrides`` (``task_type``...) go to
    the constructor; unknown names are refused.

    Raises:
        ConfigurationError: no API key, or an override that names no field.
        MissingDependencyError: ``langchain-google-genai`` is not installed.
    """
    try:
        from langchain_google_genai import GoogleGenerativeAIEmbeddings
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise MissingDependencyError("langchain-google-genai", "google") from exc
    if overrides:
        check_provider_kwargs(
            "build_embeddings(provider='google')",
            overrides,
            field_names(GoogleGenerativeAIEmbeddings),
        )
    _require_key(settings)
    params: dict[str, Any] = {
        "model": model,
        "api_key": settings.api_key,
        "output_dimensionality": dimensions,
        "vertexai": False,
    }
    if settings.base_url is not None:
        params["base_url"] = settings.base_url
    params.update(overrides)
    return GoogleGenerativeAIEmbeddings(**params)
