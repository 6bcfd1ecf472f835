"""Attacks on QuotaGovernor ("break it" review of issue 17), against the real Redis.

Each test is one attempt to make the governor admit more than its limit per window, leak a
reservation, refund or charge twice, block on a dead Redis, or starve a caller. Attacks that
found nothing stay as tests; bugs still open are ``xfail(strict=True)`` with the reason.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot
from test_llm_quota import FakeClock as Clock
from test_llm_quota import _governor as _gov

from sight_core.errors import ConfigurationError, RateLimitedError
from sight_core.llm import QuotaGovernor, _quota
from sight_core.settings import LLMSettings, QuotaLimit
from sight_core.testing import FaultProxy

T0 = 1_700_000_000.0


async def _ledger(redis: Redis, gov: QuotaGovernor) -> list[tuple[float, int, int, int]]:
    """(start ms, requests, input, output) of every booking still in the shared log."""
    log, amt = gov.keys[:2]
    starts = await redis.zrange(log, 0, -1, withscores=True)
    out = []
    for member, score in starts:
        raw = await redis.hget(amt, member)
        assert raw is not None, f"log entry {member!r} has no amounts"
        r, i, o, _day = (int(x) for x in raw.split())
        out.append((score, r, i, o))
    return out


def _max_per_window(entries: list[tuple[float, int, int, int]], window_ms: float, col: int) -> int:
    """The largest total of column ``col`` over every window (s - window, s] ending at a start."""
    best = 0
    for start, *_ in entries:
        total = sum(e[col] for e in entries if start - window_ms < e[0] <= start)
        best = max(best, total)
    return best


# ------------------------------------------------------------- many processes x many tasks

_WORKER = textwrap.dedent(
    """
    import asyncio, json, random, sys
    from redis.asyncio import Redis
    from sight_core.errors import RateLimitedError
    from sight_core.llm import QuotaGovernor
    from sight_core.settings import LLMSettings, QuotaLimit

    url, seed = sys.argv[1], int(sys.argv[2])

    async def nothing(_):
        return None

    async def run(frozen):
        rng = random.Random(seed)
        redis = Redis.from_url(url)
        opts = dict(limits=QuotaLimit(rpm=12, tpm=1000), lease_ttl=60.0)
        if frozen:
            frozen_at = lambda: 1_700_000_000.0
            opts.update(model="gemini-mp", window=60.0, clock=frozen_at, sleep=nothing)
        else:
            opts.update(model="gemini-mp-real", window=0.3, op_timeout=5.0)
        gov = QuotaGovernor(redis, **opts)
        counts = {"admitted": 0, "refused": 0, "cancelled": 0, "failed": 0}

        async def caller():
            for _ in range(5):
                fate = rng.randrange(5)
                need = rng.randint(1, 300)
                try:
                    async with await gov.reserve(
                        input_tokens=need, deadline=None if frozen else 1.0
                    ) as lease:
                        counts["admitted"] += 1
                        await asyncio.sleep(0)
                        if fate == 0:
                            raise ValueError("call failed")
                        if fate == 1:
                            await lease.settle(rng.randint(0, need), 0)
                        if fate == 2:
                            await lease.release()
                except ValueError:
                    counts["failed"] += 1
                except RateLimitedError:
                    counts["refused"] += 1

        tasks = [asyncio.create_task(caller()) for _ in range(16)]
        await asyncio.sleep(0.01)
        for task in tasks:
            if rng.random() < 0.3:
                task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, asyncio.CancelledError):
                counts["cancelled"] += 1
            elif isinstance(result, BaseException):
                raise result
        await gov.aclose()
        await redis.aclose()
        return counts

    async def main():
        print(json.dumps({"frozen": await run(True), "real": await run(False)}))

    asyncio.run(main())
    """
)


def _run_workers(redis_url: str, n: int = 3) -> list[dict[str, dict[str, int]]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, redis_url, str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(n)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


async def test_processes_never_book_more_than_the_limit_and_leave_nothing_outstanding(
    redis_client: Redis, redis_url: str
) -> None:
    """3 processes x 16 tasks x 5 reservations, 30 % of the tasks cancelled mid-way, twice:

    - on one frozen clock, so the whole ledger stays in Redis and every window of the final
      bookings can be summed exactly (settles here only refund: the bound is the limit);
    - on Redis TIME with real sleeps (window 0.3 s, deadline 1 s).

    Either way every reservation ends settled, released or refused: none is outstanding."""
    results = await asyncio.to_thread(_run_workers, redis_url)
    frozen = [r["frozen"] for r in results]
    assert sum(r["admitted"] for r in frozen) >= 100
    assert sum(r["cancelled"] for r in frozen) > 0
    gov = _gov(redis_client, Clock(), model="gemini-mp", limits=QuotaLimit(rpm=12, tpm=1000))
    entries = await _ledger(redis_client, gov)
    assert len(entries) > 40
    assert _max_per_window(entries, 60_000, 2) <= 1000
    assert _max_per_window(entries, 60_000, 1) <= 12
    assert await gov.outstanding() == 0
    # the running totals the script keeps agree with the ledger: nothing refunded twice
    st = gov.keys[2]
    totals = await redis_client.hmget(st, "r", "i")
    assert [int(totals[0]), int(totals[1])] == [
        sum(e[1] for e in entries),
        sum(e[2] for e in entries),
    ]
    assert sum(r["real"]["admitted"] for r in results) > 0
    real = _gov(redis_client, model="gemini-mp-real", limits=QuotaLimit(rpm=12), window=0.3)
    assert await real.outstanding() == 0


# ------------------------------------------------------------- cancellation at every await


async def test_cancelled_at_every_step_of_reserve_and_the_lease_leaves_nothing(
    redis_client: Redis,
) -> None:
    """Cancel a reserve -> use -> exit sequence after 0, 1, 2, ... loop iterations, with a
    booked wait (the window is full), so the cancellation lands before the script is sent,
    while it runs, after it returned, during the wait and inside the lease."""
    gov = _gov(redis_client, window=0.2, limits=QuotaLimit(tpm=100), op_timeout=5.0)
    seen_done = 0
    for steps in range(40):
        filler = await gov.reserve(input_tokens=60)

        async def use() -> None:
            async with await gov.reserve(input_tokens=60, deadline=2.0):
                await asyncio.sleep(0)

        task = asyncio.create_task(use())
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
            seen_done += 1
        except asyncio.CancelledError:
            pass
        await gov.aclose()
        await filler.release()
        assert await gov.outstanding() == 0, f"leak when cancelled after {steps} steps"
    assert seen_done < 40  # at least some cancellations landed inside the sequence


async def test_cancelled_caller_never_seeing_its_lease_expires(
    redis_client: Redis, clock: Clock
) -> None:
    """Reserve finished in a task the caller then abandons: only the lease TTL frees it."""
    gov = _gov(redis_client, clock, lease_ttl=30.0)
    task = asyncio.create_task(gov.reserve(input_tokens=500))
    await asyncio.sleep(0.05)
    task.cancel()  # too late: it already returned
    lease = task.result()
    assert await gov.outstanding() == 1
    clock.now += 31
    assert await gov.outstanding() == 0
    assert not await lease.settle(1, 0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


# --------------------------------------------------------------- settle / release accounting


async def test_settle_twice_and_release_after_settle_change_nothing(
    redis_client: Redis, clock: Clock
) -> None:
    gov = _gov(redis_client, clock)
    lease = await gov.reserve(input_tokens=400)
    assert await lease.settle(100, 0)
    assert not await lease.settle(50, 0)
    assert not await lease.release()
    # a second handle on the same id (another process got it somehow): still once
    twin = _quota.QuotaLease(gov, lease.id, 1, 400, 0, 0.0, False)
    assert not await twin.settle(10, 0)
    assert not await twin.release()
    entries = await _ledger(redis_client, gov)
    assert [e[1:] for e in entries] == [(1, 100, 0)]
    assert (await gov.reserve(input_tokens=900)).wait == 0  # 100 + 900


async def test_settle_above_the_reservation_charges_once(redis_client: Redis, clock: Clock) -> None:
    gov = _gov(redis_client, clock)
    lease = await gov.reserve(input_tokens=100)
    assert await lease.settle(700, 0)
    twin = _quota.QuotaLease(gov, lease.id, 1, 100, 0, 0.0, False)
    assert not await twin.settle(700, 0)
    assert [e[1:] for e in await _ledger(redis_client, gov)] == [(1, 700, 0)]
    assert (await gov.reserve(input_tokens=300)).wait == 0
    assert (await gov.reserve(input_tokens=1)).wait == pytest.approx(60.0)


async def test_settle_after_expiry_and_after_aging_out(redis_client: Redis, clock: Clock) -> None:
    gov = _gov(redis_client, clock, lease_ttl=90.0)
    expired = await gov.reserve(input_tokens=300)
    aged = await gov.reserve(input_tokens=300)
    clock.now += 61  # both aged out of the window; leases still alive
    assert await aged.settle(900, 0)  # nothing left to charge: the booking is gone
    clock.now += 30
    assert not await expired.settle(0, 0)
    assert not await expired.release()
    assert await gov.outstanding() == 0
    st = gov.keys[2]
    assert [int(x) for x in await redis_client.hmget(st, "r", "i")] == [0, 0]


@pytest.mark.parametrize(
    "amounts",
    [
        {"input_tokens": math.nan},
        {"input_tokens": 1.5},
        {"output_tokens": math.inf},
        {"requests": 0.5},
        {"input_tokens": 10**15},  # past what the script's numbers print exactly
        {"input_tokens": "12"},
    ],
    ids=["nan", "float", "inf", "float-requests", "huge", "str"],
)
async def test_bad_amounts_are_refused_and_do_not_poison_the_ledger(
    redis_client: Redis, clock: Clock, amounts: dict[str, Any]
) -> None:
    """A NaN, fractional or huge count used to be written into the shared ledger, after which
    every script call of every worker failed (the ledger could not be parsed) and the whole
    fleet fell back to its local share until the keys expired a day later."""
    gov = _gov(redis_client, clock, limits=QuotaLimit(rpm=100))
    with pytest.raises(ValueError, match=r"QuotaGovernor\.reserve"):
        await gov.reserve(**amounts)
    lease = await gov.reserve(input_tokens=5)
    assert not lease.local and not gov.degraded


@pytest.mark.parametrize(
    "usage",
    [(math.nan, 0), (1.5, 0), (0, math.inf), (10**15, 0)],
    ids=["nan", "float", "inf", "huge"],
)
async def test_bad_settled_usage_is_refused_and_does_not_poison_the_ledger(
    redis_client: Redis, clock: Clock, usage: tuple[Any, Any]
) -> None:
    gov = _gov(redis_client, clock, limits=QuotaLimit(rpm=100))
    lease = await gov.reserve(input_tokens=5)
    with pytest.raises(ValueError, match=r"QuotaLease\.settle"):
        await lease.settle(*usage)
    assert await lease.settle(3, 0)  # the lease is still open after a refused settle
    assert not (await gov.reserve(input_tokens=5)).local and not gov.degraded


async def test_zero_and_negative_counts(redis_client: Redis, clock: Clock) -> None:
    gov = _gov(redis_client, clock)
    with pytest.raises(ValueError):
        await gov.reserve(input_tokens=-1)
    zero = await gov.reserve(requests=0, input_tokens=0)
    assert zero.wait == 0
    lease = await gov.reserve(input_tokens=500)
    assert await lease.settle(-100, -5)  # negative usage counts as 0, never a credit
    assert sorted(e[1:] for e in await _ledger(redis_client, gov)) == [(0, 0, 0), (1, 0, 0)]


# --------------------------------------------------------------------- limits and deadlines


async def test_reservation_larger_than_the_limit_fails_at_once(redis_client: Redis) -> None:
    gov = _gov(redis_client, limits=QuotaLimit(rpm=5, tpm=1000, output_tpm=50, rpd=3))
    for amounts in (
        {"input_tokens": 1001},
        {"output_tokens": 51},
        {"requests": 6},
        {"requests": 4},  # above the day's limit
    ):
        started = time.monotonic()
        with pytest.raises(RateLimitedError) as caught:
            await gov.reserve(**amounts)  # no deadline: still must not wait forever
        assert caught.value.retry_after is None
        assert time.monotonic() - started < 5
    assert await gov.outstanding() == 0


async def test_deadline_shorter_than_the_booked_start(redis_client: Redis, clock: Clock) -> None:
    gov = _gov(redis_client, clock)
    await gov.reserve(input_tokens=1000)
    for deadline in (0.0, -5.0, 59.0):
        with pytest.raises(RateLimitedError) as caught:
            await gov.reserve(input_tokens=1, deadline=deadline)
        assert caught.value.retry_after == pytest.approx(60.0)
    assert (await gov.reserve(input_tokens=1, deadline=60.0)).wait == pytest.approx(60.0)
    assert await gov.outstanding() == 2


async def test_client_clock_skew_does_not_matter(
    redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a clock the script reads Redis TIME: a worker whose clock is an hour ahead
    books into the same windows as one on time."""
    on_time = _gov(redis_client, window=30.0)
    skewed = _gov(redis_client, window=30.0)

    class Ahead:
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def time() -> float:
            return time.time() + 3600

    await skewed.reserve(input_tokens=900)
    monkeypatch.setattr(_quota, "time", Ahead)
    lease = await skewed.reserve(input_tokens=50)
    assert lease.wait == 0
    monkeypatch.undo()
    with pytest.raises(RateLimitedError) as caught:
        await on_time.reserve(input_tokens=100, deadline=5.0)
    assert caught.value.retry_after is not None
    assert 25.0 < caught.value.retry_after <= 30.0


