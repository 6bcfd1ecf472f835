"""Observability benchmark: what a metric call costs on the hot path, in ns per call.

Run: ``uv run python -m benchmarks.observability`` (``--quick`` for fewer calls and rounds).

Each case times N calls of ours and of a reference with ``timeit`` (statement inlined in the
loop), interleaved in one process (A B, then B A, ...) over several rounds; the cost of the
empty loop, measured in the same round, is subtracted. References:

- a bare ``dict`` increment (``counts[key] = counts.get(key, 0) + 1``): the floor of any
  in-process counter;
- ``prometheus_client`` ``Counter.labels(...).inc()``, ``Histogram.labels(...).observe()``,
  ``Histogram.observe()`` on a pre-bound child and ``@Histogram.time()``: what a service would
  use instead.

Targets (BENCHMARKS.md sets none for this area): no slower than ``prometheus_client`` for the
same call. The ratio to a bare dict increment is reported as information: it is the price of
the keyword arguments, the label-set key, the lock (thread safety) and the bucket arithmetic.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import timeit
from importlib.metadata import version
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from sight_core._bench import format_table
from sight_core.observability import MetricsRegistry, timed

# case: (description, ours stmt, reference name, reference stmt, max ratio, target text)
CASES: list[tuple[str, str, str, str, float, str]] = [
    (
        "increment, 1 label",
        'increment("sight_bench_total", 1, namespace="persona")',
        "bare dict increment",
        "counts[key] = counts.get(key, 0) + 1",
        0.0,
        "info: the floor",
    ),
    (
        "increment, 1 label",
        'increment("sight_bench_total", 1, namespace="persona")',
        "prometheus Counter.labels().inc()",
        'prom_counter.labels(namespace="persona").inc()',
        1.0,
        "<= 1.0x",
    ),
    (
        "observe, 1 label",
        'observe("sight_bench_seconds", 0.042, model="flash")',
        "bare dict increment",
        "counts[key] = counts.get(key, 0) + 1",
        0.0,
        "info: the floor",
    ),
    (
        "observe, 1 label",
        'observe("sight_bench_seconds", 0.042, model="flash")',
        "prometheus Histogram.labels().observe()",
        'prom_hist.labels(model="flash").observe(0.042)',
        1.0,
        "<= 1.0x",
    ),
    (
        "observe, 2 labels",
        'observe("sight_bench2_seconds", 0.042, route="/p", method="GET")',
        "prometheus Histogram.labels().observe()",
        'prom_hist2.labels(route="/p", method="GET").observe(0.042)',
        1.0,
        "<= 1.0x",
    ),
    (
        "observe, no labels",
        'observe("sight_bench0_seconds", 0.042)',
        "prometheus Histogram.observe() (bound)",
        "prom_hist0.observe(0.042)",
        1.0,
        "<= 1.0x",
    ),
    (
        "bound histogram, record()",
        "bound_hist.record(0.042)",
        "prometheus Histogram.observe() (bound)",
        "prom_hist0.observe(0.042)",
        1.0,
        "<= 1.0x",
    ),
    (
        "@timed call of a no-op",
        "timed_noop()",
        "prometheus @Histogram.time() call",
        "prom_timed_noop()",
        1.0,
        "<= 1.0x",
    ),
]


def _namespace() -> dict[str, Any]:
    registry = MetricsRegistry()
    prom = CollectorRegistry()
    prom_counter = Counter("bench_hits", "h", ["namespace"], registry=prom)
    prom_hist = Histogram("bench_seconds", "h", ["model"], registry=prom)
    prom_hist2 = Histogram("bench2_seconds", "h", ["route", "method"], registry=prom)
    prom_hist0 = Histogram("bench0_seconds", "h", registry=prom)

    timer = timed("bench.noop")
    timer._registry = registry  # keep the process-wide registry clean

    @timer
    def timed_noop() -> None:
        return None

    @Histogram("bench_timed_seconds", "h", registry=prom).time()
    def prom_timed_noop() -> None:
        return None

    return {
        "increment": registry.increment,
        "observe": registry.observe,
        "counts": {},
        "key": ("sight_bench_total", "persona"),
        "prom_counter": prom_counter,
        "prom_hist": prom_hist,
        "prom_hist2": prom_hist2,
        "prom_hist0": prom_hist0,
        "timed_noop": timed_noop,
        "prom_timed_noop": prom_timed_noop,
        "bound_hist": registry.histogram("sight_bench_bound_seconds"),
    }


def _ns_per_call(stmt: str, ns: dict[str, Any], n: int, empty: float) -> float:
    gc.disable()
    try:
        total = timeit.Timer(stmt, globals=ns).timeit(number=n)
    finally:
        gc.enable()
    return max(total - empty, 0.0) / n * 1e9


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ns ({min(values):.0f}-{max(values):.0f})"


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Run every case; return one dict per table row (case, ours, reference, ratio, target,
    verdict). ``quick`` uses 20,000 calls and 3 rounds instead of 200,000 and 7."""
    n = 20_000 if quick else 200_000
    rounds = 3 if quick else 7
    ns = _namespace()
    results: dict[int, tuple[list[float], list[float]]] = {i: ([], []) for i in range(len(CASES))}
    for stmt in {c[1] for c in CASES} | {c[3] for c in CASES}:  # warm up: create every series
        timeit.Timer(stmt, globals=ns).timeit(number=1000)
    for r in range(rounds):
        for i, (_, ours, _, ref, _, _) in enumerate(CASES):
            empty = timeit.Timer("pass", globals=ns).timeit(number=n)
            pair: list[tuple[str, list[float]]] = [(ours, results[i][0]), (ref, results[i][1])]
            if r % 2:
                pair.reverse()
            for stmt, sink in pair:
                sink.append(_ns_per_call(stmt, ns, n, empty))
    rows = []
    for i, (case, _, ref_name, _, limit, target) in enumerate(CASES):
        ours_ns, ref_ns = results[i]
        ratios = [a / b for a, b in zip(ours_ns, ref_ns, strict=True) if b > 0]
        median = statistics.median(ratios)
        rows.append(
            {
                "case": f"{case}: vs {ref_name}",
                "ours": _fmt(ours_ns),
                "reference": _fmt(ref_ns),
                "ratio": f"{median:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})",
                "target": target,
                "verdict": "-" if limit == 0.0 else "PASS" if median <= limit else "FAIL",
                "ratio_median": median,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, fewer rounds")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, prometheus-client {version('prometheus-client')}")
    print(format_table(run(quick=args.quick), extra=False))


if __name__ == "__main__":
    main()
