"""Shared fixtures for the llm tests: testing switch on, fresh model caches, a fake Gemini."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from llm_gemini_server import FakeGeminiServer

from sight_core.llm import aclose_models, clear_model_cache
from sight_core.resilience import set_testing
from sight_core.settings import LLMSettings


@pytest.fixture(autouse=True)
async def _llm_testing() -> AsyncIterator[None]:
    clear_model_cache()
    with set_testing(True):
        yield
    await aclose_models()


@pytest.fixture
def fake_settings() -> LLMSettings:
    return LLMSettings(provider="fake", max_attempts=4, deadline=60.0)


@pytest.fixture(scope="session")
def _gemini_server() -> Iterator[FakeGeminiServer]:
    with FakeGeminiServer() as server:
        yield server


@pytest.fixture
def gemini(_gemini_server: FakeGeminiServer) -> Iterator[FakeGeminiServer]:
    _gemini_server.reset()
    yield _gemini_server
    _gemini_server.reset()


@pytest.fixture
def google_settings(gemini: FakeGeminiServer) -> LLMSettings:
    return LLMSettings(
        provider="google",
        api_key="test-key",  # type: ignore[arg-type]
        base_url=gemini.url,
        timeout=5.0,
        max_attempts=4,
        breaker_failure_threshold=3,
    )
