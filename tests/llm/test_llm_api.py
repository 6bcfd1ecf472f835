"""The public names of sight_core.llm are pinned: adding or removing one is a decision."""

from __future__ import annotations

import pytest

import sight_core.llm as llm

EXPECTED = {
    "BLOCK_REASONS",
    "EmbeddingCache",
    "EmbeddingTier",
    "FakeEmbeddings",
    "ResilientEmbeddings",
    "build_embeddings",
    "estimate_tokens",
    "fake_vector",
    "FailureKind",
    "FakeChatModel",
    "FakeFailure",
    "ModelUsage",
    "NativeStructuredOutput",
    "Provider",
    "QuotaDimension",
    "QuotaGovernor",
    "QuotaLease",
    "ResilientChatModel",
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
    "check_content",
    "clear_model_cache",
    "cost_of",
    "current_usage",
    "extract_json",
    "model_limiter",
    "normalize_model_name",
    "parse_structured",
    "price_for",
    "redact_excerpt",
    "remove_usage_sink",
    "request_digest",
    "structured_output",
    "usage_scope",
}


def test_exported_names() -> None:
    assert set(llm.__all__) == EXPECTED
    assert len(llm.__all__) == len(EXPECTED)  # no name listed twice
    assert sorted(llm.__all__) == llm.__all__
    for name in llm.__all__:
        assert getattr(llm, name) is not None


def test_public_objects_say_where_they_live() -> None:
    import inspect

    for name in llm.__all__:
        obj = getattr(llm, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__.startswith("sight_core.llm."), name


@pytest.mark.slow
def test_importing_does_not_import_the_google_sdk_or_redis() -> None:
    import subprocess
    import sys

    code = (
        "import sys, sight_core.llm; "
        "print('langchain_google_genai' in sys.modules, 'google.genai' in sys.modules, "
        "'redis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]
