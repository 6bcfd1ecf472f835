"""The Lua state machine and the Python one agree, operation by operation (hypothesis)."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from sight_core.resilience import BreakerConfig, MemoryBreakerStore, RedisBreakerStore

CFG = BreakerConfig(
    failure_threshold=3,
    recovery_timeout=3600.0,  # never passes by itself during a test: "expire" forces it
    half_open_max_calls=2,
    failure_rate=0.5,
    window=3600.0,
    minimum_calls=4,
    probe_lease=3600.0,
)
_names = itertools.count()

Op = tuple[str, bool]
ops = st.lists(
    st.tuples(
        # weighted towards failures so that runs reach open and half-open often
        st.sampled_from(["fail", "fail", "fail", "acquire", "acquire", "ok", "release", "expire"]),
        st.booleans(),
    ),
    max_size=30,
)


async def _apply(
    op: Op, name: str, memory: MemoryBreakerStore, redis: RedisBreakerStore, client: Redis
) -> tuple[Any, Any]:
    kind, probe = op
    if kind == "acquire":
        (g1, s1), (g2, s2) = await memory.acquire(name, CFG), await redis.acquire(name, CFG)
        return (g1, s1.state, s1.failures), (g2, s2.state, s2.failures)
    if kind in ("fail", "ok"):
        s1 = await memory.record(name, CFG, failure=kind == "fail", probe=probe)
        s2 = await redis.record(name, CFG, failure=kind == "fail", probe=probe)
        return (s1.state, s1.failures), (s2.state, s2.failures)
    if kind == "release":
        s1, s2 = await memory.release(name, CFG), await redis.release(name, CFG)
        return s1.state, s2.state
    # "expire": the recovery time is over (poke both clocks' view of open-until)
    entry = memory._entries.get(name)
    if entry is not None:
        entry.open_until = 0.0
    if await client.hexists(redis.key(name), "ou"):
        await client.hset(redis.key(name), "ou", 0)
    s1, s2 = await memory.load(name, CFG), await redis.load(name, CFG)
    return s1.state, s2.state


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sequence=ops)
@example(  # trip by count, probe twice: two successes close, one would not
    [("fail", False)] * 3
    + [("expire", False), ("acquire", False), ("ok", True), ("acquire", False)]
    + [("acquire", False), ("ok", True), ("acquire", False)]
)
@example(  # trip by rate, probe fails, neutral release frees a slot
    [
        *[("ok", False), ("fail", False), ("ok", False), ("fail", False), ("fail", False)],
        *[("expire", False), ("acquire", False), ("fail", True), ("expire", False)],
        *[("acquire", False), ("release", False), ("acquire", False), ("acquire", False)],
    ]
)
async def test_memory_and_redis_stores_agree(redis_client: Redis, sequence: list[Op]) -> None:
    name = f"parity-{next(_names)}"
    memory = MemoryBreakerStore()
    redis = RedisBreakerStore(redis_client, prefix="parity")
    for op in sequence:
        ours, theirs = await _apply(op, name, memory, redis, redis_client)
        assert ours == theirs, (op, sequence)
    assert not redis.degraded
