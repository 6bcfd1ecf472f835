"""The fake provider: scripts, seeded failure rates, usage metadata, counters."""

from __future__ import annotations

import httpx
import pytest
from pydantic import BaseModel

from sight_core.llm import FakeChatModel, FakeFailure
from sight_core.llm._fake import example_for_schema
from sight_core.resilience import classify


async def test_script_then_ok() -> None:
    fake = FakeChatModel(script=["rate_limit", "timeout", "ok"])
    with pytest.raises(Exception, match="RESOURCE_EXHAUSTED") as first:
        await fake.ainvoke("x")
    assert classify(first.value).retry_after == 1.0
    with pytest.raises(httpx.ReadTimeout):
        await fake.ainvoke("x")
    assert (await fake.ainvoke("x")).text
    assert (fake.attempts, fake.served) == (3, 1)


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (FakeFailure("rate_limit", retry_delay=4), "transient"),
        (FakeFailure("server_error"), "transient"),
        (FakeFailure("timeout"), "transient"),
        (FakeFailure("context_overflow"), "context_overflow"),
        (FakeFailure("bad_request"), "permanent"),
    ],
)
async def test_injected_failures_classify_like_gemini(failure: FakeFailure, kind: str) -> None:
    fake = FakeChatModel(script=[failure])
    with pytest.raises(Exception) as info:
        await fake.ainvoke("x")
    assert classify(info.value).kind == kind


async def test_failure_rate_is_seeded() -> None:
    a = FakeChatModel(failure_rate=0.3, seed=7)
    b = FakeChatModel(failure_rate=0.3, seed=7)
    c = FakeChatModel(failure_rate=0.3, seed=8)
    seq_a = [a._begin() for _ in range(100)]
    seq_b = [b._begin() for _ in range(100)]
    seq_c = [c._begin() for _ in range(100)]
    assert seq_a == seq_b
    assert seq_a != seq_c
    assert 15 <= sum(1 for item in seq_a if item != "ok") <= 45
    a.reset()
    assert [a._begin() for _ in range(100)] == seq_b


async def test_deterministic_answers_and_usage() -> None:
    fake = FakeChatModel(model="fake-pro", reasoning_tokens=12)
    first = await fake.ainvoke("hello there")
    again = await fake.ainvoke("hello there")
    assert first.text == again.text
    usage = first.usage_metadata
    assert usage is not None
    assert usage["output_tokens"] > 12
    assert usage["output_token_details"] == {"reasoning": 12}
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_blocked_and_empty_answers() -> None:
    fake = FakeChatModel(script=["blocked", "empty"])
    blocked = await fake.ainvoke("x")
    assert blocked.text == "" and blocked.response_metadata["finish_reason"] == "SAFETY"
    empty = await fake.ainvoke("x")
    assert empty.text == "" and empty.response_metadata["finish_reason"] == "STOP"


def test_example_for_schema_handles_nesting_refs_and_unions() -> None:
    class Address(BaseModel):
        city: str

    class Person(BaseModel):
        name: str
        nickname: str | None = None
        tags: list[str]
        address: Address
        score: float
        active: bool

    value = example_for_schema(Person.model_json_schema(), "ab")
    assert Person.model_validate(value).address.city


def test_sync_invoke_and_stream() -> None:
    fake = FakeChatModel(responses=["one two"])
    assert fake.invoke("x").text == "one two"
    assert "".join(c.text for c in fake.stream("x")) == "one two"


async def test_timeout_like_the_sdk() -> None:
    fake = FakeChatModel(latency=30.0, timeout=0.01)
    with pytest.raises(httpx.ReadTimeout):
        await fake.ainvoke("x")
    assert classify(httpx.ReadTimeout("x")).kind == "transient"
