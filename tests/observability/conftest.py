from collections.abc import Iterator

import pytest

from sight_core.observability import MetricsRegistry, get_registry


@pytest.fixture(autouse=True)
def _clean_global_registry() -> Iterator[None]:
    """Run each test on an empty process-wide registry, then give other suites theirs back.

    Collectors registered by earlier tests (a Cache, an LLM model) are set aside for the test
    and restored afterwards, so these tests see only what they record.
    """
    registry = get_registry()
    kept = list(registry._collectors)
    registry.reset(collectors=True)
    yield
    registry.reset(collectors=True)
    for collector in kept:
        registry.register_collector(collector)


@pytest.fixture
def registry() -> MetricsRegistry:
    return MetricsRegistry()
