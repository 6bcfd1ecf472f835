"""OpenTelemetry bridge through ``opentelemetry-api`` only (extra ``otel``; no SDK needed).

:func:`enable_opentelemetry` gets a meter from ``opentelemetry.metrics.get_meter`` and declares
one *observable* instrument per sight-core metric; the application's SDK (if it configured a
``MeterProvider``) pulls the values at its own export interval. Nothing runs on the hot path.

Mapping: counter → observable counter; gauge → observable gauge; latency histogram ``x`` →
observable counters ``x_count`` and ``x_sum`` (unit ``s``) and observable gauge ``x`` with a
``quantile`` attribute (``"0.5"``, ``"0.95"``, ``"0.99"``, ``"1.0"`` = max). The OTel API has no
observable histogram, so bucket counts are not exported here (use Prometheus ``buckets``).

Metric names are declared when the bridge starts, when a new name is first recorded, and when a
collector is registered (it is called once to learn its names).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sight_core.errors import MissingDependencyError

from ._registry import MetricKind, MetricsRegistry, MetricsSnapshot, get_registry

__all__ = ["OpenTelemetryBridge", "enable_opentelemetry"]

_QUANTILES = (0.5, 0.95, 0.99, 1.0)


def _import_otel() -> Any:
    try:
        import opentelemetry.metrics
    except ImportError as exc:
        raise MissingDependencyError("opentelemetry-api", "otel") from exc
    return opentelemetry.metrics


class OpenTelemetryBridge:
    """Observable OpenTelemetry instruments reading a :class:`MetricsRegistry`.

    One registry snapshot is shared by all callbacks of a collection cycle (reused while it is
    younger than ``max_age`` seconds; 0 takes a fresh one on every read), so a scrape costs one
    snapshot, not one per instrument.
    """

    def __init__(
        self,
        meter_provider: Any = None,
        *,
        source: MetricsRegistry | None = None,
        meter_name: str = "sight_core",
        max_age: float = 1.0,
    ) -> None:
        otel = _import_otel()
        self._otel = otel
        self.registry = source or get_registry()
        self.meter = otel.get_meter(meter_name, meter_provider=meter_provider)
        self.max_age = max_age
        self.instruments: dict[str, Any] = {}
        self._declared: set[str] = set()
        self._lock = threading.Lock()
        self._snap: MetricsSnapshot | None = None
        self._snap_at = 0.0
        self._closed = False
        self.registry.add_listener(self._on_new_metric)
        self._declare_from(self.registry.snapshot())

    def close(self) -> None:
        """Stop declaring new instruments and make existing callbacks report nothing."""
        self._closed = True
        self.registry.remove_listener(self._on_new_metric)

    # -- declaration -----------------------------------------------------------------------

    def _on_new_metric(self, name: str, kind: MetricKind) -> None:
        if name:
            self._declare(name, kind)
        else:  # a collector was registered: learn its names
            snap = self.registry.snapshot()
            self._declare_from(snap)

    def _declare_from(self, snap: MetricsSnapshot) -> None:
        for name in snap.counters:
            self._declare(name, "counter")
        for name in snap.gauges:
            self._declare(name, "gauge")
        for name in snap.histograms:
            self._declare(name, "histogram")

    def _declare(self, name: str, kind: MetricKind) -> None:
        with self._lock:
            if name in self._declared or self._closed:
                return
            self._declared.add(name)
        help_text = self.registry.help_texts.get(name, "")
        meter = self.meter
        if kind == "counter":
            self.instruments[name] = meter.create_observable_counter(
                name, callbacks=[self._callback(name, self._counter_obs)], description=help_text
            )
        elif kind == "gauge":
            self.instruments[name] = meter.create_observable_gauge(
                name, callbacks=[self._callback(name, self._gauge_obs)], description=help_text
            )
        else:
            self.instruments[name + "_count"] = meter.create_observable_counter(
                name + "_count", callbacks=[self._callback(name, self._count_obs)]
            )
            self.instruments[name + "_sum"] = meter.create_observable_counter(
                name + "_sum", callbacks=[self._callback(name, self._sum_obs)], unit="s"
            )
            self.instruments[name] = meter.create_observable_gauge(
                name,
                callbacks=[self._callback(name, self._quantile_obs)],
                unit="s",
                description=help_text,
            )

    # -- callbacks -------------------------------------------------------------------------

    def _snapshot(self) -> MetricsSnapshot:
        now = time.monotonic()
        with self._lock:
            snap = self._snap
            if snap is not None and now - self._snap_at < self.max_age:
                return snap
        snap = self.registry.snapshot()
        with self._lock:
            self._snap, self._snap_at = snap, now
        return snap

    def _callback(
        self, name: str, read: Callable[[MetricsSnapshot, str], Iterator[Any]]
    ) -> Callable[[Any], Iterable[Any]]:
        def callback(options: Any) -> Iterable[Any]:
            if self._closed:
                return []
            return list(read(self._snapshot(), name))

        return callback

    def _counter_obs(self, snap: MetricsSnapshot, name: str) -> Iterator[Any]:
        for key, value in snap.counters.get(name, {}).items():
            yield self._otel.Observation(value, dict(key))

    def _gauge_obs(self, snap: MetricsSnapshot, name: str) -> Iterator[Any]:
        for key, value in snap.gauges.get(name, {}).items():
            yield self._otel.Observation(value, dict(key))

    def _count_obs(self, snap: MetricsSnapshot, name: str) -> Iterator[Any]:
        for key, hist in snap.histograms.get(name, {}).items():
            yield self._otel.Observation(hist.count, dict(key))

    def _sum_obs(self, snap: MetricsSnapshot, name: str) -> Iterator[Any]:
        for key, hist in snap.histograms.get(name, {}).items():
            yield self._otel.Observation(hist.sum, dict(key))

    def _quantile_obs(self, snap: MetricsSnapshot, name: str) -> Iterator[Any]:
        for key, hist in snap.histograms.get(name, {}).items():
            for q, value in zip(_QUANTILES, hist.quantiles(_QUANTILES), strict=True):
                yield self._otel.Observation(value, {**dict(key), "quantile": repr(q)})


_bridges: dict[tuple[int, int], OpenTelemetryBridge] = {}
_bridges_lock = threading.Lock()


def enable_opentelemetry(
    meter_provider: Any = None,
    *,
    source: MetricsRegistry | None = None,
    meter_name: str = "sight_core",
) -> OpenTelemetryBridge:
    """Expose ``source`` (default: the process-wide registry) as observable instruments of a
    meter from ``meter_provider`` (default: the global one, set by the application's SDK).

    Idempotent per (provider, registry). Raises:
        MissingDependencyError: ``opentelemetry-api`` is not installed (extra ``otel``).
    """
    _import_otel()
    registry = source or get_registry()
    key = (id(meter_provider), id(registry))
    with _bridges_lock:
        bridge = _bridges.get(key)
        if bridge is None or bridge._closed:
            bridge = OpenTelemetryBridge(meter_provider, source=registry, meter_name=meter_name)
            _bridges[key] = bridge
        return bridge
