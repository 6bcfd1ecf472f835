import logging
import threading
from collections.abc import Iterable

import pytest

from sight_core.errors import ConfigurationError
from sight_core.observability import (
    MetricsRegistry,
    Sample,
    increment,
    observe,
    register_collector,
    reset,
    set_gauge,
    snapshot,
    unregister_collector,
)


def test_contract_calls_on_the_process_wide_registry() -> None:
    increment("sight_cache_errors_total", 1, namespace="persona")
    increment("sight_cache_errors_total", namespace="persona")
    observe("sight_llm_call_seconds", 0.42, model="gemini-2.5-flash")
    set_gauge("sight_breaker_state", 2, name="gemini-pro")  # a label called "name" works
    snap = snapshot()
    assert snap.counter("sight_cache_errors_total", namespace="persona") == 2
    assert snap.gauge("sight_breaker_state", name="gemini-pro") == 2.0
    hist = snap.histogram("sight_llm_call_seconds", model="gemini-2.5-flash")
    assert (hist.count, hist.sum, hist.p95) == (1, 0.42, 0.42)
    reset()
    assert snapshot().counters == {}


def test_label_sets_are_isolated_and_order_insensitive(registry: MetricsRegistry) -> None:
    registry.increment("hits_total", 1, namespace="persona", tier="local")
    registry.increment("hits_total", 2, tier="local", namespace="persona")
    registry.increment("hits_total", 5, namespace="project", tier="local")
    registry.increment("hits_total", 7)
    snap = registry.snapshot()
    assert snap.counter("hits_total", namespace="persona", tier="local") == 3
    assert snap.counter("hits_total", tier="local", namespace="project") == 5
    assert snap.counter("hits_total") == 7
    assert snap.counter("hits_total", namespace="persona") == 0  # a subset is another series
    assert snap.counter_total("hits_total") == 15
    assert len(snap.counters["hits_total"]) == 3


def test_histogram_series_are_isolated_and_mergeable(registry: MetricsRegistry) -> None:
    for v in (0.1, 0.2, 0.3):
        registry.observe("route_seconds", v, route="/a")
    registry.observe("route_seconds", 5.0, route="/b")
    snap = registry.snapshot()
    assert snap.histogram("route_seconds", route="/a").count == 3
    assert snap.histogram("route_seconds", route="/a").max == 0.3
    assert snap.histogram("route_seconds", route="/b").count == 1
    assert snap.histogram("route_seconds", route="/c").count == 0
    total = snap.histogram_total("route_seconds")
    assert (total.count, total.max) == (4, 5.0)


def test_int_and_str_label_values_export_as_one_series(registry: MetricsRegistry) -> None:
    registry.increment("status_total", 1, code=200)
    registry.increment("status_total", 1, code="200")
    registry.observe("lat_seconds", 1.0, attempt=1)
    registry.observe("lat_seconds", 3.0, attempt="1")
    snap = registry.snapshot()
    assert snap.counters["status_total"] == {(("code", "200"),): 2.0}
    assert snap.histogram("lat_seconds", attempt=1).count == 2


def test_gauge_overwrites(registry: MetricsRegistry) -> None:
    registry.set_gauge("in_flight", 3, limiter="llm")
    registry.set_gauge("in_flight", 1, limiter="llm")
    assert registry.snapshot().gauge("in_flight", limiter="llm") == 1.0
    assert registry.snapshot().gauge("in_flight", limiter="db") is None


