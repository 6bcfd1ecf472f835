"""Scanning files: discovery, config, unparsable files, selection and the summary."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sight_core.audit import AuditConfig, Priority, audit_paths, audit_source, load_config
from sight_core.errors import ConfigurationError

BAD = textwrap.dedent(
    """
    import asyncio
    import time

    async def handler(llm, items):
        time.sleep(1)
        asyncio.create_task(llm.ainvoke("x"))
        for item in items:
            await llm.ainvoke(item)
    """
)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_all_rules_run_in_one_scan_and_summary_counts_them(tmp_path: Path) -> None:
    _tree(tmp_path, {"app/routes.py": BAD, "app/ok.py": "x = 1\n"})
    result = audit_paths([tmp_path / "app"])
    assert [f.code for f in result.findings] == ["SC301", "SC501", "SC101"]
    assert result.files_scanned == 2
    summary = result.summary()
    assert summary["by_code"] == {"SC101": 1, "SC301": 1, "SC501": 1}
    assert summary["by_priority"] == {"P0": 2, "P1": 1, "P2": 0}
    assert summary["findings"] == 3
    assert summary["errors"] == 0


def test_finding_carries_location_snippet_why_fix_and_docs(tmp_path: Path) -> None:
    _tree(tmp_path, {"svc.py": BAD})
    (first,) = audit_paths([tmp_path / "svc.py"], select=["SC301"]).findings
    assert (first.line, first.col) == (6, 5)
    assert first.snippet == "time.sleep(1)"
    assert first.priority is Priority.P0
    assert first.why
    assert first.fix
    assert first.docs == "docs/pools.md"
    assert first.location.endswith("svc.py:6:5")


def test_unparsable_file_is_reported_and_skipped(tmp_path: Path) -> None:
    _tree(tmp_path, {"broken.py": "def f(:\n    pass\n", "good.py": BAD, "nul.py": "x = 1\0\n"})
    result = audit_paths([tmp_path])
    assert sorted(Path(e.path).name for e in result.errors) == ["broken.py", "nul.py"]
    broken = next(e for e in result.errors if e.path.endswith("broken.py"))
    assert broken.line == 1
    assert "syntax error" in broken.message
    assert result.files_scanned == 1
    assert len(result.findings) == 3


def test_undecodable_file_is_reported_and_skipped(tmp_path: Path) -> None:
    (tmp_path / "latin.py").write_bytes(b"x = '\xff\xfe'\n")
    result = audit_paths([tmp_path])
    assert len(result.errors) == 1
    assert result.files_scanned == 0


def test_default_excludes_skip_virtualenvs_and_caches(tmp_path: Path) -> None:
    _tree(tmp_path, {".venv/lib/x.py": BAD, "node_modules/y.py": BAD, "src/z.py": BAD})
    result = audit_paths([tmp_path])
    assert result.files_scanned == 1
    assert {Path(f.path).name for f in result.findings} == {"z.py"}


def test_select_and_ignore_accept_prefixes() -> None:
    assert [f.code for f in audit_source(BAD, select=["SC3", "SC5"]).findings] == [
        "SC301",
        "SC501",
    ]
    assert [f.code for f in audit_source(BAD, ignore=["SC1", "SC501"]).findings] == ["SC301"]


def test_unknown_code_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="SC999"):
        audit_source(BAD, select=["SC999"])


def test_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        audit_paths([tmp_path / "nope"])


def test_pyproject_section_configures_the_scan(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "pyproject.toml": textwrap.dedent(
                """
                [tool.sight-core.audit]
                ignore = ["SC101"]
                fail-on = "P0"
                exclude = ["migrations"]
                per-file-ignores = { "scripts/*.py" = ["SC3"] }
                """
            ),
            "app/svc.py": BAD,
            "migrations/001.py": BAD,
            "scripts/backfill.py": BAD,
        },
    )
    config = load_config(tmp_path / "app")
    assert config.fail_on is Priority.P0
    assert config.root == tmp_path
    result = audit_paths([tmp_path])
    by_file: dict[str, list[str]] = {}
    for f in result.findings:
        by_file.setdefault(Path(f.path).name, []).append(f.code)
    assert by_file == {"svc.py": ["SC301", "SC501"], "backfill.py": ["SC501"]}
    assert result.files_scanned == 2


def test_explicit_select_overrides_config(tmp_path: Path) -> None:
    _tree(tmp_path, {"pyproject.toml": '[tool.sight-core.audit]\nselect = ["SC5"]\n', "a.py": BAD})
    assert [f.code for f in audit_paths([tmp_path]).findings] == ["SC501"]
    assert [f.code for f in audit_paths([tmp_path], select=["SC301"]).findings] == ["SC301"]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('selekt = ["SC1"]', "unknown key 'selekt'"),
        ('fail-on = "P9"', "fail-on"),
        ('ignore = ["SC9"]', "SC9"),
        ("exclude = 3", "exclude must be a list"),
    ],
)
def test_invalid_config_is_rejected(tmp_path: Path, section: str, message: str) -> None:
    (tmp_path / "pyproject.toml").write_text(f"[tool.sight-core.audit]\n{section}\n")
    with pytest.raises(ConfigurationError, match=message):
        load_config(tmp_path)


def test_no_pyproject_gives_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    if config.root is None:  # no pyproject above the temp dir
        assert config == AuditConfig()
    assert config.fail_on is Priority.P1


SAMPLE = textwrap.dedent(
    """
    import asyncio
    from redis.asyncio import Redis as R

    class PersonaService:
        limit = [x for x in range(3)]

        async def enrich(self, ids):
            for i in ids:
                await self.llm.ainvoke(str(i))
            return lambda: asyncio.gather(*(self.one(i) for i in ids))

    def helper():
        try:
            import json
        except ImportError:
            pass
    """
)


def test_iterative_index_matches_recursive_index() -> None:
    import ast

    from sight_core.audit._context import FileContext

    tree = ast.parse(SAMPLE)
    fast = FileContext.build("s.py", SAMPLE, tree)
    slow = FileContext(path="s.py", source=SAMPLE, tree=tree)
    slow._index_iterative(tree)
    assert fast.parents == slow.parents
    assert fast._scopes == slow._scopes
    assert fast._members == slow._members
    assert fast._binders == slow._binders
    assert (fast.calls, fast.loops, fast.functions, fast.trys) == (
        slow.calls,
        slow.loops,
        slow.functions,
        slow.trys,
    )
    assert (
        fast.imports
        == slow.imports
        == {
            "asyncio": "asyncio",
            "R": "redis.asyncio.Redis",
            "json": "json",
        }
    )


def test_recursion_limit_in_indexing_falls_back_to_iterative(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sight_core.audit._context import FileContext

    expected = [(f.code, f.line) for f in audit_source(BAD).findings]

    def too_deep(self: FileContext, tree: object) -> None:
        raise RecursionError

    monkeypatch.setattr(FileContext, "_index_recursive", too_deep)
    assert [(f.code, f.line) for f in audit_source(BAD).findings] == expected


def test_recursion_error_in_a_rule_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    from sight_core.audit._rules import _common

    def boom(*args: object, **kwargs: object) -> bool:
        raise RecursionError

    monkeypatch.setattr(_common, "has_early_exit", boom)
    monkeypatch.setattr("sight_core.audit._rules.concurrency.has_early_exit", boom)
    result = audit_source(BAD, "deep.py")
    assert result.findings == []
    assert [(e.path, e.message) for e in result.errors] == [
        ("deep.py", "too deeply nested to analyse")
    ]
    assert result.files_scanned == 0


def test_jobs_is_accepted_and_gives_the_same_result(tmp_path: Path) -> None:
    files = {f"pkg{i % 3}/m{i}.py": BAD if i % 2 else "x = 1\n" for i in range(8)}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    serial = audit_paths([tmp_path], jobs=1)
    every_cpu = audit_paths([tmp_path], jobs=0)
    assert every_cpu.findings == serial.findings
    assert serial.files_scanned == 8
    assert len(serial.findings) == 3 * 4


def test_negative_jobs_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="jobs"):
        audit_paths([tmp_path], jobs=-1)


def test_a_rule_bug_is_reported_for_the_file_and_the_scan_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sight_core.audit._rules import tasks

    def broken(*args: object) -> bool:
        raise KeyError("boom")

    monkeypatch.setattr(tasks, "_is_spawn", broken)
    _tree(tmp_path, {"a.py": BAD, "b.py": "x = 1\n"})
    result = audit_paths([tmp_path], select=["SC5"])
    assert result.files_scanned == 1
    (error,) = result.errors
    assert error.path.endswith("a.py")
    assert error.message.startswith("internal error in tasks rules: KeyError")
