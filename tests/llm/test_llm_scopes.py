"""Usage scopes after exit and under load.

Invariant: a scope's totals equal the sums over every record it admitted (whatever bound its
record list has), and an exited scope admits nothing: a late record goes to the enclosing
open scopes, or is refused with a warning when there is none.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sight_core.llm import UsageRecord, build_chat_model, usage_scope
from sight_core.llm._usage import Usage, emit_usage
from sight_core.settings import LLMSettings


async def test_a_task_that_outlives_its_scope_does_not_write_into_it(
    fake_settings: LLMSettings, caplog: pytest.LogCaptureFixture
) -> None:
    llm = build_chat_model(
        "flash", settings=fake_settings.model_copy(update={"fake_latency": 0.05})
    )
    async with usage_scope(operation="request") as inner:
        late = asyncio.create_task(llm.ainvoke("slow"))  # copies the scope into its context
    with caplog.at_level(logging.WARNING, logger="sight_core.llm.usage"):
        await late
    assert inner.calls == 0 and inner.records == type(inner.records)()
    assert inner.late == 1
    assert any("exited" in r.getMessage() for r in caplog.records)


async def test_a_late_record_goes_to_the_enclosing_open_scope(fake_settings: LLMSettings) -> None:
    llm = build_chat_model(
        "flash", settings=fake_settings.model_copy(update={"fake_latency": 0.05})
    )
    async with usage_scope(project="p") as outer:
        async with usage_scope(operation="request") as inner:
            late = asyncio.create_task(llm.ainvoke("slow"))
        await late
    assert (inner.calls, inner.late) == (0, 1)
    assert outer.calls == 1 and len(outer.records) == 1
    assert outer.records[0].labels == {"project": "p", "operation": "request"}


async def test_an_exited_scopes_budget_no_longer_governs(fake_settings: LLMSettings) -> None:
    """A task that outlives a spent scope is governed (and recorded) by the open ones only."""
    llm = build_chat_model("flash", settings=fake_settings)
    go = asyncio.Event()

    async def later() -> str:
        await go.wait()
        return (await llm.ainvoke("after the scope")).text

    async with usage_scope() as outer:
        async with usage_scope(budget_tokens=1) as spent:
            await llm.ainvoke("spend it")
            task = asyncio.create_task(later())
        go.set()
        assert await task  # not refused by the exited scope's budget
    assert (spent.calls, spent.late) == (1, 1)
    assert outer.calls == 2


async def test_the_record_list_is_bounded_and_totals_stay_exact(fake_settings: LLMSettings) -> None:
    llm = build_chat_model("flash", settings=fake_settings)
    async with usage_scope(max_records=3) as usage:
        answers = [await llm.ainvoke(f"q{i}") for i in range(10)]
    assert len(usage.records) == 3 and usage.dropped_records == 7
    assert usage.calls == 10
    expected = sum(a.usage_metadata["input_tokens"] for a in answers)  # type: ignore[index]
    assert usage.input_tokens == expected


def test_max_records_is_validated() -> None:
    from sight_core.errors import ConfigurationError

    async def main() -> None:
        with pytest.raises(ConfigurationError, match="max_records=-1"):
            async with usage_scope(max_records=-1):
                pass

    asyncio.run(main())


_records = st.builds(
    UsageRecord,
    model=st.sampled_from(["gemini-2.5-pro", "gemini-2.5-flash"]),
    requested_model=st.just("gemini-2.5-pro"),
    provider=st.just("google"),
    outcome=st.sampled_from(["ok", "error", "cache_hit", "incomplete"]),
    input_tokens=st.integers(0, 10**6),
    output_tokens=st.integers(0, 10**5),
    reasoning_tokens=st.integers(0, 10**4),
    cached_tokens=st.integers(0, 10**5),
    cost_usd=st.floats(0, 10, allow_nan=False),
    saved_usd=st.floats(0, 10, allow_nan=False),
    priced=st.booleans(),
    failed_attempts=st.integers(0, 3),
)
# each step: a record emitted inside the inner scope, or after it exited (None: exit it)
_steps = st.lists(st.one_of(_records, st.none()), max_size=40)


def _sums(records: list[UsageRecord]) -> dict[str, float]:
    billed = [r for r in records if r.outcome != "cache_hit"]
    return {
        "calls": sum(r.outcome == "ok" for r in records),
        "errors": sum(r.outcome == "error" for r in records),
        "incomplete": sum(r.outcome == "incomplete" for r in records),
        "cache_hits": sum(r.outcome == "cache_hit" for r in records),
        "unpriced": sum(not r.priced for r in records),
        "failed_attempts": sum(r.failed_attempts for r in records),
        "input_tokens": sum(r.input_tokens for r in billed),
        "output_tokens": sum(r.output_tokens for r in billed),
        "cached_tokens": sum(r.cached_tokens for r in billed),
        "cost_usd": sum(r.cost_usd for r in billed),
        "saved_usd": sum(r.saved_usd for r in records),
    }


def _totals(usage: Usage) -> dict[str, float]:
    return {name: getattr(usage, name) for name in _sums([])}


@settings(max_examples=60, deadline=None)
@given(steps=_steps, bound=st.integers(0, 8), outer_bound=st.integers(0, 8))
def test_scope_totals_equal_the_sum_of_admitted_records(
    steps: list[UsageRecord | None], bound: int, outer_bound: int
) -> None:
    async def main() -> None:
        inner_admitted: list[UsageRecord] = []
        outer_admitted: list[UsageRecord] = []
        async with usage_scope(max_records=outer_bound, sink=outer_admitted.append) as outer:
            inner_cm = usage_scope(max_records=bound, sink=inner_admitted.append)
            inner = await inner_cm.__aenter__()
            context = contextvars.copy_context()  # what a task spawned inside inherits
            exited = False
            for step in steps:
                if step is None:
                    if not exited:
                        await inner_cm.__aexit__(None, None, None)
                        exited = True
                    continue
                await asyncio.create_task(emit_usage(step), context=context)
            if not exited:
                await inner_cm.__aexit__(None, None, None)
        for usage, admitted, cap in (
            (inner, inner_admitted, bound),
            (outer, outer_admitted, outer_bound),
        ):
            assert _totals(usage) == pytest.approx(_sums(admitted))
            kept = admitted[max(0, len(admitted) - cap) :]
            assert list(usage.records) == kept
            assert usage.dropped_records == len(admitted) - len(usage.records)
        every = [s for s in steps if s is not None]
        assert outer_admitted == every  # the outer scope was open throughout
        assert len(inner_admitted) + inner.late == len(every)

    asyncio.run(main())
