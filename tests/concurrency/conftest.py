"""Fixtures for the concurrency tests."""

from __future__ import annotations

import asyncio

import pytest
from concurrency_probe import ManualClock, Probe


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    """Freeze the test's event-loop clock; the test moves it with ``advance_to``."""
    loop = asyncio.get_running_loop()
    manual = ManualClock(loop.time())
    monkeypatch.setattr(loop, "time", manual)
    return manual
