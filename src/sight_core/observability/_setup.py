"""``configure_observability``: apply ``SightSettings().observability`` in one call at startup."""

from __future__ import annotations

from typing import Protocol

from ._logging import install_log_context
from ._registry import MetricsRegistry, get_registry

__all__ = ["ObservabilityConfig", "configure_observability"]


class ObservabilityConfig(Protocol):
    """What :func:`configure_observability` reads; ``ObservabilitySettings`` satisfies it."""

    @property
    def service_name(self) -> str: ...
    @property
    def prometheus(self) -> bool: ...
    @property
    def opentelemetry(self) -> bool: ...
    @property
    def log_context(self) -> bool: ...
    @property
    def slow_call_ms(self) -> float: ...


def configure_observability(
    settings: ObservabilityConfig, *, registry: MetricsRegistry | None = None
) -> None:
    """Apply observability settings (call once at startup, after logging is configured).

    - ``log_context``: attach :class:`LogContextFilter` to the root logger's handlers;
    - ``slow_call_ms``: ``timed`` logs a warning on ``sight_core.observability`` for slower calls;
    - ``prometheus``: :func:`enable_prometheus` on ``prometheus_client.REGISTRY``;
    - ``opentelemetry``: :func:`enable_opentelemetry` with meter name ``service_name``.

    Idempotent. Raises:
        MissingDependencyError: an exporter is enabled but its extra is not installed.
    """
    target = registry or get_registry()
    target.slow_call_seconds = settings.slow_call_ms / 1000.0
    if settings.log_context:
        install_log_context()
    if settings.prometheus:
        from ._prometheus import enable_prometheus

        enable_prometheus(source=target)
    if settings.opentelemetry:
        from ._otel import enable_opentelemetry

        enable_opentelemetry(source=target, meter_name=settings.service_name)