async def test_different_models_and_projects_do_not_interfere(
    redis_client: Redis, clock: Clock
) -> None:
    a = _gov(redis_client, clock, model="m1", project="p1", limits=QuotaLimit(rpm=1))
    for other in (
        _gov(redis_client, clock, model="m2", project="p1", limits=QuotaLimit(rpm=1)),
        _gov(redis_client, clock, model="m1", project="p2", limits=QuotaLimit(rpm=1)),
    ):
        assert (await a.reserve()).wait in (0, pytest.approx(60.0))
        assert (await other.reserve()).wait == 0
    for gov in (a,):
        assert len({key_slot(k.encode()) for k in gov.keys}) == 1


def test_keys_are_unambiguous_per_project_and_model() -> None:
    """``project="a:b", model="c"`` and ``project="a", model="b:c"`` used to share one
    ledger (both ``{quota:a:b:c}``); a colon in the project is now refused."""
    with pytest.raises(ConfigurationError, match="project"):
        _gov(None, project="a:b", model="c")
    assert _gov(None, project="a", model="b:c").keys[0] == "{quota:a:b:c}:log"
    with pytest.raises(Exception, match="quota_project"):
        LLMSettings(quota_project="a:b")


# -------------------------------------------------------- waiters released: no one starved


async def test_released_waiters_do_not_push_later_callers_back(
    redis_client: Redis, clock: Clock
) -> None:
    """100 callers booked 1..100 windows ahead and then all cancelled (a client timeout):
    the ledger is empty again, yet the booking kept its high-water start, so every later
    caller was booked 100 windows out (and refused under any deadline)."""
    gov = _gov(redis_client, clock, limits=QuotaLimit(rpm=1))
    first = await gov.reserve()
    waiters = [await gov.reserve() for _ in range(100)]
    assert waiters[-1].wait == pytest.approx(6000.0)
    for lease in waiters:
        assert await lease.release()
    await first.release()
    assert await gov.outstanding() == 0
    assert (await gov.reserve(deadline=1.0)).wait == 0


