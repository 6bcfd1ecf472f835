"""The process-wide metrics registry: counters, gauges, latency histograms and pull collectors.

Every series is keyed by ``(name, labels)`` where the label key is a tuple of ``(name, value)``
pairs (sorted when there are two or more), so a call on an existing series costs about one
dict lookup plus the update under a lock. Validation (names, label names, kind clashes, the
series limit) happens only when a new series is created.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias, TypeVar

from sight_core.errors import ConfigurationError

from ._histogram import HistogramSnapshot, LatencyHistogram

__all__ = [
    "Collector",
    "LabelKey",
    "LabelValue",
    "MetricKind",
    "MetricsRegistry",
    "MetricsSnapshot",
    "Sample",
    "describe",
    "get_registry",
    "increment",
    "observe",
    "register_collector",
    "reset",
    "set_gauge",
    "snapshot",
    "unregister_collector",
]

_log = logging.getLogger("sight_core.observability")

LabelValue: TypeAlias = str | int
"""A label value; ints are rendered with ``str()`` at export."""
LabelKey: TypeAlias = tuple[tuple[str, str], ...]
"""Labels of an exported series: sorted ``(name, value)`` pairs, values as strings."""
MetricKind: TypeAlias = Literal["counter", "gauge", "histogram"]

_RawKey: TypeAlias = tuple[tuple[str, LabelValue], ...]
_V = TypeVar("_V")
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_RESERVED_LABELS = frozenset({"quantile", "le"})
_OVERFLOW: _RawKey = (("overflow", "true"),)


@dataclass(frozen=True, slots=True)
class Sample:
    """One value pulled from a collector at export time.

    ``kind`` is ``"counter"`` (monotonic total) or ``"gauge"`` (current value).
    """

    name: str
    labels: dict[str, str]
    value: float
    kind: Literal["counter", "gauge"]


Collector: TypeAlias = Callable[[], Iterable[Sample]]
"""A function returning samples; called on every :func:`snapshot` / export."""


def _key(labels: Mapping[str, LabelValue]) -> _RawKey:
    if len(labels) < 2:
        return tuple(labels.items())
    return tuple(sorted(labels.items()))


def check_labels(name: str, key: _RawKey) -> None:
    """ConfigurationError naming the label if a label name or value of ``key`` is invalid."""
    for label, value in key:
        if not _LABEL.match(label) or label.startswith("__") or label in _RESERVED_LABELS:
            raise ConfigurationError(
                f"invalid label name {label!r} on metric {name!r}: use letters, digits and "
                "'_', not a leading '__', not 'quantile' or 'le'"
            )
        if not isinstance(value, str | int):
            raise ConfigurationError(
                f"label {label!r} of metric {name!r} must be a str or int, "
                f"got {type(value).__name__}"
            )


def _str_key(key: _RawKey) -> LabelKey:
    return tuple(sorted((k, str(v)) for k, v in key))


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything the registry holds at one instant, collector samples included.

    Mappings are ``name -> {labels: value}`` with labels as a sorted tuple of string pairs.
    Use :meth:`counter`, :meth:`gauge` and :meth:`histogram` to read one series.
    """

    counters: Mapping[str, Mapping[LabelKey, float]] = field(default_factory=dict)
    gauges: Mapping[str, Mapping[LabelKey, float]] = field(default_factory=dict)
    histograms: Mapping[str, Mapping[LabelKey, HistogramSnapshot]] = field(default_factory=dict)
    help: Mapping[str, str] = field(default_factory=dict)

    def counter(self, name: str, /, **labels: LabelValue) -> float:
        """The counter's value for exactly these labels, 0.0 if never incremented."""
        return self.counters.get(name, {}).get(_str_key(tuple(labels.items())), 0.0)

    def gauge(self, name: str, /, **labels: LabelValue) -> float | None:
        """The gauge's value for exactly these labels, ``None`` if never set."""
        return self.gauges.get(name, {}).get(_str_key(tuple(labels.items())))

    def histogram(self, name: str, /, **labels: LabelValue) -> HistogramSnapshot:
        """The histogram for exactly these labels (empty if nothing was observed)."""
        return self.histograms.get(name, {}).get(
            _str_key(tuple(labels.items())), HistogramSnapshot()
        )

    def histogram_total(self, name: str, /) -> HistogramSnapshot:
        """All series of histogram ``name`` merged (e.g. every route together)."""
        total = HistogramSnapshot()
        for snap in self.histograms.get(name, {}).values():
            total = total + snap
        return total

    def counter_total(self, name: str, /) -> float:
        """Sum of counter ``name`` over all its label sets."""
        return float(sum(self.counters.get(name, {}).values()))


