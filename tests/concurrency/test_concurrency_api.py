"""The public surface of sight_core.concurrency and its place in the foundation layer."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import sight_core.concurrency as concurrency

PUBLIC = {
    "AwaitableLike",
    "AwaitableSource",
    "BatchFn",
    "BatchLoader",
    "Limiter",
    "TaskSupervisor",
    "gather_limited",
    "map_limited",
}


def test_public_names_are_pinned() -> None:
    assert set(concurrency.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(concurrency, name) is not None


def test_imports_only_the_standard_library_and_errors() -> None:
    package = Path(concurrency.__file__).parent
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or name == "sight_core.errors", (
                    f"{module.name} imports {name}"
                )