async def test_released_waiters_in_the_local_share_do_not_push_back() -> None:
    clock = Clock()
    gov = _gov(None, clock, limits=QuotaLimit(rpm=1))
    waiters = [await gov.reserve() for _ in range(10)]
    for lease in waiters:
        await lease.release()
    assert (await gov.reserve(deadline=1.0)).wait == 0


async def test_release_of_an_early_booking_keeps_later_ones_ordered(
    redis_client: Redis, clock: Clock
) -> None:
    """Lowering the high-water start on release must not let a new booking start before a
    booking that is still held."""
    gov = _gov(redis_client, clock, limits=QuotaLimit(rpm=1))
    await gov.reserve()
    second = await gov.reserve()
    third = await gov.reserve()
    assert (second.wait, third.wait) == (pytest.approx(60.0), pytest.approx(120.0))
    await second.release()
    assert (await gov.reserve()).wait == pytest.approx(180.0)
    entries = await _ledger(redis_client, gov)
    assert _max_per_window(entries, 60_000, 1) <= 1


# ------------------------------------------------------------- day marks and their reset


async def test_day_exhaustion_resets_at_the_boundary(redis_client: Redis, clock: Clock) -> None:
    gov = _gov(redis_client, clock, limits=QuotaLimit(rpm=100, rpd=2), day=600.0)
    clock.now = T0 + 200  # T0 % 600 == 200: the next 600 s "day" boundary is 200 s away
    left = await gov.exhaust("rpd")
    assert left == pytest.approx(200.0)
    with pytest.raises(RateLimitedError) as caught:
        await gov.reserve(deadline=100.0)
    assert caught.value.retry_after == pytest.approx(200.0)
    clock.now += 200
    assert (await gov.reserve(deadline=0)).wait == 0
    assert (await gov.reserve(deadline=0)).wait == 0
    with pytest.raises(RateLimitedError):  # the day's two are booked
        await gov.reserve(deadline=100.0)
    clock.now += 600
    assert (await gov.reserve(deadline=0)).wait == 0  # next day: counter fresh


