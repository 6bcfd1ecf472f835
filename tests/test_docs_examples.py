"""Every ```python block in docs/ runs, page by page, the way a reader runs it.

Each page runs in a fresh Python process whose environment holds only what
``sight-core servers`` prints (``SIGHT_DATABASE__URL``, ``SIGHT_REDIS__URL``,
``SIGHT_NEO4J__URI``, ``SIGHT_LLM__PROVIDER=fake``) plus ``PATH`` and ``HOME``; each page gets
its own database, an empty Redis and an empty graph. The blocks of a page run in order in one
namespace with top-level ``await`` (as in ``python -m asyncio``), which is what every page says
once through the shared snippet ``docs/.snippets/run-examples.md``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sight_core._demo import server_environment
from sight_core.settings import SightSettings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
HOW_TO_RUN = '--8<-- "docs/.snippets/run-examples.md"'
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.S | re.M
)

# Runs in the child: the page's blocks in order, one namespace, one event loop.
RUNNER = r"""
import ast, asyncio, re, sys
from pathlib import Path

page = Path(sys.argv[1])
fence = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.S | re.M
)
text = page.read_text(encoding="utf-8")
namespace = {"__name__": "__main__"}


async def main():
    for match in fence.finditer(text):
        if match.group("lang") not in ("python", "py"):
            continue
        indent = len(match.group("indent"))
        source = "\n".join(line[indent:] for line in match.group("body").splitlines())
        line = text.count("\n", 0, match.start("body")) + 1
        code = compile(
            source, f"{page}:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            dont_inherit=True,
        )
        result = eval(code, namespace)
        if asyncio.iscoroutine(result):
            await result


asyncio.run(main())
"""


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
def test_page_says_once_how_to_run_its_examples(page: Path) -> None:
    assert page.read_text(encoding="utf-8").count(HOW_TO_RUN) == 1, (
        f"{page.name}: add the line {HOW_TO_RUN} once, before its first example"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_examples_run(
    page: Path, postgres_url: str, redis_client: object, redis_url: str, bolt_uri: str
) -> None:
    servers = SightSettings(
        _env_file=None,
        database={"url": postgres_url},
        redis={"url": redis_url},
        neo4j={"uri": bolt_uri},
    )
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env.update(server_environment(servers))
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(page)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{page.name}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
