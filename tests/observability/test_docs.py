"""Runs the python blocks of docs/observability.md in order, in one namespace and event loop."""

import ast
import re
from pathlib import Path
from types import CodeType

import pytest

PAGE = Path(__file__).parents[2] / "docs" / "observability.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks() -> list[tuple[int, str]]:
    text = PAGE.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in FENCE.finditer(text)]


def compile_block(line: int, source: str) -> CodeType:
    code: CodeType = compile(
        "\n" * line + source, str(PAGE), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )
    return code


def test_page_has_bad_and_good_examples() -> None:
    text = PAGE.read_text()
    assert len(blocks()) >= 10
    assert text.count("**BAD**") >= 4
    assert text.count("**GOOD**") >= 4


async def test_python_blocks_run_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {"__name__": "docs_observability"}
    for line, source in blocks():
        result = eval(compile_block(line, source), namespace)
        if result is not None:  # a block with top-level await compiles to a coroutine
            await result
    out = capsys.readouterr().out
    assert "API P95 190." in out
    assert "req-1 proj-a INFO answering" in out