async def test_exhaust_for_seconds_then_usable(redis_client: Redis, clock: Clock) -> None:
    gov = _gov(redis_client, clock)
    assert await gov.exhaust("tpm", 30.0) == pytest.approx(30.0)
    assert await gov.exhaust("tpm", 5.0) == pytest.approx(30.0)  # never shortened
    with pytest.raises(RateLimitedError):
        await gov.reserve(input_tokens=1, deadline=10.0)
    clock.now += 30
    assert (await gov.reserve(input_tokens=1, deadline=0)).wait == 0


# ----------------------------------------------------------------- Redis restart and faults


async def test_state_wiped_mid_window_leaves_no_negative_totals(
    redis_client: Redis, clock: Clock
) -> None:
    gov = _gov(redis_client, clock)
    old = [await gov.reserve(input_tokens=300) for _ in range(3)]
    await redis_client.flushall()  # a restart without persistence; the script cache too
    assert not await old[0].settle(0, 0)
    assert not await old[1].release()
    lease = await gov.reserve(input_tokens=900)
    assert lease.wait == 0 and not lease.local
    st = gov.keys[2]
    assert [int(x) for x in await redis_client.hmget(st, "r", "i")] == [1, 900]


@pytest.fixture
def proxied(redis_url: str) -> Any:
    with FaultProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0])) as proxy:
        yield proxy


