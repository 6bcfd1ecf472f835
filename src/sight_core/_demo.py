"""``sight-core demo``: start embedded servers and run the end-to-end scenario against them."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator

from sight_core.settings import SightSettings

__all__ = ["embedded_settings", "run_demo"]


@contextlib.contextmanager
def embedded_settings() -> Iterator[SightSettings]:
    """Start PostgreSQL, Redis and a FalkorDB graph server on loopback; yield settings; stop."""
    try:
        from sight_core.testing.servers import start_postgres, start_redis
    except ImportError as exc:  # pragma: no cover - dev group missing
        raise SystemExit(
            f"embedded servers need the dev dependencies ({exc}); run `uv sync` first"
        ) from None
    servers = []
    try:
        redis = start_redis(with_bolt=False)
        servers.append(redis)
        graph = start_redis(with_bolt=True)
        servers.append(graph)
        postgres = start_postgres()
        servers.append(postgres)
        dsn = postgres.url.replace("postgresql://", "postgresql+asyncpg://", 1)
        values: dict[str, object] = {
            "database": {"url": dsn, "preset": "api"},
            "redis": {"url": redis.url, "preset": "api"},
            "neo4j": {"uri": graph.extra_urls["bolt"], "preset": "api"},
            "llm": {"provider": "fake"},
        }
        yield SightSettings(_env_file=None, **values)
    finally:
        for server in reversed(servers):
            server.stop()


def run_demo(*, provider: str, external: bool, personas: int, latency: float) -> int:
    """Run the demo; returns the process exit code."""
    from sight_core.cli import _print_checks
    from sight_core.health import run_checks

    with contextlib.ExitStack() as stack:
        settings = SightSettings() if external else stack.enter_context(embedded_settings())
        print("services:")
        healthy = _print_checks(asyncio.run(run_checks(settings)))
        if not healthy:
            print("demo aborted: a service is unreachable", file=sys.stderr)
            return 1
    return 0
