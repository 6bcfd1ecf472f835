"""Type-checked, never run: the public API keeps the types users rely on.

``mypy --strict tests/typing`` runs in CI; a decorator that loses its signature or an overload
that widens a return type fails there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import assert_type

from sight_core.concurrency import gather_limited, map_limited
from sight_core.llm import QuotaGovernor, QuotaLease
from sight_core.resilience import retrying
from sight_core.settings import DatabasePool, QuotaLimit, SightSettings


async def fetch(persona_id: int) -> str:
    return str(persona_id)


async def fan_out() -> None:
    results = await gather_limited((fetch(i) for i in range(10)), limit=4)
    assert_type(results, list[str])
    mixed = await gather_limited((fetch(i) for i in range(10)), limit=4, return_exceptions=True)
    assert_type(mixed, list[str | BaseException])
    stream = map_limited(fetch, range(10), limit=4)
    async for item, result in stream:
        assert_type(item, int)
        assert_type(result, str)


@retrying()
async def call_model(prompt: str, *, temperature: float = 0.2) -> str:
    return prompt


async def retried() -> None:
    answer = await call_model("hello", temperature=0.1)
    assert_type(answer, str)


def settings() -> None:
    pool = SightSettings().database.resolved()
    assert_type(pool, DatabasePool)


async def quota() -> None:
    governor = QuotaGovernor(None, model="gemini-2.5-flash", limits=QuotaLimit(rpm=10))
    lease = await governor.reserve(input_tokens=100, output_tokens=50, deadline=5.0)
    assert_type(lease, QuotaLease)
    async with lease as held:
        assert_type(held, QuotaLease)
        assert_type(await held.settle(80, 20), bool)
    assert_type(await governor.exhaust("rpd"), float)
    assert_type(await governor.outstanding(), int)


def _unused(x: AsyncIterator[int]) -> None: ...
