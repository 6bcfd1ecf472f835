"""Issue 13 at the resilience layer: marks between nested layers, jittered hints, cooldowns,
an open circuit mid-retry, and a shared breaker that keeps its state when Redis dies or hangs.

The LLM-level counterparts (through the real SDK and the fake Gemini server) are in
``tests/llm/test_llm_resilience_trust.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import pytest
from google.genai.errors import ClientError
from redis.asyncio import Redis
from resilience_support import Clock, TcpProxy, unavailable

import sight_core.resilience._retry as retry_module
from sight_core.errors import CircuitOpenError, RateLimitedError
from sight_core.resilience import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    Grant,
    RedisBreakerStore,
    RetryEvent,
    RetryPolicy,
    Snapshot,
    circuit_of,
    classify,
    cooldown_for,
    retried_by,
    retrying,
    set_testing,
)

RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
OPEN, HALF_OPEN = BreakerState.OPEN, BreakerState.HALF_OPEN


def too_many(delay: str | None = None, *, per_day: bool = False) -> ClientError:
    details: list[dict[str, Any]] = []
    if delay is not None:
        details.append({"@type": RETRY_INFO, "retryDelay": delay})
    if per_day:
        details.append(
            {
                "@type": QUOTA_FAILURE,
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/"
                        "generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                    }
                ],
            }
        )
    error: dict[str, Any] = {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}
    if details:
        error["details"] = details
    return ClientError(429, {"error": error})


class Dependency:
    """Counts calls; raises the next scripted error (or ``error`` forever), else ``"ok"``."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.calls = 0
        self.error = error

    async def __call__(self) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return "ok"


# ---------------------------------------------------------------- item 8: nested policies


async def test_an_outer_policy_does_not_retry_what_an_inner_one_handled() -> None:
    dep = Dependency(unavailable())
    inner = RetryPolicy(max_attempts=4, name="inner")

    @retrying(max_attempts=4, name="outer")
    async def outer() -> str:
        return await inner.call(dep)

    with set_testing(True), pytest.raises(Exception, match="503") as info:
        await outer()
    assert dep.calls == 4  # max_attempts, not 4 * 4
    assert retried_by(info.value) == "inner"


async def test_an_unmarked_error_is_still_retried_by_the_outer_policy() -> None:
    dep = Dependency(unavailable())
    with set_testing(True), pytest.raises(Exception, match="503"):
        await RetryPolicy(max_attempts=3).call(dep)
    assert dep.calls == 3


# ---------------------------------------------------------------- item 9: jittered hints


async def test_server_hints_are_spread_over_callers_never_below_the_hint() -> None:
    waits: list[float] = []

    async def caller() -> None:
        failures = [too_many("1.5s")]

        async def fn() -> str:
            if failures:
                raise failures.pop()
            return "ok"

        policy = RetryPolicy(initial=0.1, on_retry=[lambda e: waits.append(e.wait)])
        assert await policy.call(fn) == "ok"

    with set_testing(True):
        await asyncio.gather(*(caller() for _ in range(20)))
    assert len(waits) == 20
    assert min(waits) >= 1.5  # never before the server's time
    assert max(waits) - min(waits) >= 0.3  # spread: not 20 requests in the same instant
    assert max(waits) <= 1.5 + 0.75  # at most half the hint later


async def test_no_jitter_waits_exactly_the_hint() -> None:
    events: list[RetryEvent] = []
    fails = [too_many("1.5s")]

    async def fn() -> str:
        if fails:
            raise fails.pop()
        return "ok"

    policy = RetryPolicy(initial=0.1, wait_exponential_jitter=False, on_retry=[events.append])
    with set_testing(True):
        await policy.call(fn)
    assert [e.wait for e in events] == [1.5]


# ---------------------------------------------------------------- item 6: open circuit mid-retry


