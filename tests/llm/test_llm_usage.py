"""Usage records, prices, scopes, sinks and budgets."""

from __future__ import annotations

import dataclasses

import pytest

from sight_core.errors import BudgetExceededError
from sight_core.llm import (
    FakeChatModel,
    UsageRecord,
    add_usage_sink,
    build_chat_model,
    cost_of,
    current_usage,
    normalize_model_name,
    price_for,
    remove_usage_sink,
    usage_scope,
)
from sight_core.llm._usage import check_budget, emit_usage, tokens_of
from sight_core.settings import LLMSettings, ModelPrice

PRICES = LLMSettings().prices


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("gemini-2.5-pro", "gemini-2.5-pro"),
        ("publishers/google/models/gemini-2.5-flash", "gemini-2.5-flash"),
        (" Gemini-2.5-Flash ", "gemini-2.5-flash"),
    ],
)
def test_model_names_are_normalised(raw: str, expected: str) -> None:
    assert normalize_model_name(raw) == expected


def test_prices_never_borrow_another_models_price() -> None:
    assert price_for("models/gemini-2.5-pro", PRICES) == PRICES["gemini-2.5-pro"]
    assert price_for("gemini-2.5-flash-lite", PRICES) == PRICES["gemini-2.5-flash-lite"]
    assert price_for("gemini-2.5-flash-preview-09-2025", PRICES) == PRICES["gemini-2.5-flash"]
    assert price_for("gemini-2.5-pro-preview", PRICES) == PRICES["gemini-2.5-pro"]
    assert price_for("gemini-9-ultra", PRICES) is None


def test_cost_prices_cached_input_at_its_own_rate() -> None:
    price = ModelPrice(input=1.0, output=10.0, cached_input=0.25)
    assert cost_of(price, 1_000_000, 0) == pytest.approx(1.0)
    assert cost_of(price, 1_000_000, 100_000, cached_tokens=400_000) == pytest.approx(
        0.6 + 0.1 + 1.0
    )
    no_cache_rate = ModelPrice(input=1.0, output=1.0)
    assert cost_of(no_cache_rate, 10, 0, cached_tokens=10) == cost_of(no_cache_rate, 10, 0)


def test_tokens_from_usage_metadata() -> None:
    usage = {
        "input_tokens": 100,
        "output_tokens": 50,
        "total_tokens": 150,
        "input_token_details": {"cache_read": 40},
        "output_token_details": {"reasoning": 20},
    }
    assert tokens_of(usage) == (100, 50, 20, 40)
    assert tokens_of(None) == (0, 0, 0, 0)


async def test_scopes_nest_and_merge_labels() -> None:
    llm = build_chat_model("pro", settings=LLMSettings(provider="fake"), reasoning_tokens=30)
    assert current_usage() is None
    async with usage_scope(project_id="p1") as outer:
        await llm.ainvoke("one")
        async with usage_scope(operation="personas") as inner:
            await llm.ainvoke("two")
    assert (outer.calls, inner.calls) == (2, 1)
    assert inner.records[0].labels == {"project_id": "p1", "operation": "personas"}
    assert outer.records[0].labels == {"project_id": "p1"}
    assert outer.reasoning_tokens == 60
    assert set(outer.by_model) == {"fake-pro"}
    assert outer.by_model["fake-pro"].calls == 2
    assert outer.cost_usd == pytest.approx(sum(r.cost_usd for r in outer.records))


async def test_failed_calls_are_recorded() -> None:
    llm = build_chat_model(
        settings=LLMSettings(provider="fake", max_attempts=2), script=["server_error"] * 2
    )
    async with usage_scope() as usage:
        with pytest.raises(Exception, match="503"):
            await llm.ainvoke("x")
    [record] = usage.records
    assert (record.outcome, record.attempts, record.failed_attempts) == ("error", 2, 2)
    assert record.error == "GoogleAPIError"
    assert (usage.calls, usage.errors, usage.cost_usd) == (0, 1, 0.0)


