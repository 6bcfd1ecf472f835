"""Prometheus export: the text exposition format, or a ``prometheus_client`` collector.

:func:`prometheus_text` needs no dependency. :func:`enable_prometheus` imports
``prometheus_client`` (extra ``prometheus``) on first call and registers a collector that reads
the registry at scrape time, so ``prometheus_client.generate_latest()``, ``make_asgi_app()``
and friends serve sight-core metrics next to the application's own.

Mapping: counters → ``counter`` (a name without ``_total`` gets it appended, as Prometheus
expects); gauges → ``gauge``; latency histograms → ``summary`` with ``quantile`` labels plus
``_sum``/``_count`` or, when ``buckets`` are given, ``histogram`` with cumulative ``le`` buckets
(bucket counts are exact up to the histogram's 0.8 % resolution).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sight_core.errors import MissingDependencyError

from ._registry import MetricsRegistry, MetricsSnapshot, get_registry

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_QUANTILES",
    "PrometheusCollector",
    "disable_prometheus",
    "enable_prometheus",
    "prometheus_text",
]

DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Content type of :func:`prometheus_text` output."""
_UNSAFE = re.compile(r"[^a-zA-Z0-9_:]")


@dataclass(frozen=True, slots=True)
class _Family:
    name: str
    kind: str
    help: str
    samples: list[tuple[str, dict[str, str], float]]


def _safe(name: str) -> str:
    safe = _UNSAFE.sub("_", name)
    return "_" + safe if safe[:1].isdigit() else safe


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _families(
    snap: MetricsSnapshot, quantiles: Sequence[float], buckets: Sequence[float] | None
) -> Iterator[_Family]:
    for name in sorted(snap.counters):
        base = _safe(name).removesuffix("_total")
        total = base + "_total"
        yield _Family(
            base,
            "counter",
            snap.help.get(name, ""),
            [(total, _labels(key), value) for key, value in sorted(snap.counters[name].items())],
        )
    for name in sorted(snap.gauges):
        safe = _safe(name)
        yield _Family(
            safe,
            "gauge",
            snap.help.get(name, ""),
            [(safe, _labels(key), value) for key, value in sorted(snap.gauges[name].items())],
        )
    edges = sorted({float(b) for b in buckets if not math.isinf(b)}) if buckets else None
    for name in sorted(snap.histograms):
        safe = _safe(name)
        samples: list[tuple[str, dict[str, str], float]] = []
        for key, hist in sorted(snap.histograms[name].items()):
            labels = _labels(key)
            if edges is not None:
                for edge, count in zip(edges, hist.cumulative(edges), strict=True):
                    samples.append((safe + "_bucket", {**labels, "le": _fmt(edge)}, count))
                samples.append((safe + "_bucket", {**labels, "le": "+Inf"}, hist.count))
            else:
                for q, value in zip(quantiles, hist.quantiles(quantiles), strict=True):
                    samples.append((safe, {**labels, "quantile": repr(float(q))}, value))
            samples.append((safe + "_sum", labels, hist.sum))
            samples.append((safe + "_count", labels, hist.count))
        kind = "histogram" if edges is not None else "summary"
        yield _Family(safe, kind, snap.help.get(name, ""), samples)


def _labels(key: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in key:  # collector samples are not validated at record time
        safe = _safe(name)
        out["_" + safe if safe in ("le", "quantile") else safe] = value
    return out


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def prometheus_text(
    registry: MetricsRegistry | None = None,
    *,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    buckets: Sequence[float] | None = None,
) -> str:
    """Every metric of ``registry`` (default: the process-wide one) in the Prometheus text
    format 0.0.4 (serve it with content type ``text/plain; version=0.0.4``).

    Histograms are summaries with ``quantiles`` unless ``buckets`` (upper bounds, seconds) are
    given, in which case they are Prometheus histograms. Cost: one snapshot, O(series).
    """
    snap = (registry or get_registry()).snapshot()
    lines: list[str] = []
    for family in _families(snap, quantiles, buckets):
        exposed = family.name + "_total" if family.kind == "counter" else family.name
        if family.help:
            escaped = family.help.replace("\\", r"\\").replace("\n", r"\n")
            lines.append(f"# HELP {exposed} {escaped}")
        lines.append(f"# TYPE {exposed} {family.kind}")
        for sample_name, labels, value in family.samples:
            if labels:
                body = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                lines.append(f"{sample_name}{{{body}}} {_fmt(value)}")
            else:
                lines.append(f"{sample_name} {_fmt(value)}")
    return "\n".join(lines) + "\n" if lines else ""


def _import_prometheus() -> Any:
    try:
        import prometheus_client.core
    except ImportError as exc:
        raise MissingDependencyError("prometheus-client", "prometheus") from exc
    return prometheus_client.core


class PrometheusCollector:
    """A ``prometheus_client`` custom collector reading a :class:`MetricsRegistry` at scrape time.

    ``describe()`` returns nothing, so registering never calls ``collect()`` and never clashes
    over names that appear later.
    """

    def __init__(
        self,
        registry: MetricsRegistry | None = None,
        *,
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        buckets: Sequence[float] | None = None,
    ) -> None:
        self._core = _import_prometheus()
        self.registry = registry or get_registry()
        self.quantiles = tuple(quantiles)
        self.buckets = tuple(buckets) if buckets is not None else None

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        metric_cls = self._core.Metric
        for family in _families(self.registry.snapshot(), self.quantiles, self.buckets):
            metric = metric_cls(family.name, family.help or family.name, family.kind)
            for sample_name, labels, value in family.samples:
                metric.add_sample(sample_name, labels, value)
            yield metric


_enabled: dict[int, tuple[Any, PrometheusCollector]] = {}
_enabled_lock = threading.Lock()


def enable_prometheus(
    registry: CollectorRegistry | None = None,
    *,
    source: MetricsRegistry | None = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    buckets: Sequence[float] | None = None,
) -> PrometheusCollector:
    """Register a :class:`PrometheusCollector` for ``source`` (default: the process-wide
    registry) in ``registry`` (default: ``prometheus_client.REGISTRY``). Idempotent per
    ``registry``: a second call returns the collector already registered.

    Raises:
        MissingDependencyError: ``prometheus-client`` is not installed (extra ``prometheus``).
    """
    core = _import_prometheus()
    target = registry if registry is not None else core.REGISTRY
    with _enabled_lock:
        found = _enabled.get(id(target))
        if found is not None and found[0] is target:
            return found[1]
        collector = PrometheusCollector(source, quantiles=quantiles, buckets=buckets)
        target.register(collector)
        _enabled[id(target)] = (target, collector)
        return collector


def disable_prometheus(registry: CollectorRegistry | None = None) -> None:
    """Unregister the collector that :func:`enable_prometheus` added to ``registry``."""
    core = _import_prometheus()
    target = registry if registry is not None else core.REGISTRY
    with _enabled_lock:
        found = _enabled.pop(id(target), None)
        if found is not None and found[0] is target:
            target.unregister(found[1])
