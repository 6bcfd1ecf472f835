"""A log-linear bucketed latency histogram (HDR-style): bounded memory, O(1) record, mergeable.

Each power-of-two range ("octave") of values is split into :data:`SUB_BUCKETS` equal-width
buckets, so a bucket is never wider than ``1/SUB_BUCKETS`` of its lower bound. A quantile is
reported as the midpoint of the bucket holding the nearest-rank sample, clamped to the exact
min/max, so its relative error is at most ``1 / (2 * SUB_BUCKETS)`` = 0.78 % for values in
:data:`MIN_VALUE` .. :data:`MAX_VALUE` (about 0.5 ns to 24 days, in seconds). Values outside
that range are clamped into the edge buckets (count, sum, min and max stay exact).

Memory: a sparse ``dict`` of at most :data:`MAX_BUCKETS` entries, whatever the number of
samples. Recording is one ``frexp``, a little arithmetic and one dict update under a lock.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from math import frexp as _frexp

__all__ = [
    "MAX_BUCKETS",
    "MAX_VALUE",
    "MIN_VALUE",
    "RELATIVE_ERROR",
    "SUB_BUCKETS",
    "HistogramSnapshot",
    "LatencyHistogram",
]

_SUB_BITS = 6
SUB_BUCKETS = 1 << _SUB_BITS
"""Buckets per power of two."""
_TWO_SUB = 2 * SUB_BUCKETS
_MIN_EXP = -30  # frexp exponent: value in [2**(e-1), 2**e)
_MAX_EXP = 21
MIN_VALUE = math.ldexp(1.0, _MIN_EXP - 1)
"""Smallest value recorded without clamping (about 4.7e-10)."""
MAX_VALUE = math.ldexp(1.0, _MAX_EXP)
"""Values at or above this (about 2.1e6, 24 days in seconds) share the last bucket."""
MAX_BUCKETS = (_MAX_EXP - _MIN_EXP + 1) * SUB_BUCKETS
"""Upper bound on the number of buckets one histogram holds."""
_LAST = MAX_BUCKETS - 1
RELATIVE_ERROR = 1.0 / _TWO_SUB
"""Worst-case relative error of a reported quantile inside the accurate range."""


def bucket_bounds(key: int) -> tuple[float, float]:
    """``(lower, upper)`` bounds of bucket ``key``: values ``lower <= v < upper`` land in it."""
    exp = key // SUB_BUCKETS + _MIN_EXP
    sub = key % SUB_BUCKETS + SUB_BUCKETS
    return math.ldexp(sub, exp - 1 - _SUB_BITS), math.ldexp(sub + 1, exp - 1 - _SUB_BITS)


def _midpoint(key: int) -> float:
    exp = key // SUB_BUCKETS + _MIN_EXP
    sub = key % SUB_BUCKETS + SUB_BUCKETS
    return math.ldexp(2 * sub + 1, exp - 2 - _SUB_BITS)


def _bucket_key(value: float) -> int:
    mantissa, exp = math.frexp(value)
    if exp < _MIN_EXP:
        return 0
    if exp > _MAX_EXP:
        return _LAST
    return (exp - _MIN_EXP) * SUB_BUCKETS + int(mantissa * _TWO_SUB) - SUB_BUCKETS


class LatencyHistogram:
    """Thread-safe latency recorder (seconds): count, sum, min, max and quantiles.

    ``record`` is O(1); memory is bounded by :data:`MAX_BUCKETS` dict entries. Zero and negative
    values count as 0; NaN is ignored. Take a :meth:`snapshot` to read quantiles.
    """

    __slots__ = ("_count", "_counts", "_lock", "_max", "_min", "_sum", "_zeros")

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._zeros = 0
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf
        self._lock = threading.Lock()

    def record(self, value: float) -> None:
        """Add one sample. Never raises for a float; NaN is dropped."""
        if value > 0.0:
            mantissa, exp = _frexp(value)
            if exp < _MIN_EXP:
                key = 0
            elif exp > _MAX_EXP:
                key = _LAST
            else:
                key = (exp - _MIN_EXP) * SUB_BUCKETS + int(mantissa * _TWO_SUB) - SUB_BUCKETS
            lock = self._lock
            lock.acquire()  # explicit acquire/release: half the cost of ``with`` on 3.11
            try:
                try:
                    self._counts[key] += 1
                except KeyError:
                    self._counts[key] = 1
                self._count += 1
                self._sum += value
                if value > self._max:
                    self._max = value
                if value < self._min:
                    self._min = value
            finally:
                lock.release()
        elif value <= 0.0:
            with self._lock:
                self._zeros += 1
                self._count += 1
                if self._max < 0.0:
                    self._max = 0.0
                self._min = 0.0

    def merge(self, other: LatencyHistogram | HistogramSnapshot) -> None:
        """Add every sample of ``other`` to this histogram (exactly: buckets align)."""
        snap = other.snapshot() if isinstance(other, LatencyHistogram) else other
        if snap.count == 0:
            return
        with self._lock:
            counts = self._counts
            for key, n in snap.buckets.items():
                counts[key] = counts.get(key, 0) + n
            self._zeros += snap.zeros
            self._count += snap.count
            self._sum += snap.sum
            self._min = min(self._min, snap.min)
            self._max = max(self._max, snap.max)

    @property
    def count(self) -> int:
        """Number of samples recorded."""
        return self._count

    @property
    def bucket_count(self) -> int:
        """Number of non-empty buckets (memory in use, at most :data:`MAX_BUCKETS`)."""
        return len(self._counts) + (1 if self._zeros else 0)

    def snapshot(self) -> HistogramSnapshot:
        """An immutable copy, O(buckets). Quantiles are computed on the copy."""
        with self._lock:
            return HistogramSnapshot(
                count=self._count,
                sum=self._sum,
                min=self._min if self._count else 0.0,
                max=self._max if self._count else 0.0,
                zeros=self._zeros,
                buckets=dict(self._counts),
            )


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A point-in-time copy of a :class:`LatencyHistogram` (seconds).

    ``p50``/``p95``/``p99`` and :meth:`quantile` use the nearest-rank definition (the
    ``ceil(q * count)``-th smallest sample) with relative error at most :data:`RELATIVE_ERROR`.
    Empty snapshots report 0.0 everywhere. ``a + b`` merges two snapshots exactly.
    """

    count: int = 0
    sum: float = 0.0
    min: float = 0.0
    max: float = 0.0
    zeros: int = 0
    buckets: Mapping[int, int] = field(default_factory=dict, repr=False)

    @property
    def mean(self) -> float:
        """Arithmetic mean (exact), 0.0 when empty."""
        return self.sum / self.count if self.count else 0.0

    @property
    def p50(self) -> float:
        """Median."""
        return self.quantile(0.5)

    @property
    def p95(self) -> float:
        """95th percentile."""
        return self.quantile(0.95)

    @property
    def p99(self) -> float:
        """99th percentile."""
        return self.quantile(0.99)

    def quantile(self, q: float) -> float:
        """Value at quantile ``q`` in ``[0, 1]`` (0 → min, 1 → max).

        Raises:
            ValueError: ``q`` is outside ``[0, 1]``.
        """
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Iterable[float]) -> list[float]:
        """Several quantiles in one pass over the sorted buckets, in the order asked."""
        wanted = list(qs)
        for q in wanted:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantile must be within [0, 1], got {q!r}")
        if self.count == 0:
            return [0.0] * len(wanted)
        ranks = sorted((max(1, math.ceil(q * self.count)), i) for i, q in enumerate(wanted))
        out = [0.0] * len(wanted)
        pos = 0
        seen = self.zeros
        while pos < len(ranks) and ranks[pos][0] <= seen:
            out[ranks[pos][1]] = 0.0
            pos += 1
        for key in sorted(self.buckets):
            if pos == len(ranks):
                break
            seen += self.buckets[key]
            if ranks[pos][0] <= seen:
                value = min(max(_midpoint(key), self.min), self.max)
                while pos < len(ranks) and ranks[pos][0] <= seen:
                    out[ranks[pos][1]] = value
                    pos += 1
        for rank, i in ranks:  # the smallest and largest samples are known exactly
            if rank == 1:
                out[i] = self.min
            elif rank == self.count:
                out[i] = self.max
        return out

    def cumulative(self, bounds: Iterable[float]) -> list[int]:
        """Samples ``<= bound`` for each bound (Prometheus ``le`` buckets), in the order given.

        Exact when a bound is below the minimum or at/above the maximum; otherwise a bucket
        counts when its lower bound is ``<= bound``, so only samples within 1.6 % above a
        bound can be miscounted (a sample exactly on a bound is always counted).
        """
        wanted = list(bounds)
        edges = sorted(set(wanted))
        found: dict[float, int] = {}
        items = sorted(self.buckets.items())
        idx = 0
        running = self.zeros
        for edge in edges:
            while idx < len(items) and bucket_bounds(items[idx][0])[0] <= edge:
                running += items[idx][1]
                idx += 1
            if edge >= self.max:
                found[edge] = self.count
            elif edge < self.min or edge < 0.0:
                found[edge] = 0
            else:
                found[edge] = running
        return [found[edge] for edge in wanted]

    def __add__(self, other: HistogramSnapshot) -> HistogramSnapshot:
        if not isinstance(other, HistogramSnapshot):
            return NotImplemented
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        merged = dict(self.buckets)
        for key, n in other.buckets.items():
            merged[key] = merged.get(key, 0) + n
        return HistogramSnapshot(
            count=self.count + other.count,
            sum=self.sum + other.sum,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
            zeros=self.zeros + other.zeros,
            buckets=merged,
        )