@pytest.fixture
async def proxied_redis(proxied: FaultProxy, redis_url: str) -> Any:
    client = Redis.from_url(proxied.url_for(redis_url), socket_timeout=2, socket_connect_timeout=2)
    yield client
    await client.aclose()


@pytest.mark.parametrize("fault", ["blackhole", "reset", "refuse"])
async def test_dead_redis_fails_open_within_the_deadline(
    proxied: FaultProxy, proxied_redis: Redis, fault: str
) -> None:
    gov = _gov(proxied_redis, limits=QuotaLimit(rpm=8, tpm=1000), workers=4, op_timeout=0.3)
    assert not (await gov.reserve(input_tokens=10)).local
    getattr(proxied, fault)()
    if fault == "refuse":
        proxied.drop()  # the open connection goes too; reconnects are refused
    started = time.monotonic()
    lease = await gov.reserve(input_tokens=100, deadline=1.0)
    assert lease.local and gov.degraded
    assert time.monotonic() - started < 2.0
    # the local share is limit / workers: 2 requests, then refused under the deadline
    await gov.reserve(input_tokens=100, deadline=1.0)
    with pytest.raises(RateLimitedError):
        await gov.reserve(input_tokens=100, deadline=1.0)
    assert time.monotonic() - started < 2.0
    assert await lease.settle(50, 0)


