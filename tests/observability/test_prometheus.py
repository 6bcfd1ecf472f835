import sys

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sight_core.errors import MissingDependencyError
from sight_core.observability import (
    CONTENT_TYPE,
    MetricsRegistry,
    Sample,
    describe,
    disable_prometheus,
    enable_prometheus,
    increment,
    observe,
    prometheus_text,
    set_gauge,
)


def families(text: str) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    return {
        f.name: (f.type, [(s.name, dict(s.labels), s.value) for s in f.samples])
        for f in text_string_to_metric_families(text)
    }


def populate(registry: MetricsRegistry) -> None:
    registry.describe("sight_http_request_seconds", "Request latency by route")
    registry.increment("sight_cache_hits_total", 3, namespace="persona")
    registry.increment("sight_llm_calls", 2, model="flash")  # no _total: exported with it
    registry.set_gauge("sight_breaker_state", 2, name="gemini-pro")
    for ms in range(1, 101):
        registry.observe("sight_http_request_seconds", ms / 1000, route="/personas/{id}")
    registry.register_collector(
        lambda: [Sample("sight_db_queries_total", {"engine": "main"}, 9, "counter")]
    )


def test_text_parses_with_the_official_parser(registry: MetricsRegistry) -> None:
    populate(registry)
    parsed = families(prometheus_text(registry))
    assert parsed["sight_cache_hits"] == (
        "counter",
        [("sight_cache_hits_total", {"namespace": "persona"}, 3.0)],
    )
    assert parsed["sight_llm_calls"][1] == [("sight_llm_calls_total", {"model": "flash"}, 2.0)]
    assert parsed["sight_db_queries"][1] == [("sight_db_queries_total", {"engine": "main"}, 9.0)]
    assert parsed["sight_breaker_state"] == (
        "gauge",
        [("sight_breaker_state", {"name": "gemini-pro"}, 2.0)],
    )
    kind, samples = parsed["sight_http_request_seconds"]
    assert kind == "summary"
    by = {(n, s.get("quantile")): v for n, s, v in samples}
    assert by[("sight_http_request_seconds", "0.5")] == pytest.approx(0.050, rel=0.01)
    assert by[("sight_http_request_seconds", "0.95")] == pytest.approx(0.095, rel=0.01)
    assert by[("sight_http_request_seconds", "0.99")] == pytest.approx(0.099, rel=0.01)
    assert by[("sight_http_request_seconds_count", None)] == 100
    assert by[("sight_http_request_seconds_sum", None)] == pytest.approx(5.05)
    assert all(s["route"] == "/personas/{id}" for _, s, _ in samples)
    assert "# HELP sight_http_request_seconds Request latency by route" in prometheus_text(registry)


def test_histogram_buckets_option(registry: MetricsRegistry) -> None:
    populate(registry)
    text = prometheus_text(registry, buckets=(0.01, 0.05, 0.1, float("inf")))
    kind, samples = families(text)["sight_http_request_seconds"]
    assert kind == "histogram"
    buckets = {s["le"]: v for n, s, v in samples if n.endswith("_bucket")}
    assert buckets == {"0.01": 10, "0.05": 50, "0.1": 100, "+Inf": 100}


def test_label_values_are_escaped(registry: MetricsRegistry) -> None:
    nasty = 'say "hi"\\n\nnext'
    registry.increment("odd_total", 1, text=nasty)
    ((_, labels, value),) = families(prometheus_text(registry))["odd"][1]
    assert (labels["text"], value) == (nasty, 1.0)


def test_empty_registry_gives_empty_text(registry: MetricsRegistry) -> None:
    assert prometheus_text(registry) == ""
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_default_registry_and_collector_sample_names_are_sanitized() -> None:
    increment("sight_requests_total", route="/")
    set_gauge("sight_up", 1)
    observe("sight_x_seconds", 0.5)
    describe("sight_up", "1 when up")
    parsed = families(prometheus_text())
    assert set(parsed) == {"sight_requests", "sight_up", "sight_x_seconds"}


def test_enable_prometheus_serves_through_prometheus_client(registry: MetricsRegistry) -> None:
    populate(registry)
    target = CollectorRegistry()
    collector = enable_prometheus(target, source=registry)
    assert enable_prometheus(target, source=registry) is collector  # idempotent
    # the application's own metrics in the same registry keep working
    Histogram("app_seconds", "app", registry=target).observe(0.2)
    parsed = families(generate_latest(target).decode())
    assert parsed["sight_cache_hits"][1] == [
        ("sight_cache_hits_total", {"namespace": "persona"}, 3.0)
    ]
    assert parsed["sight_http_request_seconds"][0] == "summary"
    assert "app_seconds" in parsed
    registry.increment("sight_late_total")  # names that appear after enabling are served
    assert "sight_late" in families(generate_latest(target).decode())
    disable_prometheus(target)
    assert "sight_cache_hits" not in families(generate_latest(target).decode())


def test_missing_prometheus_client_names_the_extra(
    registry: MetricsRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client.core", None)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(MissingDependencyError, match=r"sight-core\[prometheus\]") as info:
        enable_prometheus(source=registry)
    assert info.value.extra == "prometheus"
    assert isinstance(info.value, ImportError)
    registry.increment("still_works_total")
    assert "still_works_total 1.0" in prometheus_text(registry)  # text needs no dependency


def test_collector_label_names_are_made_safe(registry: MetricsRegistry) -> None:
    registry.register_collector(
        lambda: [Sample("pulled_total", {"le": "x", "bad-name": "y"}, 1, "counter")]
    )
    ((_, labels, _),) = families(prometheus_text(registry))["pulled"][1]
    assert labels == {"_le": "x", "bad_name": "y"}


def test_enable_prometheus_with_buckets_serves_histograms(registry: MetricsRegistry) -> None:
    populate(registry)
    target = CollectorRegistry()
    enable_prometheus(target, source=registry, buckets=(0.05, 0.1))
    kind, samples = families(generate_latest(target).decode())["sight_http_request_seconds"]
    assert kind == "histogram"
    assert {s["le"]: v for n, s, v in samples if n.endswith("_bucket")} == {
        "0.05": 50,
        "0.1": 100,
        "+Inf": 100,
    }
    disable_prometheus(target)
