"""Issue 13 item 7 across processes: Pro's quota is gone (every request a 429 with a ten-minute
``retryDelay``); four worker processes share breakers through Redis. At most one request per
process reaches Pro during the cooldown, and every call is answered by Flash."""

from __future__ import annotations

import pytest
from llm_cooldown_worker import run_workers
from llm_gemini_server import FakeGeminiServer, Reply
from redis.asyncio import Redis

PRO, FLASH = "gemini-2.5-pro", "gemini-2.5-flash"
WORKERS, CALLS = 4, 10


@pytest.mark.slow
async def test_four_workers_share_pros_cooldown_and_flash_answers(
    gemini: FakeGeminiServer, redis_client: Redis, redis_url: str
) -> None:
    gemini.answer(PRO, Reply.rate_limited("600s"))  # quota gone: every request to Pro is a 429
    reports = await run_workers(gemini.url, redis_url, WORKERS, CALLS)
    assert all(r["errors"] == [] for r in reports)
    assert all(r["answered"] == [FLASH] * CALLS for r in reports)  # every call answered
    to_pro = {f"w{i}": 0 for i in range(WORKERS)}
    for request in gemini.requests:
        if request.model == PRO:
            to_pro[request.client] += 1
    assert all(n <= 1 for n in to_pro.values()), to_pro  # at most one request per process
    assert sum(to_pro.values()) >= 1  # and the cooldown was started by a real 429
    flash = sum(r.model == FLASH for r in gemini.requests)
    assert flash == WORKERS * (CALLS + 1)  # each worker's warm-up call, then every call
