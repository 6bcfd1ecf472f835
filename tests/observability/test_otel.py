import sys
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from opentelemetry.metrics import (
    CallbackOptions,
    Meter,
    MeterProvider,
    NoOpMeter,
    ObservableCounter,
    ObservableGauge,
    Observation,
)

from sight_core.errors import MissingDependencyError
from sight_core.observability import (
    MetricsRegistry,
    MetricsSnapshot,
    Sample,
    _otel,
    enable_opentelemetry,
)


class FakeMeter(NoOpMeter):
    """Implements the API's Meter and keeps the observable instruments' callbacks."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.created: dict[str, tuple[str, Sequence[Any], str]] = {}

    def create_observable_counter(
        self,
        name: str,
        callbacks: Sequence[Any] | None = None,
        unit: str = "",
        description: str = "",
    ) -> ObservableCounter:
        assert name not in self.created
        self.created[name] = ("counter", list(callbacks or ()), unit)
        return super().create_observable_counter(name, callbacks, unit, description)

    def create_observable_gauge(
        self,
        name: str,
        callbacks: Sequence[Any] | None = None,
        unit: str = "",
        description: str = "",
    ) -> ObservableGauge:
        assert name not in self.created
        self.created[name] = ("gauge", list(callbacks or ()), unit)
        return super().create_observable_gauge(name, callbacks, unit, description)

    def read(self, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
        out: dict[tuple[tuple[str, Any], ...], float] = {}
        for cb in self.created[name][1]:
            obs: Iterable[Observation] = cb(CallbackOptions())
            for o in obs:
                out[tuple(sorted((o.attributes or {}).items()))] = o.value
        return out


class FakeProvider(MeterProvider):
    def __init__(self) -> None:
        self.meters: list[FakeMeter] = []

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> Meter:
        meter = FakeMeter(name)
        self.meters.append(meter)
        return meter


def test_bridge_declares_observable_instruments_reading_the_registry(
    registry: MetricsRegistry,
) -> None:
    registry.increment("sight_cache_hits_total", 2, namespace="persona")
    registry.set_gauge("sight_breaker_state", 1, name="pro")
    for v in (0.1, 0.2, 0.3, 0.4):
        registry.observe("sight_llm_call_seconds", v, model="flash")
    provider = FakeProvider()
    bridge = enable_opentelemetry(provider, source=registry)
    assert enable_opentelemetry(provider, source=registry) is bridge
    (meter,) = provider.meters
    assert meter._name == "sight_core"
    assert {n: (k, u) for n, (k, _, u) in meter.created.items()} == {
        "sight_cache_hits_total": ("counter", ""),
        "sight_breaker_state": ("gauge", ""),
        "sight_llm_call_seconds_count": ("counter", ""),
        "sight_llm_call_seconds_sum": ("counter", "s"),
        "sight_llm_call_seconds": ("gauge", "s"),
    }
    assert meter.read("sight_cache_hits_total") == {(("namespace", "persona"),): 2.0}
    assert meter.read("sight_breaker_state") == {(("name", "pro"),): 1.0}
    assert meter.read("sight_llm_call_seconds_count") == {(("model", "flash"),): 4}
    quantiles = meter.read("sight_llm_call_seconds")
    assert quantiles[(("model", "flash"), ("quantile", "0.5"))] == pytest.approx(0.2, rel=0.01)
    assert quantiles[(("model", "flash"), ("quantile", "1.0"))] == 0.4
    bridge.close()
    assert meter.read("sight_cache_hits_total") == {}


def test_new_names_and_collectors_are_declared_later(registry: MetricsRegistry) -> None:
    provider = FakeProvider()
    bridge = enable_opentelemetry(provider, source=registry)
    bridge.max_age = 0.0  # every read takes a fresh snapshot
    (meter,) = provider.meters
    assert meter.created == {}
    registry.increment("sight_retries_total", 1, policy="llm")
    registry.register_collector(lambda: [Sample("sight_cache_size", {}, 5, "gauge")])
    assert meter.created["sight_retries_total"][0] == "counter"
    assert meter.read("sight_cache_size") == {(): 5.0}
    registry.increment("sight_retries_total", 1, policy="llm")
    assert meter.read("sight_retries_total") == {(("policy", "llm"),): 2.0}
    bridge.close()
    registry.increment("sight_after_close_total")
    assert "sight_after_close_total" not in meter.created


def test_one_snapshot_serves_a_collection_cycle(
    registry: MetricsRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a_total", "b_total", "c_total"):
        registry.increment(name)
    provider = FakeProvider()
    bridge = enable_opentelemetry(provider, source=registry)
    bridge.max_age = 3600.0  # the reads below share one snapshot however slow the machine is
    (meter,) = provider.meters
    calls: list[int] = []
    real = registry.snapshot

    def counting_snapshot() -> MetricsSnapshot:
        calls.append(1)
        return real()

    monkeypatch.setattr(registry, "snapshot", counting_snapshot)
    for name in ("a_total", "b_total", "c_total"):
        meter.read(name)
    assert len(calls) == 1


def test_missing_opentelemetry_names_the_extra(
    registry: MetricsRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.metrics", None)
    with pytest.raises(MissingDependencyError, match=r"sight-core\[otel\]") as info:
        _otel.OpenTelemetryBridge(source=registry)
    assert info.value.extra == "otel"
    with pytest.raises(MissingDependencyError):
        enable_opentelemetry(source=registry)
