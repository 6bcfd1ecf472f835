"""Observability: the metrics and log-context sink every sight-core layer reports to.

- :func:`increment`, :func:`set_gauge`, :func:`observe`: counters, gauges and latency
  histograms (P50/P95/P99 within 0.8 %, bounded memory), keyed by name and labels.
- :func:`register_collector` / :class:`Sample`: stats kept as plain ints, pulled at export.
- :class:`timed`: decorator (sync and async) and (async) context manager timing into
  ``sight_<name>_seconds``.
- :func:`log_context` / :func:`bind_log_context`: request and project ids on every log line,
  through :class:`LogContextFilter` (stdlib logging) or :func:`structlog_processor`.
- :func:`snapshot` to read everything; :func:`prometheus_text` / :func:`enable_prometheus`
  (extra ``prometheus``) and :func:`enable_opentelemetry` (extra ``otel``) to export.
- :func:`configure_observability`: apply ``SightSettings().observability`` at startup.

Imports only the standard library and :mod:`sight_core.errors`; exporters import their
library on first use.
"""

from ._histogram import HistogramSnapshot, LatencyHistogram
from ._logging import (
    LogContextFilter,
    bind_log_context,
    get_log_context,
    install_log_context,
    log_context,
    structlog_processor,
    uninstall_log_context,
)
from ._otel import OpenTelemetryBridge, enable_opentelemetry
from ._prometheus import (
    CONTENT_TYPE,
    PrometheusCollector,
    disable_prometheus,
    enable_prometheus,
    prometheus_text,
)
from ._registry import (
    Collector,
    LabelValue,
    MetricsRegistry,
    MetricsSnapshot,
    Sample,
    describe,
    get_registry,
    increment,
    observe,
    register_collector,
    reset,
    set_gauge,
    snapshot,
    unregister_collector,
)
from ._setup import ObservabilityConfig, configure_observability
from ._timed import metric_name, timed

__all__ = [
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
]
