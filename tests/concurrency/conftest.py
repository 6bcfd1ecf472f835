"""Fixtures for the concurrency tests."""

from __future__ import annotations

import pytest
from concurrency_probe import Probe


@pytest.fixture
def probe() -> Probe:
    return Probe()
