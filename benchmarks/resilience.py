"""Resilience benchmarks: what an open breaker's refusal and a retry wrapper cost per call.

Run: ``uv run python -m benchmarks.resilience`` (``--quick`` for fewer calls and rounds).

Each case times N calls of ours and of a reference, interleaved in one process (A B, then B A,
...) over several rounds; ratios are per round (paired, so machine drift cancels out) and
reported as median with min-max; times are microseconds per call.

1. Open breaker: a refused call through ``CircuitBreaker.call`` (memory store, and Redis store
   whose open state this process has seen), against pybreaker's refusal (``call`` on an open
   breaker; with ``CircuitRedisStorage`` it reads Redis on every call). Target: < 1 ms.
2. Retry wrapper on a coroutine that succeeds (a trivial one, and one that suspends once like
   any I/O call): ``RetryPolicy.call`` (with its deadline, and without) against a bare
   ``await`` and against tenacity's own ``@retry`` on an ``async def`` (``AsyncRetrying``, what
   stamina builds on) with the same stop/wait/retry settings. Target: no slower than
   tenacity; the ratio to a bare await is reported for information. The deadline costs one
   timer handle per call (``loop.call_at``, cancelled on return); in the trivial loop the
   event loop never runs, so its cancelled timer handles pile up and the figure is
   pessimistic.
3. Closed breaker on a succeeding coroutine, against a bare ``await`` (information: the
   per-call price the LLM wrapper pays).
4. Quota cooldown across processes (issue 13 item 7): four worker processes call
   ``build_chat_model("pro")`` through the real langchain-google-genai SDK against the local
   fake Gemini server (``tests/llm/llm_gemini_server.py``), sharing breakers through Redis;
   Pro answers every request with a 429 whose ``retryDelay`` is 600 s. Reported: requests that
   reached Pro per process, calls answered by Flash, and the latency of those answers. Target:
   at most one request per process reaches Pro, every call answered by Flash in under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pybreaker
import redis as sync_redis
import tenacity
from redis.asyncio import Redis

from sight_core._bench import format_table
from sight_core.errors import CircuitOpenError
from sight_core.resilience import CircuitBreaker, RedisBreakerStore, RetryPolicy
from sight_core.testing.servers import start_redis

Case = Callable[[int], Awaitable[None]]
_TESTS_LLM = Path(__file__).resolve().parents[1] / "tests" / "llm"  # the fake Gemini, workers


async def _succeed() -> int:
    return 1


async def _succeed_after_yield() -> int:
    await asyncio.sleep(0)  # one suspension, like any call that does I/O
    return 1


async def _fail() -> int:
    raise ConnectionResetError("down")


def _sync_fail() -> int:
    raise ConnectionResetError("down")


async def _trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.config.failure_threshold or 1):
        with contextlib.suppress(ConnectionResetError, CircuitOpenError):
            await breaker.call(_fail)


def _trip_pybreaker(cb: pybreaker.CircuitBreaker) -> None:
    for _ in range(cb.fail_max):
        with contextlib.suppress(ConnectionResetError, pybreaker.CircuitBreakerError):
            cb.call(_sync_fail)


def _rejections(breaker: CircuitBreaker) -> Case:
    async def run(n: int) -> None:
        for _ in range(n):
            try:
                await breaker.call(_succeed)
            except CircuitOpenError:
                pass
            else:
                raise AssertionError("the breaker admitted a call")

    return run


def _pybreaker_rejections(cb: pybreaker.CircuitBreaker) -> Case:
    async def run(n: int) -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - same shape as ours, no context-manager cost in the loop
                cb.call(_sync_fail)
            except pybreaker.CircuitBreakerError:
                pass

    return run


def _calls(call: Callable[[], Awaitable[int]]) -> Case:
    async def run(n: int) -> None:
        for _ in range(n):
            await call()

    return run


async def _pair(a: Case, b: Case, n: int, rounds: int) -> tuple[list[float], list[float]]:
    """µs per call of ``a`` and ``b``, alternating which goes first each round."""
    await a(min(n, 1000))  # warm up
    await b(min(n, 1000))
    ta: list[float] = []
    tb: list[float] = []
    for r in range(rounds):
        order = ((a, ta), (b, tb)) if r % 2 == 0 else ((b, tb), (a, ta))
        for case, sink in order:
            gc.collect()
            start = time.perf_counter()
            await case(n)
            sink.append((time.perf_counter() - start) / n * 1e6)
    return ta, tb


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} µs ({min(values):.2f}-{max(values):.2f})"


def _row(
    case: str,
    ours: list[float],
    ref_name: str,
    ref: list[float],
    target: str,
    passed: bool | None,
) -> dict[str, Any]:
    ratios = [a / b for a, b in zip(ours, ref, strict=True)]
    median = statistics.median(ratios)
    return {
        "case": case,
        "ours": _fmt(ours),
        "reference": f"{ref_name}: {_fmt(ref)}",
        "ratio": f"{median:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})",
        "target": target,
        "verdict": "-" if passed is None else ("PASS" if passed else "FAIL"),
        "ours_median_us": statistics.median(ours),
        "ratio_median": median,
    }


async def _bench(n: int, rounds: int, redis_url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    # 1. open breaker -----------------------------------------------------------------------
    memory = CircuitBreaker("bench-open", failure_threshold=3, recovery_timeout=3600)
    await _trip(memory)
    cb = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=3600)
    _trip_pybreaker(cb)
    ours, ref = await _pair(_rejections(memory), _pybreaker_rejections(cb), n, rounds)
    rows.append(
        _row(
            "open breaker refuses a call (memory store)",
            ours,
            "pybreaker (memory)",
            ref,
            "< 1000 µs",
            statistics.median(ours) < 1000,
        )
    )

    client = Redis.from_url(redis_url)  # sight: ignore[SC701] one client for the whole run
    # pybreaker's storage is synchronous: the reference needs a sync client
    sync_client = sync_redis.Redis.from_url(redis_url)  # sight: ignore[SC302] the peer is sync
    try:
        shared = CircuitBreaker(
            "bench-open-redis",
            failure_threshold=3,
            recovery_timeout=3600,
            store=RedisBreakerStore(client),
        )
        await _trip(shared)
        storage = pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, sync_client, namespace="bench"
        )
        cb_redis = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=3600, state_storage=storage)
        _trip_pybreaker(cb_redis)
        redis_n = max(200, n // 20)  # pybreaker does a round trip per refusal
        ours, ref = await _pair(
            _rejections(shared), _pybreaker_rejections(cb_redis), redis_n, rounds
        )
        rows.append(
            _row(
                "open breaker refuses a call (Redis store)",
                ours,
                "pybreaker (CircuitRedisStorage)",
                ref,
                "< 1000 µs",
                statistics.median(ours) < 1000,
            )
        )
    finally:
        await client.aclose()
        sync_client.close()

    # 2. retry wrapper on success -------------------------------------------------------------
    policy = RetryPolicy(max_attempts=3, initial=0.5, max_backoff=30.0, deadline=60.0)
    no_deadline = policy.with_options(deadline=None)
    for label, target in (("trivial", _succeed), ("one-yield", _succeed_after_yield)):

        @tenacity.retry(
            stop=tenacity.stop_after_attempt(3),
            wait=tenacity.wait_random_exponential(multiplier=0.5, max=30.0),
            retry=tenacity.retry_if_exception_type(ConnectionError),
            reraise=True,
        )
        async def tenacity_call(target: Callable[[], Awaitable[int]] = target) -> int:
            return await target()

        async def ours_call(target: Callable[[], Awaitable[int]] = target) -> int:
            return await policy.call(target)

        async def ours_no_deadline(target: Callable[[], Awaitable[int]] = target) -> int:
            return await no_deadline.call(target)

        bare = _calls(target)
        for variant, call in (("deadline 60 s", ours_call), ("no deadline", ours_no_deadline)):
            case = f"retry wrapper, {label} coroutine succeeds ({variant})"
            ours, ref = await _pair(_calls(call), bare, n, rounds)
            rows.append(_row(case, ours, "bare await", ref, "info", None))
            ours, ref = await _pair(_calls(call), _calls(tenacity_call), n, rounds)
            ratio = statistics.median(a / b for a, b in zip(ours, ref, strict=True))
            rows.append(_row(case, ours, "tenacity @retry", ref, "≤ 1.0x", ratio <= 1.0))

    # 3. closed breaker on success ------------------------------------------------------------
    closed = CircuitBreaker("bench-closed")

    async def through_breaker() -> int:
        return await closed.call(_succeed)

    ours, ref = await _pair(_calls(through_breaker), _calls(_succeed), n, rounds)
    rows.append(_row("closed breaker, success", ours, "bare await", ref, "info", None))
    return rows


async def _cooldown(redis_url: str, workers: int, calls: int) -> dict[str, Any]:
    """Case 4: Pro's quota gone, ``workers`` processes, Flash answers (see the module doc)."""
    sys.path.insert(0, str(_TESTS_LLM))
    from llm_cooldown_worker import run_workers
    from llm_gemini_server import FakeGeminiServer, Reply

    with FakeGeminiServer() as gemini:
        gemini.answer("gemini-2.5-pro", Reply.rate_limited("600s"))
        reports = await run_workers(gemini.url, redis_url, workers, calls)
        requests = gemini.requests
    to_pro = {f"w{i}": 0 for i in range(workers)}
    for request in requests:
        if request.model == "gemini-2.5-pro":
            to_pro[request.client] += 1
    by_flash = [
        latency
        for report in reports
        for model, latency in zip(report["answered"], report["latencies"], strict=True)
        if model == "gemini-2.5-flash"
    ]
    total = workers * calls
    ms = sorted(1000 * x for x in by_flash)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))] if ms else float("nan")
    passed = (
        max(to_pro.values()) <= 1 and len(by_flash) == total and (ms[-1] < 1000 if ms else False)
    )
    return {
        "case": f"quota cooldown, {workers} processes x {calls} calls, Pro answers 429 (600 s)",
        "ours": (
            f"Pro requests per process {sorted(to_pro.values())}; answered by Flash "
            f"{len(by_flash)}/{total}; latency p50 {statistics.median(ms):.0f} ms, "
            f"p95 {p95:.0f} ms, max {ms[-1]:.0f} ms"
        ),
        "reference": "-",
        "ratio": "-",
        "target": "<= 1 Pro request per process, all by Flash < 1 s",
        "verdict": "PASS" if passed else "FAIL",
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows of the table (case, ours, reference, ratio, target, verdict). Starts its own
    Redis server for the Redis-store cases and stops it afterwards."""
    n, rounds = (5_000, 3) if quick else (20_000, 7)
    server = start_redis(with_bolt=False)
    try:
        rows = asyncio.run(_bench(n, rounds, server.url))
        rows.append(asyncio.run(_cooldown(server.url, 4, 10 if quick else 50)))
        return rows
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and rounds")
    args = parser.parse_args(argv)
    print(format_table(run(quick=args.quick), extra=False))


if __name__ == "__main__":
    main()
