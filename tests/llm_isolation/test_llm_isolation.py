"""The pytest plugin isolates LLM models between tests (no conftest here does it for us).

The two tests run in file order: the first opens the breaker of the flash model with a
scripted outage; the second builds the same model from the same settings object and must find
a closed circuit and a fresh script, because the plugin cleared the model cache in between.
"""

from __future__ import annotations

import pytest

from sight_core.llm import build_chat_model
from sight_core.resilience import BreakerState, set_testing
from sight_core.settings import LLMSettings

SETTINGS = LLMSettings(provider="fake", max_attempts=1, breaker_failure_threshold=2)


async def test_1_a_scripted_outage_opens_this_tests_breaker() -> None:
    llm = build_chat_model("flash", settings=SETTINGS, failure_rate=1.0, failure="server_error")
    healthy = build_chat_model("flash", settings=SETTINGS)
    assert healthy.breaker is llm.breaker  # one circuit per model in the process
    with set_testing(True):
        for _ in range(2):
            with pytest.raises(Exception, match="503"):
                await llm.ainvoke("x")
    assert llm.breaker.state is BreakerState.OPEN


async def test_2_another_tests_model_starts_closed() -> None:
    llm = build_chat_model("flash", settings=SETTINGS)
    assert llm.breaker.state is BreakerState.CLOSED
    assert (await llm.ainvoke("hello")).text