@pytest.mark.parametrize("name", ["", "9lives", "has space", "dash-ed", "persona.generate"])
def test_invalid_metric_names_are_rejected(registry: MetricsRegistry, name: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid metric name"):
        registry.increment(name)


@pytest.mark.parametrize("label", ["quantile", "le", "__meta"])
def test_reserved_label_names_are_rejected(registry: MetricsRegistry, label: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid label name"):
        registry.observe("x_seconds", 1.0, **{label: "v"})


def test_label_values_must_be_str_or_int(registry: MetricsRegistry) -> None:
    with pytest.raises(ConfigurationError, match="must be a str or int"):
        registry.increment("x_total", 1, persona=object())  # type: ignore[arg-type]


def test_one_name_cannot_be_two_kinds(registry: MetricsRegistry) -> None:
    registry.increment("thing")
    with pytest.raises(ConfigurationError, match="already a counter"):
        registry.observe("thing", 1.0)
    with pytest.raises(ConfigurationError, match="already a counter"):
        registry.set_gauge("thing", 1.0)


def test_series_beyond_the_limit_fold_into_overflow(caplog: pytest.LogCaptureFixture) -> None:
    registry = MetricsRegistry(max_series=3)
    with caplog.at_level(logging.WARNING, logger="sight_core.observability"):
        for i in range(10):
            registry.increment("by_user_total", 1, user=f"u{i}")
            registry.observe("by_user_seconds", 0.1, user=f"u{i}")
    snap = registry.snapshot()
    assert len(snap.counters["by_user_total"]) == 4  # 3 real + 1 overflow
    assert snap.counter("by_user_total", overflow="true") == 7
    assert snap.histogram("by_user_seconds", overflow="true").count == 7
    assert snap.counter("by_user_total", user="u0") == 1
    warnings = [r for r in caplog.records if "overflow" in r.getMessage()]
    assert len(warnings) == 2  # once per metric


def test_collectors_are_pulled_at_snapshot_time(registry: MetricsRegistry) -> None:
    hits = {"persona": 0}
    calls = []

    def collect() -> Iterable[Sample]:
        calls.append(1)
        return [
            Sample("sight_cache_hits_total", {"namespace": ns}, n, "counter")
            for ns, n in hits.items()
        ] + [Sample("sight_cache_size", {}, 12, "gauge")]

    undo = registry.register_collector(collect)
    registry.register_collector(collect)  # no double registration
    hits["persona"] = 41
    registry.increment("sight_cache_hits_total", 1, namespace="persona")  # pushed and pulled add
    snap = registry.snapshot()
    assert len(calls) == 1
    assert snap.counter("sight_cache_hits_total", namespace="persona") == 42
    assert snap.gauge("sight_cache_size") == 12
    undo()
    assert registry.snapshot().counter("sight_cache_hits_total", namespace="persona") == 1
    assert len(calls) == 1


def test_a_failing_collector_is_logged_counted_and_skipped(
    registry: MetricsRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Iterable[Sample]:
        raise RuntimeError("boom")

    def fine() -> Iterable[Sample]:
        return [Sample("ok", {}, 1, "gauge")]

    registry.register_collector(broken)
    registry.register_collector(fine)
    with caplog.at_level(logging.ERROR, logger="sight_core.observability"):
        snap = registry.snapshot()
    assert snap.gauge("ok") == 1
    assert snap.counter("sight_observability_collector_errors_total") == 1
    assert any("collector" in r.getMessage() for r in caplog.records)


def test_module_level_unregister() -> None:
    def collect() -> Iterable[Sample]:
        return [Sample("pulled", {}, 1, "gauge")]

    register_collector(collect)
    assert snapshot().gauge("pulled") == 1
    unregister_collector(collect)
    assert snapshot().gauge("pulled") is None


def test_reset_keeps_collectors_unless_asked(registry: MetricsRegistry) -> None:
    registry.register_collector(lambda: [Sample("pulled", {}, 1, "gauge")])
    registry.increment("pushed_total")
    generation = registry.generation
    registry.reset()
    assert registry.generation == generation + 1
    snap = registry.snapshot()
    assert snap.counters == {}
    assert snap.gauge("pulled") == 1
    registry.reset(collectors=True)
    assert registry.snapshot().gauges == {}


def test_describe_and_listeners(registry: MetricsRegistry) -> None:
    seen: list[tuple[str, str]] = []
    registry.add_listener(lambda name, kind: seen.append((name, kind)))
    registry.describe("req_seconds", "Request latency")
    registry.observe("req_seconds", 0.1, route="/a")
    registry.observe("req_seconds", 0.1, route="/b")
    registry.increment("req_total")
    registry.set_gauge("up", 1)
    assert seen == [("req_seconds", "histogram"), ("req_total", "counter"), ("up", "gauge")]
    assert registry.snapshot().help == {"req_seconds": "Request latency"}


def test_concurrent_increments_from_threads_are_not_lost(registry: MetricsRegistry) -> None:
    def work(tag: str) -> None:
        for _ in range(10_000):
            registry.increment("hits_total", 1, worker=tag)
            registry.increment("hits_total", 1)

    threads = [threading.Thread(target=work, args=(str(i % 2),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = registry.snapshot()
    assert snap.counter("hits_total") == 40_000
    assert snap.counter("hits_total", worker="0") == 20_000
    assert snap.counter("hits_total", worker="1") == 20_000


def test_collector_sample_clashing_with_another_kind_is_dropped(
    registry: MetricsRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    registry.increment("shared_total")
    registry.register_collector(lambda: [Sample("shared_total", {}, 5, "gauge")])
    with caplog.at_level(logging.ERROR, logger="sight_core.observability"):
        snap = registry.snapshot()
        registry.snapshot()
    assert snap.counter("shared_total") == 1
    assert "shared_total" not in snap.gauges
    assert len([r for r in caplog.records if "dropped" in r.getMessage()]) == 1


def test_bound_histogram_is_the_live_series(registry: MetricsRegistry) -> None:
    hist = registry.histogram("bound_seconds", route="/a", method="GET")
    assert registry.histogram("bound_seconds", method="GET", route="/a") is hist
    hist.record(0.5)
    registry.observe("bound_seconds", 1.5, route="/a", method="GET")
    snap = registry.snapshot().histogram("bound_seconds", route="/a", method="GET")
    assert (snap.count, snap.sum) == (2, 2.0)
