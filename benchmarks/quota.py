"""Quota governor benchmark: 4 worker processes x 64 callers share one tokens-per-window quota.

Run: ``uv run python -m benchmarks.quota`` (``--quick``: 4 windows instead of 8).

Starts its own Redis (``sight_core.testing.servers.start_redis``). Each worker process runs 64
callers in a loop: reserve a random 100-1,000 input tokens (``deadline`` 30 s), wait for the
booked start, "call the model" (a 50-200 ms sleep) and settle with the usage (equal to the
estimate, as in the fake-Gemini test). Demand is far above the limit. Windows are scaled down
to 4 s (margin 0.1 s for wake-up jitter); the limit is 20,000 input tokens and 120 requests per
window, so one request's maximum is 1,000 tokens.

Measured from the time each caller actually started (its clock after the local sleep):

- the most tokens started in any 4 s window (sliding, ending at each start) vs the limit plus
  one request's maximum;
- utilisation: tokens started per window over the steady span (first and last window left
  out) / the limit;
- Jain's fairness index of the tokens each process got;
- reservations outstanding after every worker stopped (``QuotaGovernor.outstanding``);
- Redis round trips: the most commands one reserve (with its wait) and one settle sent, and
  one admission in all (client-side count per caller); the share of the commands the workers
  sent that the server counted as ``EVALSHA`` (``commandstats``).
- the booked start (``QuotaLease.starts_at``, the Redis server's clock) and the time the caller
  woke: the governor's guarantee is on the first; the second adds this machine's event-loop
  lag, which ``margin`` absorbs up to 0.2 s.

At the end every caller is cancelled (most are waiting for a booked start, some are inside
their call); their reservations are released.

The reference is the same load with each process enforcing the whole limit in its own memory
(``QuotaGovernor(None, ...)``: what a router that counts locally, such as LiteLLM's, does).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

PROCESSES = 4
CALLERS = 64
WINDOW = 6.0
MARGIN = 0.2
TOKENS = 20_000
REQUESTS = 120
MAX_REQUEST = 1_000


async def _worker(url: str, mode: str, seed: int) -> None:
    from redis.asyncio import Redis

    from sight_core.errors import RateLimitedError

    redis = Redis.from_url(url) if mode == "shared" else None
    commands = [0]
    # each caller's own count: tasks the governor starts copy the context, so share the list
    mine: contextvars.ContextVar[list[int]] = contextvars.ContextVar("mine")
    mine.set([0])
    if redis is not None:
        original = redis.execute_command

        async def counted(*args: Any, **options: Any) -> Any:
            commands[0] += 1
            mine.get()[0] += 1
            return await original(*args, **options)

        redis.execute_command = counted  # type: ignore[method-assign]
    governor = _ledger(redis, mode)
    rng = random.Random(seed)
    starts: list[tuple[float, int]] = []
    refused = 0
    reserves = settles = local = 0
    most_per_admission = most_per_reserve = most_per_settle = 0
    await governor.outstanding()  # loads the script (NOSCRIPT costs two more trips, once)
    commands[0] = 0
    print("ready", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    start_at, end_at = (float(x) for x in line.split())
    await asyncio.sleep(max(0.0, start_at - time.time()))

    async def caller() -> None:
        nonlocal refused, reserves, settles, local, most_per_admission
        nonlocal most_per_reserve, most_per_settle
        while True:
            tokens = rng.randint(100, MAX_REQUEST)
            own = [0]
            mine.set(own)
            try:
                lease = await governor.reserve(input_tokens=tokens, deadline=120.0)
            except RateLimitedError:
                refused += 1
                await asyncio.sleep(0.05)
                continue
            most_per_reserve = max(most_per_reserve, own[0])
            reserves += 1
            local += lease.local
            starts.append((time.time(), lease.starts_at, tokens))
            async with lease:  # cancelled during the call: released
                await asyncio.sleep(rng.uniform(0.05, 0.2))
                before = own[0]
                await lease.settle(tokens, rng.randint(10, 200))
                most_per_settle = max(most_per_settle, own[0] - before)
            settles += 1
            most_per_admission = max(most_per_admission, own[0])

    callers = [asyncio.create_task(caller()) for _ in range(CALLERS)]
    await asyncio.sleep(max(0.0, end_at - time.time()))
    for task in callers:  # most are waiting for a booked start: cancelled, they release it
        task.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    await governor.aclose()
    outstanding = await governor.outstanding()
    if redis is not None:
        await redis.aclose()
    print(
        json.dumps(
            {
                "starts": starts,
                "refused": refused,
                "reserves": reserves,
                "settles": settles,
                "commands": commands[0],
                "most_per_admission": most_per_admission,
                "most_per_reserve": most_per_reserve,
                "most_per_settle": most_per_settle,
                "outstanding": outstanding,
                "local": local,
            }
        ),
        flush=True,
    )


def _ledger(redis: Any, mode: str) -> Any:
    from sight_core.llm import QuotaGovernor
    from sight_core.settings import QuotaLimit

    return QuotaGovernor(
        redis,
        model="bench-model",
        project=f"bench-{mode}",
        limits=QuotaLimit(tpm=TOKENS, rpm=REQUESTS),
        window=WINDOW,
        margin=MARGIN,
        lease_ttl=60.0,
        workers=PROCESSES if mode == "shared" else 1,
    )


def _spawn(url: str, mode: str, seed: int) -> Any:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.quota", "--worker", url, mode, str(seed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _max_in_window(starts: list[tuple[float, int]]) -> tuple[int, int]:
    """Most tokens and requests whose start falls in one window ``(t - WINDOW, t]``."""
    ordered = sorted(starts)
    best_tokens = best_requests = 0
    left = 0
    tokens = 0
    for right, (t, n) in enumerate(ordered):
        tokens += n
        while ordered[left][0] <= t - WINDOW:
            tokens -= ordered[left][1]
            left += 1
        best_tokens = max(best_tokens, tokens)
        best_requests = max(best_requests, right - left + 1)
    return best_tokens, best_requests


async def _load(url: str, mode: str, windows: int) -> dict[str, Any]:
    from redis.asyncio import Redis

    admin = Redis.from_url(url)
    await admin.flushall()
    procs = [_spawn(url, mode, seed) for seed in range(PROCESSES)]
    try:
        for p in procs:
            line = await asyncio.to_thread(p.stdout.readline)
            assert line == "ready\n", line
        await admin.config_resetstat()
        start_at = time.time() + 0.5  # every worker told by then
        end_at = start_at + windows * WINDOW
        for p in procs:
            p.stdin.write(f"{start_at!r} {end_at!r}\n")
            p.stdin.flush()
        reports = []
        for p in procs:
            out, _ = await asyncio.to_thread(p.communicate, timeout=windows * WINDOW + 60)
            reports.append(json.loads(out.strip().splitlines()[-1]))
        stats = await admin.info("commandstats")
        # once every worker has exited: what the shared ledger still holds
        outstanding = await _ledger(admin if mode == "shared" else None, mode).outstanding()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        await admin.aclose()
    starts = [(t, n) for r in reports for t, _, n in r["starts"]]
    worst_tokens, worst_requests = _max_in_window(starts)
    booked_tokens, booked_requests = _max_in_window(
        [(b, n) for r in reports for _, b, n in r["starts"]]
    )
    steady = [n for t, n in starts if start_at + WINDOW <= t < end_at - WINDOW]
    steady_windows = (end_at - start_at - 2 * WINDOW) / WINDOW
    per_process = [sum(n for _, _, n in r["starts"]) for r in reports]
    jain = sum(per_process) ** 2 / (len(per_process) * sum(x * x for x in per_process))
    evalsha = int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    sent = sum(r["commands"] for r in reports)
    return {
        "worst_tokens": worst_tokens,
        "worst_requests": worst_requests,
        "booked_tokens": booked_tokens,
        "booked_requests": booked_requests,
        "utilisation": sum(steady) / (TOKENS * steady_windows),
        "jain": jain,
        "outstanding": outstanding if mode == "shared" else sum(r["outstanding"] for r in reports),
        "admitted": len(starts),
        "refused": sum(r["refused"] for r in reports),
        "evalsha_share": evalsha / max(1, sent),
        "most_per_reserve": max(r["most_per_reserve"] for r in reports),
        "most_per_settle": max(r["most_per_settle"] for r in reports),
        "most_per_admission": max(r["most_per_admission"] for r in reports),
        "local": sum(r["local"] for r in reports),
    }


async def _run(quick: bool) -> list[dict[str, Any]]:
    from sight_core.testing.servers import start_redis

    windows = 4 if quick else 8
    server = start_redis(with_bolt=False)
    try:
        ours = await _load(server.url, "shared", windows)
        local = await _load(server.url, "local", windows)
    finally:
        server.stop()
    bound = TOKENS + MAX_REQUEST
    ref = "per-process memory (LiteLLM-style)"
    return [
        {
            "case": f"max input tokens booked in any {WINDOW:g} s window",
            "ours": ours["booked_tokens"],
            "reference": f"{ref}: {local['booked_tokens']}",
            "ratio": f"{local['booked_tokens'] / max(1, ours['booked_tokens']):.1f}x",
            "target": f"<= limit + one request = {bound}",
            "verdict": "PASS" if ours["booked_tokens"] <= bound else "FAIL",
        },
        {
            "case": f"max input tokens started (woken) in any {WINDOW:g} s window",
            "ours": ours["worst_tokens"],
            "reference": f"{ref}: {local['worst_tokens']}",
            "ratio": f"{local['worst_tokens'] / max(1, ours['worst_tokens']):.1f}x",
            "target": f"<= {bound} (includes event-loop lag)",
            "verdict": "PASS" if ours["worst_tokens"] <= bound else "FAIL",
        },
        {
            "case": f"max requests booked in any {WINDOW:g} s window",
            "ours": ours["booked_requests"],
            "reference": f"{ref}: {local['booked_requests']}",
            "ratio": "",
            "target": f"<= {REQUESTS + 1}",
            "verdict": "PASS" if ours["booked_requests"] <= REQUESTS + 1 else "FAIL",
        },
        {
            "case": "utilisation of the token limit (steady windows)",
            "ours": f"{ours['utilisation']:.1%}",
            "reference": f"{ref}: {local['utilisation']:.1%}",
            "ratio": "",
            "target": ">= 95 %",
            "verdict": "PASS" if ours["utilisation"] >= 0.95 else "FAIL",
        },
        {
            "case": "Jain fairness index across the 4 processes",
            "ours": f"{ours['jain']:.3f}",
            "reference": f"{ref}: {local['jain']:.3f}",
            "ratio": "",
            "target": ">= 0.9",
            "verdict": "PASS" if ours["jain"] >= 0.9 else "FAIL",
        },
        {
            "case": "reservations outstanding after the run (callers cancelled at the end)",
            "ours": ours["outstanding"],
            "reference": "",
            "ratio": "",
            "target": "0",
            "verdict": "PASS" if ours["outstanding"] == 0 else "FAIL",
        },
        {
            "case": "most Redis commands of one reserve (incl. its wait)",
            "ours": ours["most_per_reserve"],
            "reference": "",
            "ratio": "",
            "target": "<= 1",
            "verdict": "PASS" if ours["most_per_reserve"] <= 1 else "FAIL",
        },
        {
            "case": "most Redis commands of one settle",
            "ours": ours["most_per_settle"],
            "reference": "",
            "ratio": "",
            "target": "<= 1",
            "verdict": "PASS" if ours["most_per_settle"] <= 1 else "FAIL",
        },
        {
            "case": "share of the workers' commands that are one EVALSHA (server count)",
            "ours": f"{ours['evalsha_share']:.3f}",
            "reference": "",
            "ratio": "",
            "target": "1.000 (nothing else is sent)",
            "verdict": "PASS" if abs(ours["evalsha_share"] - 1.0) < 1e-9 else "FAIL",
        },
        {
            "case": "most Redis commands of one admission (reserve + wait + settle)",
            "ours": ours["most_per_admission"],
            "reference": "",
            "ratio": "",
            "target": "<= 2",
            "verdict": "PASS" if ours["most_per_admission"] <= 2 else "FAIL",
        },
        {
            "case": "admissions from the local share (Redis slow or down)",
            "ours": ours["local"],
            "reference": "",
            "ratio": "",
            "target": "0 (Redis is up)",
            "verdict": "PASS" if ours["local"] == 0 else "FAIL",
        },
        {
            "case": "admitted / refused calls",
            "ours": f"{ours['admitted']} / {ours['refused']}",
            "reference": f"{ref}: {local['admitted']} / {local['refused']}",
            "ratio": "",
            "target": "",
            "verdict": "",
        },
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows: case, ours, reference, ratio, target, verdict."""
    return asyncio.run(_run(quick))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        url, mode, seed = sys.argv[2:5]
        asyncio.run(_worker(url, mode, int(seed)))
    else:
        from sight_core._bench import format_table

        print(format_table(run(quick="--quick" in sys.argv), extra=False))
