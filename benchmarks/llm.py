"""LLM benchmarks: what the resilient wrapper costs, and what it buys under rate limits.

Run: ``uv run python -m benchmarks.llm`` (``--quick`` for fewer calls, shorter latency).

1. Overhead: sequential ``ainvoke`` through ``build_chat_model()`` (retry policy with its
   deadline, breaker, limiter, content check, latency histogram) vs the bare fake model's
   ``ainvoke``, both on a zero-latency fake; measured twice, without and with a
   ``usage_scope`` open around the calls (then every wrapped call also writes its record).
   Calls are interleaved one by one (A B, B A, ...) so a burst from another process on the 2
   shared cores hits both sides alike; each side's figure per round is its median call; the
   ratio is computed per round (paired) and reported as median with min-max.
2. Bulk personas: 20 structured persona generations fanned out with ``gather_limited`` on the
   fake with 5 s latency and 30 % injected 429s (seeded per round; each 429 carries a 1 s
   ``retryDelay`` hint that is honoured; real waits, backoff 0.2-1 s). It runs on the shipped
   defaults ``max_attempts=8`` (a round losing a persona is then a ~1-in-760 event at that
   failure rate; with 4 it is ~1 in 7) and ``flash_concurrency=20`` (with 16, four personas
   wait for a whole call); see docs/llm.md "Why 8 attempts". All must succeed;
   the wall time is compared with one bare call measured in the same round.
   ``--quick`` scales latency and waits down 5x.
3. Open breaker: latency of a call refused by an open circuit through the full ``ainvoke``
   path (no request reaches the model).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import statistics
import time
from typing import Any

from pydantic import BaseModel

from sight_core._bench import format_table
from sight_core.concurrency import gather_limited
from sight_core.errors import CircuitOpenError
from sight_core.llm import FakeChatModel, build_chat_model, clear_model_cache, usage_scope
from sight_core.settings import LLMSettings


class Persona(BaseModel):
    name: str
    age: int
    occupation: str
    goals: list[str]
    frustrations: list[str]


def _row(
    case: str,
    ours: list[float],
    ref: list[float],
    ratios: list[float],
    unit: str,
    target: str,
    ok: bool,
) -> dict[str, Any]:
    def fmt(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} {unit} ({min(values):.2f}-{max(values):.2f})"

    return {
        "case": case,
        "ours": fmt(ours),
        "reference": fmt(ref) if ref else "-",
        "ratio": f"{statistics.median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f})"
        if ratios
        else "-",
        "target": target,
        "verdict": "PASS" if ok else "FAIL",
    }


async def _overhead(n: int, rounds: int, *, scoped: bool = False) -> dict[str, Any]:
    """``scoped``: the calls run inside one open ``usage_scope`` (a record per wrapped call)."""
    settings = LLMSettings(provider="fake", fake_latency=0.0)
    wrapped = build_chat_model("flash", settings=settings)
    bare = FakeChatModel(model="fake-flash", timeout=settings.timeout)
    prompt = "Describe a persona for a coffee brand"
    clock = time.perf_counter

    async def round_(warmup: bool = False) -> tuple[float, float]:
        """``n`` interleaved pairs (A B, then B A, ...): a burst from another process hits
        both sides alike; each side's figure is its median call, in microseconds."""
        gc.collect()
        a_times: list[float] = []
        b_times: list[float] = []
        sides = ((wrapped, a_times), (bare, b_times))
        for i in range(n):
            (first, first_times), (second, second_times) = sides[::-1] if i % 2 else sides
            t0 = clock()
            await first.ainvoke(prompt)
            t1 = clock()
            await second.ainvoke(prompt)
            t2 = clock()
            first_times.append(t1 - t0)
            second_times.append(t2 - t1)
        return statistics.median(a_times) * 1e6, statistics.median(b_times) * 1e6

    ours: list[float] = []
    ref: list[float] = []
    async with usage_scope(operation="bench") if scoped else contextlib.nullcontext():
        await round_(warmup=True)
        for _ in range(rounds):
            a, b = await round_()
            ours.append(a)
            ref.append(b)
    ratios = [a / b for a, b in zip(ours, ref, strict=True)]
    where = "inside a usage_scope" if scoped else "no usage_scope"
    return _row(
        f"overhead, {where}: ainvoke on a zero-latency fake (µs/call; {rounds} rounds of {n} "
        "interleaved pairs, median call)",
        ours,
        ref,
        ratios,
        "µs",
        "<= 1.10x",
        statistics.median(ratios) <= 1.10,
    )


