"""Worker processes for ``test_llm_cooldown_processes`` and ``benchmarks/resilience.py``.

Each worker builds ``build_chat_model("pro")`` on the real SDK against the fake Gemini at
``gemini_url``, with its breakers in the shared Redis at ``redis_url`` (``RedisBreakerStore``),
and tags its requests with an ``x-test-client`` header so the server counts them per process.
It warms up with one call to Flash, reports ``"ready"`` on its pipe, waits for ``"go"``, makes
``calls`` sequential calls, and sends back the model that answered each call and each call's
latency in seconds.

:func:`run_workers` starts them from a ``forkserver`` that has imported LangChain once, so four
workers cost one import (several seconds on a loaded machine), not four.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from multiprocessing.connection import Connection
from typing import Any

PRELOAD = ["sight_core.llm", "langchain_google_genai", "redis.asyncio", "llm_cooldown_worker"]


async def _work(conn: Connection, gemini_url: str, redis_url: str, client: str, calls: int) -> None:
    from redis.asyncio import Redis

    from sight_core.llm import aclose_models, build_chat_model, usage_scope
    from sight_core.resilience import RedisBreakerStore
    from sight_core.settings import LLMSettings

    redis = Redis.from_url(redis_url)
    settings = LLMSettings(
        provider="google",
        api_key="test-key",  # type: ignore[arg-type]
        base_url=gemini_url,
        timeout=5.0,
        max_attempts=4,
    )
    store = RedisBreakerStore(redis)
    headers = {"x-test-client": client}
    llm = build_chat_model(
        "pro", settings=settings, breaker_store=store, additional_headers=headers
    )
    # warm up this process (lazy imports, the HTTP client, Redis connections) with one call to
    # Flash, the same model object Pro falls back to: the measured calls are steady-state ones
    flash = build_chat_model(
        "flash", settings=settings, fallback=False, breaker_store=store, additional_headers=headers
    )
    assert llm.fallback is flash
    await flash.ainvoke("warm-up")
    conn.send("ready")
    conn.recv()  # "go": every worker starts together
    answered: list[str] = []
    latencies: list[float] = []
    errors: list[str] = []
    for i in range(calls):
        started = time.perf_counter()
        try:
            async with usage_scope() as usage:
                await llm.ainvoke(f"question {i}")
            answered.append(usage.records[-1].model)
        except Exception as exc:
            errors.append(type(exc).__name__)
        latencies.append(time.perf_counter() - started)
    conn.send({"answered": answered, "latencies": latencies, "errors": errors})
    await aclose_models()
    await redis.aclose()


def worker(conn: Connection, gemini_url: str, redis_url: str, client: str, calls: int) -> None:
    """The process body."""
    asyncio.run(_work(conn, gemini_url, redis_url, client, calls))


async def run_workers(
    gemini_url: str, redis_url: str, workers: int, calls: int
) -> list[dict[str, Any]]:
    """Start ``workers`` processes (clients ``w0``, ``w1``, ...), let them go at once, and
    return each one's report."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    pipes = [ctx.Pipe() for _ in range(workers)]
    procs = [
        ctx.Process(target=worker, args=(child, gemini_url, redis_url, f"w{i}", calls))
        for i, (_, child) in enumerate(pipes)
    ]
    for proc in procs:
        proc.start()
    try:
        for (parent, _), proc in zip(pipes, procs, strict=True):
            assert await asyncio.to_thread(_recv, parent, proc, 120) == "ready"
        for parent, _ in pipes:
            parent.send("go")
        return [
            await asyncio.to_thread(_recv, parent, proc, 60)
            for (parent, _), proc in zip(pipes, procs, strict=True)
        ]
    finally:
        for proc in procs:
            proc.join(20)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for parent, child in pipes:
            parent.close()
            child.close()


def _recv(conn: Connection, proc: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not conn.poll(0.1):
        if not proc.is_alive():
            raise RuntimeError(f"worker {proc.name} exited with code {proc.exitcode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {proc.name} did not answer in {timeout}s")
    return conn.recv()