class MetricsRegistry:
    """A thread-safe store of counters, gauges and histograms, plus pull collectors.

    Calls never block on I/O. They raise :class:`~sight_core.errors.ConfigurationError` only
    when a *new* series is invalid: a bad metric or label name, a label named ``quantile``/``le``,
    or a name already used with another kind. Beyond ``max_series`` label sets per metric, new
    label sets are folded into one ``overflow="true"`` series (logged once) to bound memory.
    """

    def __init__(self, *, max_series: int = 1000) -> None:
        self.max_series = max_series
        self._counters: dict[str, dict[_RawKey, float]] = {}
        self._gauges: dict[str, dict[_RawKey, float]] = {}
        self._histograms: dict[str, dict[_RawKey, LatencyHistogram]] = {}
        self._help: dict[str, str] = {}
        self._collectors: list[Collector] = []
        self._listeners: list[Callable[[str, MetricKind], None]] = []
        self._lock = threading.Lock()
        self._clashes: set[str] = set()
        self._generation = 0
        self.slow_call_seconds = math.inf
        """``timed`` logs a warning for calls at least this long (set by configuration)."""

    # -- hot path --------------------------------------------------------------------------

    def increment(self, name: str, amount: float = 1, /, **labels: LabelValue) -> None:
        """Add ``amount`` to counter ``name`` for these labels."""
        if labels:
            key = (*labels.items(),) if len(labels) == 1 else (*sorted(labels.items()),)
        else:
            key = ()
        lock = self._lock
        lock.acquire()  # explicit acquire/release: half the cost of ``with`` on CPython 3.11
        try:
            self._counters[name][key] += amount
            return
        except KeyError:
            pass
        finally:
            lock.release()
        self._create(self._counters, "counter", name, key, amount)

    def set_gauge(self, name: str, value: float, /, **labels: LabelValue) -> None:
        """Set gauge ``name`` for these labels to ``value``."""
        if labels:
            key = (*labels.items(),) if len(labels) == 1 else (*sorted(labels.items()),)
        else:
            key = ()
        series = self._gauges.get(name)
        if series is not None and key in series:
            series[key] = value  # a single store: atomic, no lock needed
            return
        self._create(self._gauges, "gauge", name, key, value)

    def observe(self, name: str, seconds: float, /, **labels: LabelValue) -> None:
        """Record a duration (seconds) into latency histogram ``name`` for these labels."""
        if labels:
            key = (*labels.items(),) if len(labels) == 1 else (*sorted(labels.items()),)
        else:
            key = ()
        try:
            hist = self._histograms[name][key]
        except KeyError:
            hist = self._histogram(name, key)
        hist.record(seconds)

    # -- series creation -------------------------------------------------------------------

    def histogram(self, name: str, /, **labels: LabelValue) -> LatencyHistogram:
        """The live histogram of one series, created if needed: keep it and call
        ``record(seconds)`` on a very hot path to skip the name and label lookups.

        A kept object is detached by :meth:`reset` (re-fetch when :attr:`generation` changes).
        """
        return self._histogram(name, _key(labels))

    def _histogram(self, name: str, key: _RawKey) -> LatencyHistogram:
        series = self._histograms.get(name)
        if series is not None:
            hist = series.get(key)
            if hist is not None:
                return hist
        with self._lock:
            created = name not in self._histograms
            series = self._series(self._histograms, "histogram", name)
            key = self._admit(name, series, key)
            hist = series.get(key)
            if hist is None:
                hist = series[key] = LatencyHistogram()
        if created:
            self._notify(name, "histogram")
        return hist

    def _create(
        self,
        store: dict[str, dict[_RawKey, float]],
        kind: MetricKind,
        name: str,
        key: _RawKey,
        value: float,
    ) -> None:
        with self._lock:
            created = name not in store
            series = self._series(store, kind, name)
            key = self._admit(name, series, key)
            if kind == "counter":
                series[key] = series.get(key, 0.0) + value
            else:
                series[key] = value
        if created:
            self._notify(name, kind)

    def _notify(self, name: str, kind: MetricKind) -> None:
        for listener in list(self._listeners):
            try:
                listener(name, kind)
            except Exception:
                _log.exception("observability listener failed for metric %r", name)

    def _series(
        self, store: dict[str, dict[_RawKey, _V]], kind: MetricKind, name: str
    ) -> dict[_RawKey, _V]:
        series = store.get(name)
        if series is not None:
            return series
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigurationError(
                f"invalid metric name {name!r}: use letters, digits, '_' and ':' (e.g. "
                "'sight_cache_hits_total')"
            )
        for other_kind, other in (
            ("counter", self._counters),
            ("gauge", self._gauges),
            ("histogram", self._histograms),
        ):
            if other_kind != kind and name in other:
                raise ConfigurationError(
                    f"metric {name!r} is already a {other_kind}; it cannot also be a {kind}"
                )
        series = store[name] = {}
        return series

    def _admit(self, name: str, series: Mapping[_RawKey, object], key: _RawKey) -> _RawKey:
        if key in series:
            return key
        check_labels(name, key)
        if len(series) >= self.max_series:
            if _OVERFLOW not in series:
                _log.warning(
                    "metric %r reached %d label sets; further label sets are counted under "
                    'overflow="true" (is a label unbounded, like an id?)',
                    name,
                    self.max_series,
                )
            return _OVERFLOW
        return key

    # -- metadata, collectors, listeners ---------------------------------------------------

    def describe(self, name: str, help: str) -> None:
        """Attach a help text to metric ``name`` (shown as ``# HELP`` by exporters)."""
        self._help[name] = help

    def register_collector(self, fn: Collector) -> Callable[[], None]:
        """Call ``fn()`` at every snapshot/export and merge its samples; returns an undo.

        A collector that raises is logged and skipped; the failure is counted in
        ``sight_observability_collector_errors_total``. A sample whose name is already used with
        another kind is dropped (logged once). Registering the same function twice is a no-op.
        """
        with self._lock:
            if fn not in self._collectors:
                self._collectors.append(fn)
        self._notify("", "counter")
        return lambda: self.unregister_collector(fn)

    def unregister_collector(self, fn: Collector) -> None:
        """Stop calling ``fn``; unknown functions are ignored."""
        with self._lock:
            if fn in self._collectors:
                self._collectors.remove(fn)

    def add_listener(self, fn: Callable[[str, MetricKind], None]) -> None:
        """Call ``fn(name, kind)`` when a metric name first appears (``("", "counter")`` when a
        collector is registered). Used by exporters that declare instruments per name."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[str, MetricKind], None]) -> None:
        """Undo :meth:`add_listener`; unknown functions are ignored."""
        if fn in self._listeners:
            self._listeners.remove(fn)

    @property
    def help_texts(self) -> Mapping[str, str]:
        """Help texts set with :meth:`describe` (a copy)."""
        return dict(self._help)

    @property
    def generation(self) -> int:
        """Bumped by :meth:`reset`; cached series objects from older generations are stale."""
        return self._generation

    def reset(self, *, collectors: bool = False) -> None:
        """Forget every recorded value (for tests). Collectors stay unless ``collectors=True``."""
        with self._lock:
            self._counters = {}
            self._gauges = {}
            self._histograms = {}
            self._generation += 1
            if collectors:
                self._collectors = []

    # -- reading ---------------------------------------------------------------------------

    def _clash(self, name: str, kind: str) -> None:
        if name not in self._clashes:
            self._clashes.add(name)
            _log.error(
                "collector sample %r (%s) dropped: the name is already used with another kind",
                name,
                kind,
            )

    def collect(self) -> list[Sample]:
        """Samples from every registered collector (failures logged and counted)."""
        out: list[Sample] = []
        for fn in list(self._collectors):
            try:
                out.extend(fn())
            except Exception:
                _log.exception("observability collector %r failed", fn)
                self.increment("sight_observability_collector_errors_total")
        return out

    def snapshot(self) -> MetricsSnapshot:
        """Copy every series and pull every collector. Cost: O(series + buckets)."""
        pulled = self.collect()  # first, so collector failures counted now show up
        with self._lock:
            raw_counters = {n: dict(s) for n, s in self._counters.items()}
            raw_gauges = {n: dict(s) for n, s in self._gauges.items()}
            raw_hists = {n: dict(s) for n, s in self._histograms.items()}
        counters: dict[str, dict[LabelKey, float]] = {}
        for name, series in raw_counters.items():
            merged = counters.setdefault(name, {})
            for key, value in series.items():
                skey = _str_key(key)
                merged[skey] = merged.get(skey, 0.0) + value
        gauges: dict[str, dict[LabelKey, float]] = {
            name: {_str_key(k): float(v) for k, v in series.items()}
            for name, series in raw_gauges.items()
        }
        histograms: dict[str, dict[LabelKey, HistogramSnapshot]] = {}
        for name, hseries in raw_hists.items():
            hmerged = histograms.setdefault(name, {})
            for key, hist in hseries.items():
                skey = _str_key(key)
                hmerged[skey] = hmerged.get(skey, HistogramSnapshot()) + hist.snapshot()
        for sample in pulled:
            skey = tuple(sorted((k, str(v)) for k, v in sample.labels.items()))
            other = gauges if sample.kind == "counter" else counters
            if sample.name in other or sample.name in histograms:
                self._clash(sample.name, sample.kind)
                continue
            if sample.kind == "counter":
                target = counters.setdefault(sample.name, {})
                target[skey] = target.get(skey, 0.0) + float(sample.value)
            else:
                gauges.setdefault(sample.name, {})[skey] = float(sample.value)
        return MetricsSnapshot(counters, gauges, histograms, dict(self._help))


_REGISTRY = MetricsRegistry()


def get_registry() -> MetricsRegistry:
    """The process-wide registry that the module-level functions write to."""
    return _REGISTRY


# Module-level API: bound methods of the process-wide registry (no extra call frame).
increment = _REGISTRY.increment
observe = _REGISTRY.observe
set_gauge = _REGISTRY.set_gauge
register_collector = _REGISTRY.register_collector
unregister_collector = _REGISTRY.unregister_collector
describe = _REGISTRY.describe
snapshot = _REGISTRY.snapshot
reset = _REGISTRY.reset