async def test_a_circuit_opened_by_another_caller_during_the_wait_ends_the_call_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    breaker = CircuitBreaker("shared-dep", failure_threshold=3, recovery_timeout=60)
    dep = Dependency(unavailable())
    other = Dependency(unavailable())
    sleeps: list[float] = []

    async def sleep_while_others_fail(seconds: float) -> None:
        sleeps.append(seconds)
        while breaker.state is not OPEN:  # meanwhile, other callers open the circuit
            with pytest.raises(Exception, match="503"):
                await breaker.call(other)

    monkeypatch.setattr(retry_module, "_sleep", sleep_while_others_fail)
    policy = RetryPolicy(max_attempts=8, initial=0.1, deadline=None)
    with pytest.raises(Exception, match="503") as info:
        await policy.call(breaker.call, dep)
    assert not isinstance(info.value, CircuitOpenError)  # the real error, not the refusal
    circuit = circuit_of(info.value)
    assert circuit is not None and (circuit.name, circuit.state) == ("shared-dep", OPEN)
    assert circuit.retry_after is not None and circuit.retry_after > 50
    assert dep.calls == 1  # the refused attempt made no request
    assert len(sleeps) == 1  # and no further sleeps


async def test_without_a_breaker_error_no_circuit_is_attached() -> None:
    dep = Dependency(unavailable())
    with set_testing(True), pytest.raises(Exception, match="503") as info:
        await RetryPolicy(max_attempts=2).call(dep)
    assert circuit_of(info.value) is None


# ---------------------------------------------------------------- item 7: cooldowns


def test_classification_of_long_hints_and_daily_quotas() -> None:
    long = classify(too_many("600s"))
    assert (long.retry_after, long.daily_quota) == (600.0, False)
    assert cooldown_for(long, 60.0, 3600.0) == 600.0
    assert cooldown_for(classify(too_many("7s")), 60.0, 3600.0) is None
    daily = classify(too_many("12s", per_day=True))
    assert daily.daily_quota
    assert cooldown_for(daily, 60.0, 3600.0) == 3600.0
    assert cooldown_for(classify(unavailable()), 60.0, 3600.0) is None


async def test_a_long_server_wait_puts_the_circuit_in_a_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker("quota", max_server_wait=60, clock=clock)
    dep = Dependency(too_many("600s"))
    policy = RetryPolicy(max_attempts=5, max_server_wait=60)
    with set_testing(True), pytest.raises(ClientError) as info:
        await policy.call(breaker.call, dep)
    assert dep.calls == 1  # not retried: the server said no for ten minutes
    circuit = circuit_of(info.value)
    assert circuit is not None and circuit.cooldown and circuit.retry_after == 600
    with pytest.raises(RateLimitedError) as refused:
        await breaker.call(dep)
    assert refused.value.retry_after == pytest.approx(600)
    assert isinstance(refused.value, CircuitOpenError)
    assert dep.calls == 1
    clock.now += 600
    dep.error = None
    assert await breaker.call(dep) == "ok"  # half-open probe after the cooldown, closes
    assert breaker.state is BreakerState.CLOSED


async def test_a_per_day_quota_cools_down_for_quota_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker("daily", max_server_wait=60, quota_cooldown=1800, clock=clock)
    dep = Dependency(too_many("20s", per_day=True))
    with set_testing(True), pytest.raises(ClientError):
        await RetryPolicy(max_attempts=5).call(breaker.call, dep)
    assert dep.calls == 1
    clock.now += 1799
    with pytest.raises(RateLimitedError):
        await breaker.call(dep)
    clock.now += 1
    assert breaker.state is HALF_OPEN


async def test_a_breaker_without_max_server_wait_has_no_cooldowns() -> None:
    breaker = CircuitBreaker("plain", failure_threshold=5)
    dep = Dependency(too_many("600s"))
    with pytest.raises(ClientError):
        await breaker.call(dep)
    assert breaker.state is BreakerState.CLOSED


