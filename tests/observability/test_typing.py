from pathlib import Path

import pytest
from mypy import api

import sight_core.observability as obs

HERE = Path(__file__).parent

EXPORTED = {
    "CONTENT_TYPE",
    "Collector",
    "HistogramSnapshot",
    "LabelValue",
    "LatencyHistogram",
    "LogContextFilter",
    "MetricsRegistry",
    "MetricsSnapshot",
    "ObservabilityConfig",
    "OpenTelemetryBridge",
    "PrometheusCollector",
    "Sample",
    "bind_log_context",
    "configure_observability",
    "describe",
    "disable_prometheus",
    "enable_opentelemetry",
    "enable_prometheus",
    "get_log_context",
    "get_registry",
    "increment",
    "install_log_context",
    "log_context",
    "metric_name",
    "observe",
    "prometheus_text",
    "register_collector",
    "reset",
    "set_gauge",
    "snapshot",
    "structlog_processor",
    "timed",
    "uninstall_log_context",
    "unregister_collector",
}


def test_public_names_are_pinned() -> None:
    assert set(obs.__all__) == EXPORTED
    assert obs.__all__ == sorted(obs.__all__, key=lambda n: (not n[0].isupper(), n))
    for name in obs.__all__:
        assert getattr(obs, name) is not None


@pytest.mark.slow
def test_public_api_type_checks() -> None:
    out, err, status = api.run(
        ["--strict", "--no-error-summary", "--warn-unused-ignores", str(HERE / "typing_checks.py")]
    )
    assert status == 0, out + err
