"""Every ```python block in docs/ runs, page by page, against the real test servers.

Blocks of one page share a namespace and one event loop and run in order; top-level ``await``
is allowed. ``SIGHT_REDIS__URL``, ``SIGHT_DATABASE__URL`` and ``SIGHT_NEO4J__URI`` point at the
session's servers, so examples load settings the way services do.
"""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.S | re.M
)


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """(line number, source) of each python block, dedented."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        if match.group("lang") not in ("python", "py"):
            continue
        indent = len(match.group("indent"))
        body = "\n".join(line[indent:] for line in match.group("body").splitlines())
        blocks.append((text.count("\n", 0, match.start("body")) + 1, body))
    return blocks


PAGES = sorted(p for p in DOCS.rglob("*.md") if python_blocks(p))


def test_docs_have_examples() -> None:
    assert PAGES, "no docs page has a python example"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_examples_run(
    page: Path, monkeypatch: pytest.MonkeyPatch, postgres_url: str, redis_url: str, bolt_uri: str
) -> None:
    monkeypatch.setenv("SIGHT_DATABASE__URL", postgres_url)
    monkeypatch.setenv("SIGHT_REDIS__URL", redis_url)
    monkeypatch.setenv("SIGHT_NEO4J__URI", bolt_uri)
    monkeypatch.setenv("SIGHT_LLM__PROVIDER", "fake")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}

    async def run_all() -> None:
        for line, source in python_blocks(page):
            filename = f"{page.relative_to(DOCS.parent)}:{line}"
            code = compile(
                source, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
            )
            result = eval(code, namespace)
            if asyncio.iscoroutine(result):
                await result

    asyncio.run(run_all())
