"""Four worker processes share one Gemini quota through Redis; the fake Gemini enforces it
with a true sliding window. Every call is answered and the fake sends no 429."""

from __future__ import annotations

import pytest
from llm_gemini_server import FakeGeminiServer, Quota
from llm_quota_worker import run_workers
from redis.asyncio import Redis

FLASH = "gemini-2.5-flash"
WORKERS, CALLS, RPM = 4, 8, 8


@pytest.mark.slow
async def test_four_processes_stay_within_the_providers_quota(
    gemini: FakeGeminiServer, redis_client: Redis, redis_url: str
) -> None:
    server_quota = Quota(rpm=RPM, tpm=RPM * 17, window=1.0)
    # enforced once every worker has warmed up: a process's first call spends its booked
    # start building the SDK client (seconds on a loaded machine), past any margin
    reports = await run_workers(
        gemini.url, redis_url, WORKERS, CALLS, RPM, lambda: gemini.enforce(FLASH, server_quota)
    )
    assert all(r["errors"] == [] for r in reports), reports
    assert sum(r["answered"] for r in reports) == WORKERS * CALLS
    assert not any(r["degraded"] for r in reports)
    assert server_quota.refused == 0  # estimates equal the real usage: never a 429
    assert len(server_quota.admitted) == WORKERS * CALLS
    requests, tokens = server_quota.max_in_window()
    assert requests <= RPM and tokens <= RPM * 17
