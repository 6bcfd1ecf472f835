"""QuotaGovernor against the real Redis: booking, settling, expiry, round trips, invariants."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis
from redis.crc import key_slot

from sight_core import observability
from sight_core.errors import ConfigurationError, RateLimitedError
from sight_core.llm import QuotaGovernor, estimate_tokens
from sight_core.settings import LLMSettings, QuotaLimit, SightSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def _no_sleep(_: float) -> None:
    return None


def _governor(redis: Redis | None, clock: FakeClock | None = None, **kw: Any) -> QuotaGovernor:
    params: dict[str, Any] = {
        "model": "gemini-test",
        "limits": QuotaLimit(rpm=100, tpm=1000),
        "window": 60.0,
        "lease_ttl": 120.0,
    }
    if clock is not None:
        params.update(clock=clock, sleep=_no_sleep)
    params.update(kw)
    return QuotaGovernor(redis, **params)


class CountingRedis:
    """Counts the commands a client sends (each one is a round trip: nothing is pipelined)."""

    def __init__(self, client: Redis) -> None:
        self.calls: list[str] = []
        original = client.execute_command

        async def execute_command(*args: Any, **options: Any) -> Any:
            self.calls.append(str(args[0]))
            return await original(*args, **options)

        client.execute_command = execute_command  # type: ignore[method-assign]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_admits_at_once_then_books_a_later_start(
    redis_client: Redis, clock: FakeClock
) -> None:
    gov = _governor(redis_client, clock)
    first = await gov.reserve(input_tokens=600)
    assert first.wait == 0
    clock.now += 10
    second = await gov.reserve(input_tokens=600)  # 1200 > 1000: starts when the first ages out
    assert second.wait == pytest.approx(50.0)
    third = await gov.reserve(input_tokens=100)  # booked after the second, never before it
    assert third.wait == pytest.approx(50.0)
    assert await gov.outstanding() == 3


async def test_deadline_too_short_fails_at_once_with_retry_after(
    redis_client: Redis, clock: FakeClock
) -> None:
    gov = _governor(redis_client, clock)
    await gov.reserve(input_tokens=900)
    with pytest.raises(RateLimitedError) as caught:
        await gov.reserve(input_tokens=200, deadline=5.0)
    assert caught.value.retry_after == pytest.approx(60.0)
    assert await gov.outstanding() == 1  # nothing booked for the refused one
    with pytest.raises(RateLimitedError) as too_big:
        await gov.reserve(input_tokens=1001)
    assert too_big.value.retry_after is None  # larger than the limit: never admitted


async def test_requests_per_minute_and_per_day(redis_client: Redis, clock: FakeClock) -> None:
    gov = _governor(redis_client, clock, limits=QuotaLimit(rpm=2, rpd=3), day=3600.0)
    assert (await gov.reserve()).wait == 0
    assert (await gov.reserve()).wait == 0
    assert (await gov.reserve()).wait == pytest.approx(60.0)  # third request: next window
    with pytest.raises(RateLimitedError) as caught:  # fourth: the day's three are booked
        await gov.reserve(deadline=600.0)
    assert caught.value.retry_after is not None and caught.value.retry_after > 600.0


async def test_settle_refunds_and_charges(redis_client: Redis, clock: FakeClock) -> None:
    gov = _governor(redis_client, clock)
    lease = await gov.reserve(input_tokens=900)
    assert await lease.settle(300, 0)  # refund 600
    assert not await lease.settle(300, 0)  # once
    assert (await gov.reserve(input_tokens=700)).wait == 0  # fits now: 300 + 700
    charged = await gov.reserve(input_tokens=0, deadline=0)  # rpm only, 0 tokens
    assert await charged.settle(50, 0)  # charged: 1050 > 1000 in this window
    with pytest.raises(RateLimitedError):
        await gov.reserve(input_tokens=1, deadline=1.0)


async def test_release_on_error_and_cancellation_exactly_once(
    redis_client: Redis, clock: FakeClock
) -> None:
    gov = _governor(redis_client, clock)
    with pytest.raises(RuntimeError):
        async with await gov.reserve(input_tokens=1000):
            raise RuntimeError("the call failed before reaching the model")
    assert await gov.outstanding() == 0
    assert (await gov.reserve(input_tokens=1000)).wait == 0  # the refund made room


async def test_cancelled_while_waiting_releases(redis_client: Redis) -> None:
    gov = _governor(redis_client, window=30.0, limits=QuotaLimit(tpm=100))
    await gov.reserve(input_tokens=100)
    waiter = asyncio.create_task(gov.reserve(input_tokens=100))
    await asyncio.sleep(0.2)
    assert not waiter.done() and await gov.outstanding() == 2
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await gov.aclose()
    assert await gov.outstanding() == 1


async def test_crashed_holder_lease_expires(redis_client: Redis, clock: FakeClock) -> None:
    gov = _governor(redis_client, clock, lease_ttl=30.0)
    lease = await gov.reserve(input_tokens=500)
    clock.now += 31
    assert await gov.outstanding() == 0
    assert not await lease.settle(10, 0)  # too late: the reservation stays as booked
    assert (await gov.reserve(input_tokens=600)).wait == pytest.approx(29.0)


async def test_exhausted_day_refuses_every_worker(redis_client: Redis, clock: FakeClock) -> None:
    one, two = _governor(redis_client, clock), _governor(redis_client, clock)
    left = await one.exhaust("rpd")
    assert 0 < left <= 86400
    with pytest.raises(RateLimitedError) as caught:
        await two.reserve(input_tokens=1, deadline=60.0)  # another worker, same Redis
    assert caught.value.retry_after == pytest.approx(left)
    assert await two.outstanding() == 0


async def test_one_round_trip_per_reserve_and_per_settle(redis_client: Redis) -> None:
    gov = _governor(redis_client, window=1.0, limits=QuotaLimit(tpm=100))
    await (await gov.reserve(input_tokens=1)).release()  # loads the script once
    counter = CountingRedis(redis_client)
    lease = await gov.reserve(input_tokens=10)
    assert counter.calls == ["EVALSHA"]
    await lease.settle(5, 3)
    assert counter.calls == ["EVALSHA"] * 2
    await gov.reserve(input_tokens=95)  # fills the window
    counter.calls.clear()
    waiter = await gov.reserve(input_tokens=50, deadline=5.0)  # waits ~1 s, locally
    assert waiter.wait > 0.5
    await waiter.settle(50, 0)
    assert counter.calls == ["EVALSHA"] * 2  # a waiter: one call to book, one to settle


def test_keys_share_one_cluster_slot() -> None:
    gov = _governor(None, project="acme", model="gemini-2.5-flash")
    assert gov.keys[0] == "{quota:acme:gemini-2.5-flash}:log"
    assert len({key_slot(k.encode()) for k in gov.keys}) == 1
    with pytest.raises(ConfigurationError, match="hash tag"):
        _governor(None, project="a}b")


def test_quota_settings_load_and_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGHT_LLM__QUOTAS__GEMINI-2.5-FLASH__RPM", "1000")
    monkeypatch.setenv("SIGHT_LLM__QUOTAS__GEMINI-2.5-FLASH__TPM", "1000000")
    loaded = SightSettings(_env_file=None).llm.quotas["gemini-2.5-flash"]
    assert (loaded.rpm, loaded.tpm, loaded.rpd) == (1000, 1000000, None)
    monkeypatch.setenv("SIGHT_LLM__QUOTAS__GEMINI-2.5-FLASH__RPD", "-5")
    with pytest.raises(ConfigurationError, match=r"SIGHT_LLM__QUOTAS__GEMINI-2\.5-FLASH__RPD"):
        SightSettings(_env_file=None)
    with pytest.raises(Exception, match="at least one of RPM, TPM"):
        LLMSettings(quotas={"m": {}})  # type: ignore[dict-item]


def test_estimate_is_chars_over_four() -> None:
    assert estimate_tokens(0) == 0
    assert estimate_tokens(9) == 3
    assert estimate_tokens(9, chars_per_token=3) == 3


async def test_metrics_per_model(redis_client: Redis, clock: FakeClock) -> None:
    observability.reset()
    gov = _governor(redis_client, clock, model="metered")
    lease = await gov.reserve(input_tokens=800, output_tokens=100)
    await lease.settle(500, 40)
    await gov.reserve(input_tokens=600)  # 500 + 600 > 1000: waits
    with pytest.raises(RateLimitedError):
        await gov.reserve(input_tokens=400, deadline=1.0)
    snap = observability.snapshot()
    assert snap.counter("sight_llm_quota_admitted_total", model="metered", mode="shared") == 2
    assert snap.counter("sight_llm_quota_waited_total", model="metered") == 1
    assert snap.counter("sight_llm_quota_refused_total", model="metered", reason="deadline") == 1
    reserved = snap.counter("sight_llm_quota_tokens_reserved_total", model="metered", kind="input")
    settled = snap.counter("sight_llm_quota_tokens_settled_total", model="metered", kind="input")
    assert (reserved, settled) == (1400, 500)


# --------------------------------------------------------------------------- the invariant
#
# In every window of length W, the input tokens of the admitted requests (settled usage, or
# the reservation until settled) are at most the limit plus what settles charged above their
# reservations; with estimates >= usage, at most the limit. Same for requests per window.

WINDOW = 10.0
LIMIT_TOKENS = 1000
LIMIT_REQUESTS = 6
TTL = 25.0


class QuotaMachine(RuleBasedStateMachine):
    redis_url = ""
    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.redis = Redis.from_url(self.redis_url)
        self.loop.run_until_complete(self.redis.flushall())
        self.gov = _governor(
            self.redis,
            self.clock,
            window=WINDOW,
            lease_ttl=TTL,
            limits=QuotaLimit(rpm=LIMIT_REQUESTS, tpm=LIMIT_TOKENS),
        )
        # lease id -> [start ms, counted tokens, charged above reservation, ttl end ms, open,
        # the lease]
        self.ledger: dict[str, list[Any]] = {}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.redis.aclose())
        self.loop.close()

    @initialize()
    def start(self) -> None:
        pass

    @rule(
        target=leases,
        tokens=st.integers(0, 700),
        deadline=st.one_of(st.none(), st.integers(0, 30_000).map(lambda ms: ms / 1000)),
    )
    def reserve(self, tokens: int, deadline: float | None) -> str:
        lease = None
        refused = -1.0
        try:
            lease = self.run(self.gov.reserve(input_tokens=tokens, deadline=deadline))
        except RateLimitedError as exc:
            refused = exc.retry_after if exc.retry_after is not None else -1.0
        if lease is None:  # refused only when no start fits the deadline
            assert deadline is not None and refused > deadline
            return ""
        assert deadline is None or lease.wait <= deadline + 1e-3
        start = round(self.clock.now * 1000) + round(lease.wait * 1000)  # exact ms, like Redis
        self.ledger[lease.id] = [start, tokens, 0, start + round(TTL * 1000), True, lease]
        return str(lease.id)

    @rule(lease=consumes(leases), used=st.integers(0, 800))
    def settle(self, lease: str, used: int) -> None:
        entry = self.ledger.get(lease)
        if entry is None:
            return
        expected = entry[4] and round(self.clock.now * 1000) < entry[3]
        assert self.run(entry[5].settle(used, 0)) == expected
        if expected:
            entry[2] = max(0, used - entry[1])
            entry[1] = used
        entry[4] = False

    @rule(lease=consumes(leases))
    def release(self, lease: str) -> None:
        entry = self.ledger.get(lease)
        if entry is None:
            return
        expected = entry[4] and round(self.clock.now * 1000) < entry[3]
        assert self.run(entry[5].release()) == expected
        if expected:
            del self.ledger[lease]
        else:
            entry[4] = False

    @rule(seconds=st.integers(0, 12_000).map(lambda ms: ms / 1000))
    def advance(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule()
    def expire(self) -> None:
        self.clock.now += TTL + 1

    @invariant()
    def within_limits(self) -> None:
        entries = list(self.ledger.values())
        for right in entries:
            inside = [e for e in entries if right[0] - WINDOW * 1000 < e[0] <= right[0]]
            tokens = sum(e[1] for e in inside)
            charged = sum(e[2] for e in inside)
            assert tokens <= LIMIT_TOKENS + charged, (tokens, charged)
            assert len(inside) <= LIMIT_REQUESTS

    @invariant()
    def outstanding_matches(self) -> None:
        now = round(self.clock.now * 1000)
        expected = sum(1 for e in self.ledger.values() if e[4] and now < e[3])
        assert self.run(self.gov.outstanding()) == expected


def test_quota_invariant_state_machine(redis_url: str) -> None:
    QuotaMachine.redis_url = redis_url
    run_state_machine_as_test(
        QuotaMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# --------------------------------------------------------------- no leak under cancellation


@pytest.fixture
async def leak_redis(redis_url: str) -> AsyncIterator[Callable[[], Redis]]:
    clients: list[Redis] = []

    def make() -> Redis:
        client = Redis.from_url(redis_url)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32 - 1))
async def test_no_reservation_outstanding_after_random_cancellations(
    leak_redis: Callable[[], Redis], seed: int
) -> None:
    """500 callers per example (10,000 over the run): each is cancelled at a random point,
    raises inside its lease, or settles; afterwards no reservation is outstanding."""
    rng = random.Random(seed)
    redis = leak_redis()
    await redis.flushall()
    gov = _governor(redis, model=f"leak-{seed}", window=0.2, limits=QuotaLimit(rpm=400, tpm=40_000))

    async def caller(fate: int) -> None:
        async with await gov.reserve(input_tokens=rng.randint(1, 200), deadline=1.0) as lease:
            await asyncio.sleep(0)
            if fate == 1:
                raise ValueError("the model call failed")
            if fate == 2:
                await lease.settle(rng.randint(0, 200), rng.randint(0, 50))

    tasks = [asyncio.create_task(caller(rng.randrange(3))) for _ in range(500)]
    for _ in range(rng.randrange(1, 6)):
        await asyncio.sleep(rng.random() * 0.01)
        for task in tasks:
            if rng.random() < 0.2:
                task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await gov.aclose()
    unexpected = [
        r
        for r in results
        if isinstance(r, BaseException)
        and not isinstance(r, asyncio.CancelledError | ValueError | RateLimitedError)
    ]
    assert not unexpected
    assert await gov.outstanding() == 0
