"""A worker process for ``test_resilience_processes``: one breaker on the shared Redis store.

Protocol on stdin/stdout, one JSON object per line: the parent writes a command
(``{"op": "fail", "times": 3}``, ``{"op": "call"}``, ``{"op": "exit"}``); the worker answers with
the outcome, its breaker's state and how many calls reached the dependency. ``"refresh": true``
reads the shared state first (a process trusts its own view of an open circuit until the
recovery timeout it saw, which these tests make long on purpose).
"""

from __future__ import annotations

import asyncio
import json
import sys

from redis.asyncio import Redis

from sight_core.errors import CircuitOpenError
from sight_core.resilience import CircuitBreaker, RedisBreakerStore

RECOVERY = 60.0  # never passes during a test: the parent ends the pause explicitly


async def main(url: str, name: str) -> None:
    redis = Redis.from_url(url)
    breaker = CircuitBreaker(
        name,
        failure_threshold=3,
        recovery_timeout=RECOVERY,
        sync_interval=0,
        store=RedisBreakerStore(redis),
    )
    calls = 0
    failing = False

    async def dependency() -> str:
        nonlocal calls
        calls += 1
        if failing:
            raise ConnectionResetError("upstream went away")  # transient
        return "ok"

    print(json.dumps({"ready": True}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        if command["op"] == "exit":
            break
        failing = command["op"] == "fail"
        if command.get("refresh"):
            await breaker.refresh()
        outcomes = []
        for _ in range(command.get("times", 1)):
            try:
                outcomes.append(await breaker.call(dependency))
            except CircuitOpenError:
                outcomes.append("rejected")
            except ConnectionResetError:
                outcomes.append("failed")
        reply = {"outcomes": outcomes, "state": str(breaker.state), "calls": calls}
        print(json.dumps(reply), flush=True)
    await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
