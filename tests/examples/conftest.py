"""Fixtures for the example service: its app on the test servers, driven over ASGI."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.sight_service import create_app  # noqa: E402
from sight_core.llm import clear_model_cache  # noqa: E402
from sight_core.settings import SightSettings  # noqa: E402


@pytest.fixture
def settings(postgres_url: str, redis_url: str) -> SightSettings:
    """Test presets, the fake provider with a small latency so fan-outs overlap."""
    values: Any = {
        "database": {"url": postgres_url, "preset": "test"},
        "redis": {"url": redis_url, "preset": "test"},
        "llm": {"provider": "fake", "fake_latency": 0.01},
    }
    return SightSettings(_env_file=None, **values)


@pytest.fixture
async def app(settings: SightSettings) -> AsyncIterator[Any]:
    clear_model_cache()
    application = create_app(settings, focus_limit=4)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sight.test") as http:
        yield http