async def test_a_cooldown_is_shared_through_redis(redis_client: Redis) -> None:
    one = CircuitBreaker("cool-shared", max_server_wait=60, store=RedisBreakerStore(redis_client))
    two = CircuitBreaker("cool-shared", max_server_wait=60, store=RedisBreakerStore(redis_client))
    dep = Dependency(too_many("600s"))
    with pytest.raises(ClientError):
        await one.call(dep)
    with pytest.raises(RateLimitedError) as info:
        await two.call(dep)  # another process: its first call reads the shared state
    assert info.value.retry_after is not None and 590 < info.value.retry_after <= 600
    assert dep.calls == 1
    ttl = await redis_client.pttl(RedisBreakerStore(redis_client).key("cool-shared"))
    assert ttl > 600_000  # the state outlives the cooldown


# ---------------------------------------------------------------- item 12: Redis dead or hung


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    parsed = urlparse(redis_url)
    server = await TcpProxy(parsed.hostname or "127.0.0.1", parsed.port or 6379).start()
    yield server
    await server.aclose()


def proxied(proxy: TcpProxy) -> Redis:
    return Redis(host="127.0.0.1", port=proxy.port, socket_timeout=1, socket_connect_timeout=1)


class CountingStore(RedisBreakerStore):
    __slots__ = ("acquires",)

    def __init__(self, redis: Redis, **kw: Any) -> None:
        super().__init__(redis, **kw)
        self.acquires = 0

    async def acquire(self, name: str, cfg: BreakerConfig) -> tuple[Grant, Snapshot]:
        self.acquires += 1
        return await super().acquire(name, cfg)


@pytest.mark.parametrize("probes", [1, 2])
async def test_redis_dead_after_the_circuit_opened_keeps_it_open_and_caps_probes(
    redis_client: Redis, proxy: TcpProxy, probes: int
) -> None:
    clock = Clock()
    client = proxied(proxy)
    store = RedisBreakerStore(client, op_timeout=0.5, clock=clock)
    breaker = CircuitBreaker(
        f"dead-{probes}",
        failure_threshold=1,
        recovery_timeout=30,
        half_open_max_calls=probes,
        store=store,
        clock=clock,
    )
    failing = Dependency(unavailable())
    with pytest.raises(Exception, match="503"):
        await breaker.call(failing)  # opened, in Redis
    assert breaker.state is OPEN
    proxy.set_mode("refuse")  # Redis dies
    clock.now += 31  # the recovery timeout passes with Redis dead
    hanging = asyncio.Event()
    reached = 0

    async def slow() -> str:
        nonlocal reached
        reached += 1
        await hanging.wait()
        return "ok"

    calls = [asyncio.ensure_future(breaker.call(slow)) for _ in range(50)]
    async with asyncio.timeout(20):  # every caller got its answer: a refusal or the dependency
        while reached + sum(c.done() for c in calls) < 50:
            await asyncio.sleep(0.02)
    hanging.set()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert reached == probes  # at most half_open_max_calls requests reach the dependency
    assert sum(isinstance(o, CircuitOpenError) for o in outcomes) == 50 - probes
    assert store.degraded
    await client.aclose()


async def test_a_hung_redis_stalls_one_sync_not_every_caller(
    redis_client: Redis, proxy: TcpProxy
) -> None:
    clock = Clock()
    client = proxied(proxy)
    store = CountingStore(client, op_timeout=0.5, clock=clock)
    breaker = CircuitBreaker("hung", sync_interval=1.0, store=store, clock=clock)
    dep = Dependency()
    assert await breaker.call(dep) == "ok"  # first sync, Redis up
    proxy.set_mode("blackhole")  # Redis hangs
    clock.now += 1.5  # a sync is due
    results = await asyncio.gather(*(breaker.call(dep) for _ in range(20)))
    assert results == ["ok"] * 20
    assert store.acquires == 2  # the first sync, then one single-flighted sync for all 20 callers
    assert dep.calls == 21
    await client.aclose()
