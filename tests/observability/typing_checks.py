"""Checked by mypy in test_typing.py: the public API keeps the types callers rely on."""

from typing import assert_type

from sight_core.observability import (
    HistogramSnapshot,
    ObservabilityConfig,
    Sample,
    increment,
    observe,
    set_gauge,
    snapshot,
    timed,
)
from sight_core.settings import ObservabilitySettings


@timed("persona.generate")
async def generate(persona_id: int, *, tier: str = "flash") -> str:
    return tier * persona_id


@timed("persona.render")
def render(name: str) -> bytes:
    return name.encode()


async def use() -> None:
    assert_type(await generate(1, tier="pro"), str)
    assert_type(render("x"), bytes)
    increment("sight_cache_hits_total", 1, namespace="persona")
    observe("sight_llm_call_seconds", 0.42, model="flash")
    set_gauge("sight_breaker_state", 2, name="gemini-pro")
    assert_type(snapshot().histogram("sight_llm_call_seconds").p95, float)
    assert_type(snapshot().histogram("x"), HistogramSnapshot)
    with timed("block") as t:
        pass
    assert_type(t.elapsed, float | None)
    config: ObservabilityConfig = ObservabilitySettings()
    del config
    Sample("x_total", {"a": "b"}, 1.0, "counter")


async def misuse() -> None:
    await generate("1")  # type: ignore[arg-type]
    render(1)  # type: ignore[arg-type]
    Sample("x", {}, 1.0, "histogram")  # type: ignore[arg-type]
