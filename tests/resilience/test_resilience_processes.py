"""Two processes share one breaker through Redis: a worker trips it, this process sees it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from sight_core.errors import CircuitOpenError
from sight_core.resilience import BreakerState, CircuitBreaker, RedisBreakerStore

WORKER = Path(__file__).with_name("resilience_worker.py")
RECOVERY = 60.0  # as in the worker: never passes during the test


class Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(20):
            line = await self.proc.stdout.readline()
        assert line, "worker exited early"
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def send(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.read()


@pytest.mark.slow
async def test_two_processes_share_breaker_state(redis_client: Redis, redis_url: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), redis_url, "gemini-shared",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    worker = Worker(proc)
    try:
        assert await worker.read() == {"ready": True}
        reply = await worker.send(op="fail", times=3)
        assert reply == {"outcomes": ["failed"] * 3, "state": "open", "calls": 3}

        store = RedisBreakerStore(redis_client)
        here = CircuitBreaker(
            "gemini-shared",
            failure_threshold=3,
            recovery_timeout=RECOVERY,
            sync_interval=0,
            store=store,
        )
        calls = 0

        async def dependency() -> str:
            nonlocal calls
            calls += 1
            return "ok"

        with pytest.raises(CircuitOpenError):
            await here.call(dependency)
        assert calls == 0  # opened by the other process; nothing reached the dependency

        # the recovery timeout is over (as the server sees it), without sleeping for it:
        await redis_client.hset(store.key("gemini-shared"), "ou", 0)
        assert await here.refresh() is BreakerState.HALF_OPEN
        assert await here.call(dependency) == "ok"  # this process's probe closes it for all
        assert here.state is BreakerState.CLOSED
        reply = await worker.send(op="call", refresh=True)
        assert reply == {"outcomes": ["ok"], "state": "closed", "calls": 4}
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
