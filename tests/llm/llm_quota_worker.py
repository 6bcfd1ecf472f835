"""Worker processes for ``test_llm_quota_processes``: each builds ``build_chat_model("flash")``
on the real SDK against the fake Gemini, sharing one quota through Redis (``quota_redis``),
warms up with one call, reports ``"ready"``, waits for ``"go"``, fires ``calls`` calls at once
and sends back how many were answered and the errors."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from llm_cooldown_worker import _recv

PRELOAD = ["sight_core.llm", "langchain_google_genai", "redis.asyncio", "llm_quota_worker"]
PROMPT = "Describe one persona of a small bakery's customers in two sentences."  # 17 tokens


async def _work(conn: Connection, gemini_url: str, redis_url: str, calls: int, rpm: int) -> None:
    from redis.asyncio import Redis

    from sight_core.llm import aclose_models, build_chat_model
    from sight_core.settings import LLMSettings, QuotaLimit

    redis = Redis.from_url(redis_url)
    settings = LLMSettings(
        provider="google",
        api_key="test-key",  # type: ignore[arg-type]
        base_url=gemini_url,
        timeout=5.0,
        max_attempts=4,
        deadline=60.0,
        quotas={"gemini-2.5-flash": QuotaLimit(rpm=rpm, tpm=rpm * 17)},
        quota_window=1.0,
        quota_margin=0.3,
        quota_workers=4,
    )
    llm = build_chat_model("flash", settings=settings, quota_redis=redis)
    await llm.ainvoke(PROMPT)
    conn.send("ready")
    conn.recv()
    results = await asyncio.gather(
        *(llm.ainvoke(PROMPT) for _ in range(calls)), return_exceptions=True
    )
    governor = llm.quota
    assert governor is not None
    conn.send(
        {
            "answered": sum(not isinstance(r, BaseException) for r in results),
            "errors": [type(r).__name__ for r in results if isinstance(r, BaseException)],
            "degraded": governor.degraded,
        }
    )
    await aclose_models()
    await redis.aclose()


def worker(conn: Connection, gemini_url: str, redis_url: str, calls: int, rpm: int) -> None:
    asyncio.run(_work(conn, gemini_url, redis_url, calls, rpm))


async def run_workers(
    gemini_url: str,
    redis_url: str,
    workers: int,
    calls: int,
    rpm: int,
    on_ready: Callable[[], None] = lambda: None,
) -> list[dict[str, Any]]:
    """Start the workers; ``on_ready`` runs once all have warmed up, before they go."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    pipes = [ctx.Pipe() for _ in range(workers)]
    procs = [
        ctx.Process(target=worker, args=(child, gemini_url, redis_url, calls, rpm))
        for _, child in pipes
    ]
    for proc in procs:
        proc.start()
    try:
        for (parent, _), proc in zip(pipes, procs, strict=True):
            assert await asyncio.to_thread(_recv, parent, proc, 120) == "ready"
        on_ready()
        for parent, _ in pipes:
            parent.send("go")
        return [
            await asyncio.to_thread(_recv, parent, proc, 90)
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
