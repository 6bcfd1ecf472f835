import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY, generate_latest

from sight_core.observability import (
    MetricsRegistry,
    _otel,
    _prometheus,
    configure_observability,
    disable_prometheus,
    get_registry,
    timed,
    uninstall_log_context,
)
from sight_core.observability import _timed as timed_module
from sight_core.settings import ObservabilitySettings


@dataclass
class Config:
    service_name: str = "sight-test"
    prometheus: bool = False
    opentelemetry: bool = False
    log_context: bool = False
    slow_call_ms: float = 500.0


@pytest.fixture
def restore() -> Iterator[None]:
    yield
    get_registry().slow_call_seconds = float("inf")
    disable_prometheus()
    for key, bridge in list(_otel._bridges.items()):
        bridge.close()
        del _otel._bridges[key]
    uninstall_log_context()


def test_slow_calls_are_logged_with_name_and_labels_only(
    restore: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    monkeypatch.setattr(timed_module, "perf_counter", lambda: now[0])
    configure_observability(Config(slow_call_ms=250))

    @timed("persona.generate", tier="pro")
    def generate(secret_prompt: str, took: float) -> None:
        now[0] += took

    with caplog.at_level(logging.WARNING, logger="sight_core.observability"):
        generate("do not log me", 0.1)
        generate("do not log me", 0.3)
    (record,) = caplog.records
    assert record.getMessage() == "slow call: sight_persona_generate_seconds tier=pro took 300 ms"
    assert "do not log me" not in record.getMessage()


def test_configure_enables_what_the_settings_ask(restore: None) -> None:
    registry = MetricsRegistry()
    registry.increment("sight_configured_total")
    root = logging.getLogger()
    handler = logging.NullHandler()
    root.addHandler(handler)
    try:
        settings = Config(prometheus=True, opentelemetry=True, log_context=True)
        configure_observability(settings, registry=registry)
        configure_observability(settings, registry=registry)  # idempotent
        assert b"sight_configured_total 1.0" in generate_latest(REGISTRY)
        assert len(handler.filters) == 1
        (bridge,) = _otel._bridges.values()
        assert "sight_configured_total" in bridge.instruments
        assert registry.slow_call_seconds == 0.5
    finally:
        root.removeHandler(handler)


def test_default_settings_touch_no_exporter(restore: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(_prometheus, "enable_prometheus", lambda **kw: calls.append("prom"))
    monkeypatch.setattr(_otel, "enable_opentelemetry", lambda **kw: calls.append("otel"))
    configure_observability(ObservabilitySettings())
    assert calls == []
    configure_observability(ObservabilitySettings(prometheus=True, opentelemetry=True))
    assert calls == ["prom", "otel"]
