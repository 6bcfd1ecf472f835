import math
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sight_core.observability import HistogramSnapshot, LatencyHistogram
from sight_core.observability._histogram import (
    MAX_BUCKETS,
    MAX_VALUE,
    MIN_VALUE,
    RELATIVE_ERROR,
    _bucket_key,
    bucket_bounds,
)

QS = (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)
latencies = st.floats(min_value=1e-9, max_value=1e6, allow_nan=False, allow_infinity=False)


def exact(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the ceil(q*n)-th smallest value (q=0 → min)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def build(values: list[float]) -> LatencyHistogram:
    hist = LatencyHistogram()
    for v in values:
        hist.record(v)
    return hist


@settings(max_examples=300, deadline=None)
@given(st.lists(latencies, min_size=1, max_size=400))
def test_quantiles_within_relative_error_of_exact_percentiles(values: list[float]) -> None:
    snap = build(values).snapshot()
    for q, got in zip(QS, snap.quantiles(QS), strict=True):
        want = exact(values, q)
        assert abs(got - want) <= want * RELATIVE_ERROR * (1 + 1e-9), (q, got, want)
    assert RELATIVE_ERROR <= 0.01
    assert snap.count == len(values)
    assert snap.min == min(values)
    assert snap.max == max(values)
    assert snap.sum == pytest.approx(math.fsum(values), rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.lists(latencies, max_size=200), st.lists(latencies, max_size=200))
def test_merge_equals_recording_everything_in_one(a: list[float], b: list[float]) -> None:
    together = build(a + b).snapshot()
    added = build(a).snapshot() + build(b).snapshot()
    merged = build(a)
    merged.merge(build(b))
    for snap in (added, merged.snapshot()):
        assert snap.count == together.count
        assert dict(snap.buckets) == dict(together.buckets)
        assert snap.quantiles(QS) == together.quantiles(QS)
        assert (snap.min, snap.max) == (together.min, together.max)


@given(latencies)
def test_value_lands_in_a_bucket_whose_bounds_contain_it(value: float) -> None:
    lower, upper = bucket_bounds(_bucket_key(value))
    assert lower <= value < upper
    assert (upper - lower) / lower <= 2 * RELATIVE_ERROR


def test_memory_is_bounded_whatever_the_number_of_samples() -> None:
    rng = random.Random(7)
    hist = LatencyHistogram()
    for _ in range(100_000):
        hist.record(10 ** rng.uniform(-12, 8))  # wider than the accurate range on both sides
    used = hist.bucket_count
    assert used <= MAX_BUCKETS
    for _ in range(100_000):
        hist.record(10 ** rng.uniform(-12, 8))
    assert hist.bucket_count <= MAX_BUCKETS
    assert hist.bucket_count - used < 20  # no growth with samples once the range is covered
    assert hist.count == 200_000


def test_out_of_range_values_keep_exact_min_max_count_and_sum() -> None:
    snap = build([MIN_VALUE / 10, MAX_VALUE * 10]).snapshot()
    assert snap.count == 2
    assert snap.quantile(0.0) == MIN_VALUE / 10
    assert snap.quantile(1.0) == MAX_VALUE * 10
    assert snap.sum == MIN_VALUE / 10 + MAX_VALUE * 10


def test_zero_negative_and_nan() -> None:
    hist = build([0.0, -1.0, float("nan"), 2.0])
    snap = hist.snapshot()
    assert snap.count == 3  # NaN dropped, negatives count as zero
    assert snap.zeros == 2
    assert snap.min == 0.0
    assert snap.p50 == 0.0
    assert snap.quantile(1.0) == 2.0


def test_empty_snapshot_reports_zero() -> None:
    snap = LatencyHistogram().snapshot()
    assert (snap.count, snap.p50, snap.p95, snap.p99, snap.mean, snap.max) == (0, 0, 0, 0, 0, 0)
    assert HistogramSnapshot() + snap == snap


def test_quantile_outside_unit_interval_is_rejected() -> None:
    with pytest.raises(ValueError, match="quantile"):
        build([1.0]).snapshot().quantile(1.5)


def test_cumulative_buckets_for_prometheus_le() -> None:
    snap = build([0.001, 0.01, 0.01, 0.1, 1.0, 10.0]).snapshot()
    assert snap.cumulative([0.005, 0.05, 0.5, 5.0]) == [1, 3, 4, 5]


def test_concurrent_records_from_threads_are_not_lost() -> None:
    hist = LatencyHistogram()

    def work() -> None:
        for i in range(20_000):
            hist.record(0.001 * (1 + i % 7))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = hist.snapshot()
    assert snap.count == 80_000
    assert sum(snap.buckets.values()) == 80_000