async def test_sinks_receive_records_and_their_errors_are_swallowed() -> None:
    seen: list[UsageRecord] = []
    scoped: list[UsageRecord] = []

    def broken(record: UsageRecord) -> None:
        raise RuntimeError("sink down")

    async def scoped_sink(record: UsageRecord) -> None:
        scoped.append(record)

    add_usage_sink(seen.append)
    add_usage_sink(broken)
    try:
        llm = FakeChatModel()
        wrapped = build_chat_model(settings=LLMSettings(provider="fake"))
        await wrapped.ainvoke("outside any scope")
        async with usage_scope(sink=scoped_sink):
            await wrapped.ainvoke("inside")
        await llm.ainvoke("a bare model is not accounted")
    finally:
        remove_usage_sink(seen.append)
        remove_usage_sink(broken)
    assert len(seen) == 2
    assert len(scoped) == 1


async def test_token_budget() -> None:
    llm = build_chat_model(settings=LLMSettings(provider="fake"))
    async with usage_scope(budget_tokens=5) as usage:
        await llm.ainvoke("a prompt long enough to pass five tokens in one go")
        with pytest.raises(BudgetExceededError, match="token budget"):
            await llm.ainvoke("again")
    assert usage.calls == 1
    check_budget()  # outside the scope nothing is limited


async def test_emit_outside_scopes_is_harmless() -> None:
    await emit_usage(UsageRecord(model="m", requested_model="m", provider="x", outcome="ok"))


async def test_latency_and_outcomes_reach_observability() -> None:
    from sight_core.observability import snapshot

    def calls(snap: object, name: str, **labels: str) -> float:
        series = getattr(snap, "histograms", {}).get(name, {})
        key = tuple(sorted(labels.items()))
        return series[key].count if key in series else 0

    before = calls(snapshot(), "sight_llm_call_seconds", model="fake-pro")
    llm = build_chat_model("pro", settings=LLMSettings(provider="fake"))
    await llm.ainvoke("one")
    await llm.ainvoke("two")
    assert calls(snapshot(), "sight_llm_call_seconds", model="fake-pro") == before + 2


async def test_a_record_carries_each_value_in_its_own_field() -> None:
    """Every field of a fallback call's record holds its own value (the record is built
    positionally on the hot path: a swap of two fields would show here)."""
    fields = [f.name for f in dataclasses.fields(UsageRecord)]
    assert fields[:18] == [
        "model",
        "requested_model",
        "provider",
        "outcome",
        "input_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cached_tokens",
        "cost_usd",
        "saved_usd",
        "billed",
        "priced",
        "attempts",
        "failed_attempts",
        "fallback",
        "error",
        "latency_s",
        "labels",
    ]
    settings = LLMSettings(provider="fake", max_attempts=2)
    llm = build_chat_model("pro", settings=settings, script=["server_error", "server_error"])
    async with usage_scope(job="fields") as usage:
        answer = await llm.ainvoke("Describe a persona in a few words, please")
    [record] = usage.records
    meta = answer.usage_metadata
    assert meta is not None
    assert (record.model, record.requested_model, record.provider) == (
        "fake-flash",
        "fake-pro",
        "fake",
    )
    assert record.outcome == "ok"
    assert (record.input_tokens, record.output_tokens) == (
        meta["input_tokens"],
        meta["output_tokens"],
    )
    assert record.input_tokens != record.output_tokens
    assert (record.reasoning_tokens, record.cached_tokens) == (0, 0)
    flash = settings.prices["fake-flash"]
    assert record.cost_usd == cost_of(flash, record.input_tokens, record.output_tokens) > 0
    assert record.saved_usd == 0.0
    assert (record.billed, record.priced, record.fallback) == (True, True, True)
    assert (record.attempts, record.failed_attempts) == (3, 2)
    assert record.error is None
    assert 0 < record.latency_s < 60
    assert record.labels == {"job": "fields"}
