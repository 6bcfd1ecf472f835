"""Issue 11, item 1, across 4 OS processes: once an invalidation has returned, no read in
any process returns a value whose computation started before it, and the readers that
arrived after it recompute in one flight."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from sight_core.cache import Cache

WORKER = Path(__file__).with_name("fencing_worker.py")
SOURCE = "test:fence-source"
RELEASE = "test:fence-release"


def _spawn(redis_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), redis_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


async def _line(p: subprocess.Popen[str]) -> str:
    assert p.stdout is not None
    async with asyncio.timeout(30):
        return (await asyncio.to_thread(p.stdout.readline)).strip()


def _send(p: subprocess.Popen[str], line: str) -> None:
    assert p.stdin is not None
    p.stdin.write(line + "\n")
    p.stdin.flush()


@pytest.mark.slow
async def test_no_process_reads_a_value_computed_before_an_invalidation(
    redis_client: Redis, redis_url: str
) -> None:
    invalidator = Cache()  # this process: no computation of its own, no local tier
    invalidator.bind(redis_client)

    @invalidator.cached(namespace="fenced", key="{x}", tags=("t:{x}",), ttl=600)
    async def get(x: int) -> int:
        raise AssertionError("only the workers compute")

    kinds = {
        "key": lambda x: get.invalidate(x),
        "tag": lambda x: invalidator.invalidate_tags(f"t:{x}"),
        "namespace": lambda x: invalidator.invalidate_namespace("fenced"),
    }
    owner, *readers = procs = [_spawn(redis_url) for _ in range(4)]
    rounds = []
    try:
        for p in procs:
            assert await _line(p) == "ready"
        for x, (kind, invalidate) in enumerate(kinds.items(), start=1):
            await redis_client.delete(RELEASE)
            await redis_client.set(SOURCE, 10 * x)
            _send(owner, f"compute {x}")
            assert await _line(owner) == "computing"  # it has read the source: 10x
            await redis_client.set(SOURCE, 10 * x + 1)
            await invalidate(x)  # returned: from here on, nobody may read 10x
            for p in readers:
                _send(p, f"read {x}")  # they find the owner's lock held, and wait
            channel = invalidator.keyspace.channel(get.key(x))
            async with asyncio.timeout(20):  # until all 3 listen for the owner's result
                while (await redis_client.pubsub_numsub(channel))[0][1] < 3:
                    await asyncio.sleep(0.01)
            await redis_client.set(RELEASE, 1)  # the owner commits (refused: fenced)
            first = json.loads(await _line(owner))
            late = [json.loads(await _line(p)) for p in readers]
            for p in procs:
                _send(p, f"read {x}")
            after = [json.loads(await _line(p)) for p in procs]
            rounds.append((kind, x, first, late, after))
    finally:
        for p in procs:  # EOF on stdin ends a worker; communicate closes the pipes
            try:
                await asyncio.to_thread(p.communicate, timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
        await invalidator.aclose()
    done = [0, 0, 0]  # the readers' computations before the round
    for kind, x, first, late, after in rounds:
        assert first["value"] == 10 * x, kind  # its caller started before: fine
        assert [r["value"] for r in late] == [10 * x + 1] * 3, kind
        assert [r["value"] for r in after] == [10 * x + 1] * 4, kind  # nothing stale stored
        # The fenced computation's waiters recomputed in one flight, across 3 processes.
        now = [r["computations"] for r in late]
        assert sum(now) - sum(done) == 1, (kind, now, done)
        assert [r["computations"] for r in after[1:]] == now, kind
        done = now
