"""Concurrency benchmarks: gather_limited against the ways people fan out without it.

Run: ``uv run --group bench python -m benchmarks.concurrency`` (``--quick`` for smaller sizes).

1. Throughput: N trivial coroutines at limit 100 through ``gather_limited``, a hand-written
   100-worker pool, ``asyncio.gather`` + ``Semaphore`` and ``aiometer.run_all``, interleaved in
   one process, several rounds (the order rotates each round). Ratios are computed per round
   (paired, so machine drift cancels out) and reported as median with min-max.
2. Memory: peak RSS of a fresh interpreter running ``gather_limited`` over a generator of
   10,000 and of 1,000,000 items (each in its own subprocess, alternated), same for
   ``asyncio.gather`` + ``Semaphore`` as a contrast.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiometer

from sight_core._bench import format_table
from sight_core.concurrency import gather_limited

LIMIT = 100


async def trivial(i: int) -> int:
    return i


async def one_yield(i: int) -> int:
    await asyncio.sleep(0)
    return i


# the contenders -------------------------------------------------------------------------------


async def ours(fn: Callable[[int], Awaitable[int]], n: int) -> list[int]:
    return await gather_limited((fn(i) for i in range(n)), limit=LIMIT)


async def hand_pool(fn: Callable[[int], Awaitable[int]], n: int) -> list[int]:
    """What a careful engineer writes by hand: 100 workers sharing one iterator."""
    items = enumerate(fn(i) for i in range(n))
    results: dict[int, int] = {}

    async def worker() -> None:
        for index, coro in items:
            results[index] = await coro

    await asyncio.gather(*(worker() for _ in range(LIMIT)))
    return [results[i] for i in range(len(results))]


async def gather_semaphore(fn: Callable[[int], Awaitable[int]], n: int) -> list[int]:
    """The common idiom: one task per item, each waiting on a semaphore."""
    semaphore = asyncio.Semaphore(LIMIT)

    async def guarded(i: int) -> int:
        async with semaphore:
            return await fn(i)

    return list(await asyncio.gather(*(guarded(i) for i in range(n))))


async def aiometer_run_all(fn: Callable[[int], Awaitable[int]], n: int) -> list[int]:
    return list(
        await aiometer.run_all([functools.partial(fn, i) for i in range(n)], max_at_once=LIMIT)
    )


CONTENDERS: dict[str, Callable[[Callable[[int], Awaitable[int]], int], Awaitable[list[int]]]] = {
    "gather_limited": ours,
    "hand-written 100-worker pool": hand_pool,
    "asyncio.gather + Semaphore": gather_semaphore,
    "aiometer.run_all": aiometer_run_all,
}

# (reference, target ratio ours/reference, target text)
THROUGHPUT_TARGETS = {
    "hand-written 100-worker pool": (1.20, "≤ 1.20x (at most 20 % slower)"),
    "asyncio.gather + Semaphore": (0.10, "≤ 0.10x (≥ 10x faster)"),
    "aiometer.run_all": (0.04, "≤ 0.04x (≥ 25x faster)"),
}


async def _time_rounds(
    fn: Callable[[int], Awaitable[int]], n: int, rounds: int
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    names = list(CONTENDERS)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate: A B C D, B C D A
        for name in order:
            gc.collect()
            start = time.perf_counter()
            result = await CONTENDERS[name](fn, n)
            times[name].append(time.perf_counter() - start)
            if len(result) != n or result[-1] != n - 1:
                raise AssertionError(f"{name} returned wrong results")
    return times


def _fmt_time(values: list[float]) -> str:
    return (
        f"{statistics.median(values) * 1e3:.1f} ms "
        f"({min(values) * 1e3:.1f}-{max(values) * 1e3:.1f})"
    )


def _throughput_rows(
    kind: str,
    fn: Callable[[int], Awaitable[int]],
    n: int,
    rounds: int,
    targets: dict[str, tuple[float, str]],
) -> list[dict[str, Any]]:
    times = asyncio.run(_time_rounds(fn, n, rounds))
    rows = []
    for ref, (limit, target) in targets.items():
        ratios = [a / b for a, b in zip(times["gather_limited"], times[ref], strict=True)]
        median = statistics.median(ratios)
        rows.append(
            {
                "case": f"{n:,} {kind} coroutines, limit {LIMIT}: vs {ref}",
                "ours": _fmt_time(times["gather_limited"]),
                "reference": _fmt_time(times[ref]),
                "ratio": f"{median:.3f}x ({min(ratios):.3f}-{max(ratios):.3f})",
                "target": target,
                "verdict": "PASS" if median <= limit else "FAIL",
                "ratio_median": median,
            }
        )
    return rows


# memory -----------------------------------------------------------------------------------------


def _child(impl: str, n: int) -> None:
    """Run one fan-out of ``n`` trivial items and print the peak RSS in KiB."""

    async def main() -> None:
        result = await CONTENDERS[impl](lambda i: trivial(0), n)
        assert len(result) == n

    asyncio.run(main())
    print(_own_peak_rss_kib())


def _own_peak_rss_kib() -> int:
    """Peak RSS of this process image in KiB.

    ``VmHWM`` belongs to the current address space; ``ru_maxrss`` is not used on Linux
    because it survives ``fork``/``exec`` and would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_rss_mib(impl: str, n: int) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.concurrency", "--child", impl, str(n)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.split()[-1]) / 1024


def _rss_rows(small: int, large: int, rounds: int) -> list[dict[str, Any]]:
    rows = []
    for impl, target_mib, target in (
        ("gather_limited", 15.0, "≤ +15 MiB"),
        ("asyncio.gather + Semaphore", None, "(contrast, no target)"),
    ):
        if impl != "gather_limited" and rounds < 1:
            continue
        samples = []
        for _ in range(rounds if impl == "gather_limited" else 1):
            big = _peak_rss_mib(impl, large)  # alternate large and small runs
            base = _peak_rss_mib(impl, small)
            samples.append((base, big))
        deltas = [big - base for base, big in samples]
        delta = statistics.median(deltas)
        rows.append(
            {
                "case": f"peak RSS, {impl}: {large:,} vs {small:,} items, limit {LIMIT}",
                "ours": f"{statistics.median(b for _, b in samples):.1f} MiB ({large:,})",
                "reference": f"{statistics.median(b for b, _ in samples):.1f} MiB ({small:,})",
                "ratio": f"+{delta:.1f} MiB ({min(deltas):+.1f}..{max(deltas):+.1f})",
                "target": target,
                "verdict": "-"
                if target_mib is None
                else ("PASS" if delta <= target_mib else "FAIL"),
                "delta_mib": delta,
            }
        )
    return rows


# entry points -------------------------------------------------------------------------------------


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Run every case; return one dict per table row (case, ours, reference, ratio, target,
    verdict). ``quick`` uses 10,000 items, 3 rounds and 10,000 vs 100,000 for memory."""
    n = 10_000 if quick else 100_000
    rounds = 3 if quick else 7
    rows = _throughput_rows("trivial", trivial, n, rounds, THROUGHPUT_TARGETS)
    pool_only = {"hand-written 100-worker pool": THROUGHPUT_TARGETS["hand-written 100-worker pool"]}
    rows += _throughput_rows("one-yield", one_yield, n, rounds, pool_only)
    rows += _rss_rows(10_000, 100_000 if quick else 1_000_000, 1 if quick else 3)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return
    print(f"python {sys.version.split()[0]}, aiometer {aiometer.__version__}")
    print(format_table(run(quick=args.quick), extra=False))


if __name__ == "__main__":
    main()
