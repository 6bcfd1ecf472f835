"""The public surface of sight_core.resilience is pinned, typed and layered."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import assert_type

import sight_core.resilience as resilience
from sight_core.errors import CircuitOpenError
from sight_core.resilience import CircuitBreaker, RetryPolicy, retrying

EXPECTED = {
    "STATUS_KINDS",
    "BreakerConfig",
    "BreakerListener",
    "BreakerState",
    "BreakerStore",
    "CircuitBreaker",
    "CircuitInfo",
    "Classification",
    "Classifier",
    "ErrorKind",
    "ExcludeRule",
    "Grant",
    "MemoryBreakerStore",
    "RedisBreakerStore",
    "RetryCallback",
    "RetryEvent",
    "RetryPolicy",
    "Snapshot",
    "TestingMode",
    "circuit_of",
    "classify",
    "cooldown_for",
    "is_testing",
    "parse_retry_after",
    "retried_by",
    "retrying",
    "set_testing",
}


def test_public_names_are_pinned() -> None:
    assert set(resilience.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(resilience, name) is not None


def test_only_foundation_is_imported() -> None:
    """Domain infra: may import errors, settings and observability, never llm/cache/db."""
    package = Path(resilience.__file__).parent
    allowed = {"sight_core.errors", "sight_core.settings", "sight_core.observability"}
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):  # `import langchain_core` must fail this too
                for alias in node.names:
                    assert not alias.name.startswith(
                        ("sight_core", "langchain", "google", "httpx", "redis", "aiohttp")
                    ), f"{path.name} imports {alias.name}"
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "sight_core":
                    names = {f"sight_core.{alias.name}" for alias in node.names}
                    assert names <= allowed, f"{path.name} imports {names}"
                elif node.module.startswith("sight_core"):
                    assert node.module in allowed, f"{path.name} imports {node.module}"
                assert not node.module.startswith(("langchain", "google", "httpx", "redis")) or (
                    path.name == "_redis_store.py" and node.module.startswith("redis")
                ), f"{path.name} imports {node.module} at module level"


async def test_decorated_functions_keep_their_types() -> None:
    """Checked by mypy too (``uv run mypy tests/resilience/test_resilience_api.py``)."""
    breaker = CircuitBreaker("typing")

    @retrying(max_attempts=2)
    async def fetch(key: str, *, fresh: bool = False) -> int:
        return len(key) + fresh

    @breaker
    async def guarded(n: int) -> str:
        return str(n)

    assert_type(await fetch("ab", fresh=True), int)
    assert_type(await guarded(3), str)
    assert_type(await RetryPolicy().call(fetch, "abc"), int)
    assert_type(await breaker.call(guarded, 4), str)
    assert await fetch("ab", fresh=True) == 3
    assert isinstance(CircuitOpenError("x"), Exception)