async def test_request_above_the_local_share_runs_while_redis_is_down() -> None:
    """A request above ``limit / workers`` used to be refused as never admissible while Redis
    was down, though the shared limit admits it: the outage failed a call that could run. It
    now gets a window of the local share to itself (share + one request's maximum)."""
    clock = Clock()
    gov = _gov(None, clock, limits=QuotaLimit(tpm=1000), workers=4)  # local share 250
    lease = await gov.reserve(input_tokens=600, deadline=1.0)
    assert lease.local and lease.wait == 0
    with pytest.raises(RateLimitedError) as caught:  # the window is the big one's alone
        await gov.reserve(input_tokens=1, deadline=1.0)
    assert caught.value.retry_after == pytest.approx(60.0)
    clock.now += 60
    assert (await gov.reserve(input_tokens=600, deadline=0)).wait == 0
    with pytest.raises(RateLimitedError) as never:  # above the whole limit: still refused
        await gov.reserve(input_tokens=1001)
    assert never.value.retry_after is None


async def test_slow_redis_timeout_does_not_leave_a_shared_booking(
    proxied: FaultProxy, proxied_redis: Redis, redis_client: Redis
) -> None:
    """Redis slower than op_timeout: the script still runs there after the client gave up
    and booked locally; that shared booking must be released, not left to block others."""
    gov = _gov(proxied_redis, limits=QuotaLimit(tpm=1000), op_timeout=0.2, retry_interval=0.5)
    await (await gov.reserve(input_tokens=1)).release()  # script loaded, connection open
    proxied.set_latency(0.4)
    lease = await gov.reserve(input_tokens=900)
    assert lease.local
    proxied.restore()
    await asyncio.sleep(0.7)
    await gov.aclose()
    watcher = _gov(redis_client, limits=QuotaLimit(tpm=1000))
    assert await watcher.outstanding() == 0
    assert (await watcher.reserve(input_tokens=900, deadline=0)).wait == 0


async def test_lost_totals_do_not_admit_past_the_limit(redis_client: Redis, clock: Clock) -> None:
    """The totals hash evicted alone (maxmemory, volatile keys) used to make later age-outs
    subtract from 0: negative totals admitted past the limit. It is rebuilt from the amounts."""
    gov = _gov(redis_client, clock, limits=QuotaLimit(tpm=1000))
    await gov.reserve(input_tokens=800)
    clock.now += 30
    await gov.reserve(input_tokens=200)
    st = gov.keys[2]
    await redis_client.delete(st)  # evicted alone
    clock.now += 31  # the first ages out: totals 0 - 800
    assert (await gov.reserve(input_tokens=500, deadline=0)).wait == 0
    with pytest.raises(RateLimitedError):  # 200 + 500 + 500 > 1000
        await gov.reserve(input_tokens=500, deadline=0)
    entries = await _ledger(redis_client, gov)
    assert [int(x) for x in await redis_client.hmget(st, "r", "i")] == [
        sum(e[1] for e in entries),
        sum(e[2] for e in entries),
    ]
