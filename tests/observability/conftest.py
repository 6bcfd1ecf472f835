from collections.abc import Iterator

import pytest

from sight_core.observability import MetricsRegistry, get_registry


@pytest.fixture(autouse=True)
def _clean_global_registry() -> Iterator[None]:
    get_registry().reset()
    yield
    get_registry().reset()


@pytest.fixture
def registry() -> MetricsRegistry:
    return MetricsRegistry()
