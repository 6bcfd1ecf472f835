"""Prices: tiers by prompt size, user prices merged over the built-in table, loud when missing."""

from __future__ import annotations

import logging

import pytest
from llm_gemini_server import FakeGeminiServer, Reply

from sight_core import observability
from sight_core.llm import build_chat_model, cost_of, price_for, usage_scope
from sight_core.settings import LLMSettings, ModelPrice, PriceTier, SightSettings

PRO = LLMSettings().prices["gemini-2.5-pro"]


def test_pro_prompts_over_200k_tokens_use_the_long_context_rate() -> None:
    at_limit = cost_of(PRO, 200_000, 1_000)
    assert at_limit == pytest.approx((200_000 * 1.25 + 1_000 * 10.0) / 1e6)
    above = cost_of(PRO, 200_001, 1_000)
    assert above == pytest.approx((200_001 * 2.50 + 1_000 * 15.0) / 1e6)
    cached = cost_of(PRO, 300_000, 0, cached_tokens=100_000)
    assert cached == pytest.approx((200_000 * 2.50 + 100_000 * 0.625) / 1e6)


def test_the_highest_tier_below_the_prompt_wins() -> None:
    price = ModelPrice(
        input=1.0,
        output=1.0,
        tiers=(
            PriceTier(above_input_tokens=1000, input=3.0, output=3.0),
            PriceTier(above_input_tokens=10, input=2.0, output=2.0),
        ),
    )
    assert cost_of(price, 10, 0) == pytest.approx(10 / 1e6)
    assert cost_of(price, 11, 0) == pytest.approx(22 / 1e6)
    assert cost_of(price, 1001, 1) == pytest.approx((1001 * 3 + 3) / 1e6)


async def test_a_long_pro_prompt_through_the_sdk_is_billed_at_the_long_rate(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.push(
        Reply.text("ok", prompt_tokens=250_000, output_tokens=2_000, model="gemini-2.5-pro")
    )
    llm = build_chat_model("pro", settings=google_settings)
    async with usage_scope() as usage:
        await llm.ainvoke("a very long prompt")
    assert usage.cost_usd == pytest.approx((250_000 * 2.50 + 2_000 * 15.0) / 1e6)


def test_user_prices_merge_over_the_built_in_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGHT_LLM__PRICES", '{"my-tuned-model": {"input": 0.5, "output": 1.0}}')
    prices = SightSettings().llm.prices
    assert prices["my-tuned-model"] == ModelPrice(input=0.5, output=1.0)
    assert prices["gemini-2.5-pro"] == PRO  # not wiped out by adding one model
    assert prices["gemini-2.5-flash"].input == 0.30


def test_a_user_price_replaces_the_built_in_one_of_the_same_model() -> None:
    settings = LLMSettings(prices={"Gemini-2.5-Flash": ModelPrice(input=9.0, output=9.0)})
    assert settings.prices["gemini-2.5-flash"] == ModelPrice(input=9.0, output=9.0)
    assert "Gemini-2.5-Flash" not in settings.prices
    assert price_for("gemini-2.5-pro", settings.prices) == PRO


async def test_an_unpriced_model_is_recorded_with_one_warning_and_a_metric(
    fake_settings: LLMSettings, caplog: pytest.LogCaptureFixture
) -> None:
    def unpriced_calls() -> float:
        return observability.snapshot().counter("sight_llm_unpriced_calls_total", model="mystery-1")

    before = unpriced_calls()
    llm = build_chat_model("flash", model="mystery-1", settings=fake_settings)
    with caplog.at_level(logging.WARNING, logger="sight_core.llm.usage"):
        async with usage_scope() as usage:
            await llm.ainvoke("one")
            await llm.ainvoke("two")
    warnings = [r for r in caplog.records if "mystery-1" in r.getMessage()]
    assert len(warnings) == 1
    assert "SIGHT_LLM__PRICES" in warnings[0].getMessage()
    assert [r.priced for r in usage.records] == [False, False]
    assert usage.unpriced == 2
    assert usage.input_tokens > 0  # the tokens are still counted
    assert unpriced_calls() == before + 2
