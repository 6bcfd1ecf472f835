"""The project index: calls resolved across modules, summaries to a fixpoint, chains shown."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from sight_core.audit import AuditResult, audit_paths, audit_source, render
from sight_core.audit._context import FileContext
from sight_core.audit._project import ProjectIndex


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


SERVICE = {
    "app/__init__.py": "",
    "app/db/__init__.py": "from .store import get_vector_store as get_store\n",
    "app/db/store.py": """
        import time

        def _retry(connect, attempts=5):
            for attempt in range(attempts):
                try:
                    return connect()
                except OSError:
                    time.sleep(2 ** attempt)

        def get_vector_store():
            return _retry(lambda: object())
    """,
    "app/api/__init__.py": "",
    "app/api/health.py": """
        from fastapi import APIRouter
        from ..db import get_store

        router = APIRouter()

        @router.get("/health")
        async def health():
            store = get_store()
            return {"ok": store is not None}
    """,
}


def test_blocking_chain_crosses_modules_relative_imports_and_reexports(tmp_path: Path) -> None:
    _write(tmp_path, SERVICE)
    result = audit_paths([tmp_path / "app"], select=["SC301"])
    (found,) = result.findings
    assert found.path.endswith("app/api/health.py")
    assert found.line == 9
    assert found.chain_text == "health() -> get_vector_store() -> _retry() -> time.sleep"
    assert [(Path(h.path).name, h.line) for h in found.chain] == [
        ("health.py", 8),
        ("health.py", 9),
        ("store.py", 12),
        ("store.py", 9),
    ]
    assert "health() -> get_vector_store() -> _retry() -> time.sleep" in found.message


def test_the_chain_is_in_text_json_and_sarif(tmp_path: Path) -> None:
    _write(tmp_path, SERVICE)
    result = audit_paths([tmp_path / "app"], select=["SC301"])
    text = render(result, "text")
    assert "via: health() -> get_vector_store() -> _retry() -> time.sleep" in text
    payload = json.loads(render(result, "json"))
    assert [h["label"] for h in payload["findings"][0]["chain"]] == [
        "health()",
        "get_vector_store()",
        "_retry()",
        "time.sleep",
    ]
    assert (
        payload["findings"][0]["docs_url"] == "https://sight-core.readthedocs.io/en/latest/pools/"
    )
    log = json.loads(render(result, "sarif", docs_base="https://docs.example.com/sight/"))
    run = log["runs"][0]
    (sarif,) = run["results"]
    uri = sarif["locations"][0]["physicalLocation"]["artifactLocation"]
    assert uri == {"uri": "api/health.py", "uriBaseId": "SRCROOT"}
    related = sarif["relatedLocations"]
    assert [r["message"]["text"] for r in related][-1] == "time.sleep"
    assert related[-1]["physicalLocation"]["artifactLocation"]["uri"] == "db/store.py"
    assert related[-1]["physicalLocation"]["region"]["startLine"] == 9
    rule = next(r for r in run["tool"]["driver"]["rules"] if r["id"] == "SC301")
    assert rule["helpUri"] == "https://docs.example.com/sight/pools/"
    assert run["originalUriBaseIds"]["SRCROOT"]["uri"].endswith("/app/")


def test_docs_base_comes_from_pyproject(tmp_path: Path) -> None:
    _write(tmp_path, SERVICE)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.sight-core.audit]\ndocs-base = "https://docs.example.com/sc"\n'
    )
    result = audit_paths([tmp_path / "app"], select=["SC301"])
    assert result.findings[0].docs_url == "https://docs.example.com/sc/pools/"


def test_methods_resolve_through_self_cls_and_bases() -> None:
    source = """
        import time

        class Base:
            def _wait(self):
                time.sleep(1)

        class Service(Base):
            @classmethod
            def _pause(cls):
                cls._really_pause()

            @classmethod
            def _really_pause(cls):
                time.sleep(1)

            async def handle(self):
                self._wait()
                self._pause()
    """
    result = audit_source(textwrap.dedent(source), "svc.py", select=["SC301"])
    assert [(f.line, f.chain_text) for f in result.findings] == [
        (18, "Service.handle() -> Base._wait() -> time.sleep"),
        (19, "Service.handle() -> Service._pause() -> Service._really_pause() -> time.sleep"),
    ]


def test_aliases_and_nested_functions_resolve_unknown_calls_are_not_guessed() -> None:
    source = """
        import time

        def _nap():
            time.sleep(1)

        nap = _nap

        async def handler(obj, callbacks):
            nap()
            obj.nap()           # unknown receiver: not guessed
            callbacks["nap"]()  # not a name: unknown

            def inner():
                _nap()

            inner()
    """
    result = audit_source(textwrap.dedent(source), "svc.py", select=["SC301"])
    assert [(f.line, f.chain_text) for f in result.findings] == [
        (10, "handler() -> _nap() -> time.sleep"),
        (17, "handler() -> handler.inner() -> _nap() -> time.sleep"),
    ]


def test_summaries_reach_a_fixpoint_through_cycles() -> None:
    source = textwrap.dedent(
        """
        import time

        def ping(n):
            if n:
                pong(n - 1)

        def pong(n):
            ping(n)
            time.sleep(1)

        async def llm_leaf(llm):
            return await llm.ainvoke("x")

        async def middle(llm):
            return await llm_leaf(llm)

        async def top(llm):
            return await middle(llm)
        """
    )
    tree = ast.parse(source)
    ctx = FileContext.build("m.py", source, tree)
    index = ProjectIndex()
    index.add(ctx, ["m"])
    index.build()
    by_name = {f.qualname: f for f in index.functions()}
    assert by_name["ping"] in index.blocks and by_name["pong"] in index.blocks
    found = index.network_chain(by_name["top"], ["llm"])
    assert found is not None
    category, hops = found
    assert category == "llm"
    assert [h.label for h in hops] == ["top()", "middle()", "llm_leaf()", "llm.ainvoke"]
    assert index.network_chain(by_name["ping"], ["llm"]) is None


def test_a_chain_longer_than_any_round_cap_still_settles() -> None:
    # helpers written top-down (caller first): each sweep in file order moves one hop, so
    # a capped number of sweeps left the top of a 60-deep chain unmarked
    depth = 60
    lines = ["import time", "", "async def handler():", "    step0()", ""]
    lines += [f"def step{i}():\n    step{i + 1}()\n" for i in range(depth)]
    lines += [f"def step{depth}():\n    time.sleep(1)\n"]
    result = audit_source("\n".join(lines), "deep.py", select=["SC301"])
    assert [(f.code, f.line) for f in result.findings] == [("SC301", 4)]
    labels = [h.label for h in result.findings[0].chain]
    assert labels == ["handler()", *(f"step{i}()" for i in range(depth + 1)), "time.sleep"]


def test_request_reach_follows_routes_dependencies_and_constructors() -> None:
    source = textwrap.dedent(
        """
        from fastapi import APIRouter, Depends

        router = APIRouter()

        class ChatService:
            def __init__(self):
                self.helper = build_helper()

        def build_helper():
            return 1

        def get_chat_service():
            return ChatService()

        def offline_job():
            return ChatService()

        @router.post("/chat")
        async def chat(service: ChatService = Depends(get_chat_service)):
            return service
        """
    )
    ctx = FileContext.build("m.py", source, ast.parse(source))
    index = ProjectIndex()
    index.add(ctx, ["m"])
    index.build()
    by_name = {f.qualname: f for f in index.functions()}
    chain = index.request_chain(by_name["build_helper"])
    assert chain is not None
    assert [h.label for h in chain] == [
        "get_chat_service()",
        "ChatService.__init__()",
        "build_helper()",
    ]
    assert index.request_chain(by_name["offline_job"]) is None


def test_a_docs_base_that_is_not_a_url_is_rejected_naming_the_value(tmp_path: Path) -> None:
    import pytest

    from sight_core.audit import load_config
    from sight_core.errors import ConfigurationError

    (tmp_path / "pyproject.toml").write_text('[tool.sight-core.audit]\ndocs-base = "docs/"\n')
    with pytest.raises(ConfigurationError, match=r"docs-base must be an http\(s\) URL.*'docs/'"):
        load_config(tmp_path)


def test_calls_on_objects_resolve_only_when_the_class_is_stated() -> None:
    source = """
        import time

        class Index:
            def search(self, q):
                time.sleep(1)

        class Finder:
            def __init__(self):
                self.index = Index()

            async def find(self, q):
                return self.index.search(q)

        async def annotated(index: Index, q):
            return index.search(q)

        async def built_here(q):
            index = Index()
            return index.search(q)

        async def unknown(index, q):
            return index.search(q)

        async def ambiguous(flag, q):
            index = Index() if flag else object()
            return index.search(q)
    """
    result = audit_source(textwrap.dedent(source), "svc.py", select=["SC301"])
    assert [(f.line, f.chain_text) for f in result.findings] == [
        (13, "Finder.find() -> Index.search() -> time.sleep"),
        (16, "annotated() -> Index.search() -> time.sleep"),
        (20, "built_here() -> Index.search() -> time.sleep"),
    ]


def test_sarif_base_uri_of_the_filesystem_root_has_one_slash() -> None:
    log = json.loads(render(AuditResult(root="/"), "sarif"))
    assert log["runs"][0]["originalUriBaseIds"]["SRCROOT"]["uri"] == "file:///"


def test_methods_resolve_in_python_method_resolution_order() -> None:
    # Service.__mro__ is Service, Mixin, AsyncReady, Base: self.connect() runs
    # AsyncReady.connect (no I/O), not Base.connect (depth-first would pick it)
    source = textwrap.dedent(
        """
        import time

        class Base:
            def connect(self):
                time.sleep(1)

            def __init__(self):
                time.sleep(1)

        class Mixin(Base):
            pass

        class AsyncReady(Base):
            def connect(self):
                return None

            def __init__(self):
                super().__init__()

        class Service(Mixin, AsyncReady):
            def __init__(self):
                super().__init__()

            async def handle(self):
                self.connect()

        async def build():
            Service()
        """
    )
    result = audit_source(source, "mro.py", select=["SC301"])
    assert [f.line for f in result.findings] == [29]  # Service(), not self.connect()
    labels = [h.label for h in result.findings[0].chain]
    assert labels == [
        "build()",
        "Service.__init__()",
        "AsyncReady.__init__()",
        "Base.__init__()",
        "time.sleep",
    ]


def test_the_chain_is_the_same_in_every_run(tmp_path: Path) -> None:
    # five same-named dependencies reach one factory: the chain shown must not depend on
    # set order (memory addresses), which changes with PYTHONHASHSEED
    files = {
        "app/__init__.py": "",
        "app/svc.py": """
            import httpx

            class Service:
                def __init__(self):
                    self.client = httpx.AsyncClient()

            def make():
                return Service()
        """,
    }
    for name in "abcde":
        files[f"app/{name}.py"] = """
            from fastapi import Depends
            from .svc import make

            def get_service():
                return make()

            def use(svc=Depends(get_service)):
                pass
        """
    _write(tmp_path, files)
    script = "import sys; from sight_core.cli import main; sys.exit(main())"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script, "audit", "--format", "json", str(tmp_path / "app")],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
        ).stdout
        for seed in range(6)
    }
    chains = {json.dumps(json.loads(out)["findings"][0]["chain"]) for out in outputs}
    assert len(chains) == 1, chains
