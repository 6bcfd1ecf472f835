"""``RepositoryLoader`` needs only a batch function (issue 12.14: no import cycle)."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Hashable
from pathlib import Path

import pytest

import sight_core.db._loader as loader_module
from sight_core.db import RepositoryLoader
from sight_core.errors import NotFoundError


async def test_loader_coalesces_one_tick_into_one_batch_call_of_a_plain_function() -> None:
    calls: list[list[Hashable]] = []

    async def fetch(ids: list[Hashable]) -> list[str | None]:
        calls.append(list(ids))
        return [f"row {i}" if isinstance(i, int) and i < 100 else None for i in ids]

    loader: RepositoryLoader[str] = RepositoryLoader(fetch, model_name="Thing")
    rows = await asyncio.gather(*(loader.load(i) for i in [3, 1, 3, 2]))
    assert rows == ["row 3", "row 1", "row 3", "row 2"]
    assert loader.queries == 1 and calls == [[3, 1, 2]]

    assert await loader.load_or_none(500) is None
    with pytest.raises(NotFoundError) as caught:
        await loader.load(404)
    assert caught.value.model == "Thing" and caught.value.ident == 404
    assert repr(loader) == "<RepositoryLoader Thing queries=3>"


def test_loader_module_does_not_import_the_repository() -> None:
    tree = ast.parse(Path(loader_module.__file__).read_text())
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not any("_repository" in name for name in imported), imported