async def _one(bare: FakeChatModel) -> float:
    start = time.perf_counter()
    await bare.ainvoke("Describe one persona")
    return time.perf_counter() - start


async def _twenty(structured: Any) -> tuple[float, bool]:
    start = time.perf_counter()
    personas = await gather_limited(
        (structured.ainvoke(f"Persona {i} for a coffee brand") for i in range(20)), limit=20
    )
    ok = len(personas) == 20 and all(isinstance(p, Persona) for p in personas)
    return time.perf_counter() - start, ok


async def _bulk(latency: float, rounds: int) -> dict[str, Any]:
    ours: list[float] = []
    ref: list[float] = []
    all_ok = True
    retries: list[int] = []
    for r in range(rounds):
        clear_model_cache()
        settings = LLMSettings(
            provider="fake",
            fake_latency=latency,
            backoff_initial=latency / 25,
            backoff_max=latency / 5,
            deadline=60.0,
        )
        llm = build_chat_model(
            "flash", settings=settings, failure_rate=0.3, seed=r, retry_delay=latency / 5
        )
        structured = llm.with_structured_output(Persona)
        bare = FakeChatModel(model="fake-flash", latency=latency)
        one_call = functools.partial(_one, bare)
        twenty = functools.partial(_twenty, structured)

        if r % 2:
            b, (a, ok) = await one_call(), await twenty()
        else:
            (a, ok), b = await twenty(), await one_call()
        all_ok = all_ok and ok
        fake = llm.primary
        assert isinstance(fake, FakeChatModel)
        retries.append(fake.attempts - 20)
        ours.append(a)
        ref.append(b)
    ratios = [a / b for a, b in zip(ours, ref, strict=True)]
    return _row(
        f"20 personas, {latency:g} s latency, 30 % 429s (s; 429s retried per round "
        f"{min(retries)}-{max(retries)})",
        ours,
        ref,
        ratios,
        "s",
        "all succeed, <= 2.5x",
        all_ok and statistics.median(ratios) <= 2.5 and max(ratios) <= 2.5,
    )


async def _open_breaker(n: int) -> dict[str, Any]:
    clear_model_cache()
    settings = LLMSettings(provider="fake", max_attempts=1, breaker_failure_threshold=1)
    llm = build_chat_model("flash", settings=settings, failure_rate=1.0, failure="server_error")
    with contextlib.suppress(Exception):
        await llm.ainvoke("x")
    fake = llm.primary
    assert isinstance(fake, FakeChatModel)
    before = fake.attempts
    times: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        with contextlib.suppress(CircuitOpenError):
            await llm.ainvoke("x")
        times.append((time.perf_counter() - start) * 1e6)
    untouched = fake.attempts == before
    chunks = [times[i::5] for i in range(5)]
    medians = [statistics.median(c) for c in chunks]
    return _row(
        "open breaker: refused ainvoke (µs), requests made: "
        + ("0" if untouched else str(fake.attempts - before)),
        medians,
        [],
        [],
        "µs",
        "< 1000 µs, no request",
        untouched and statistics.median(medians) < 1000,
    )


async def _bench(quick: bool) -> list[dict[str, Any]]:
    rows = [await _overhead(300, 7 if quick else 15)]
    rows.append(await _overhead(300, 7 if quick else 15, scoped=True))
    rows.append(await _bulk(1.0 if quick else 5.0, 2 if quick else 3))
    rows.append(await _open_breaker(500 if quick else 2000))
    clear_model_cache()
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows of the table (case, ours, reference, ratio, target, verdict)."""
    return asyncio.run(_bench(quick))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, 1 s latency")
    args = parser.parse_args(argv)
    print(format_table(run(quick=args.quick), extra=False))


if __name__ == "__main__":
    main()
