"""``main(argv)``: exit codes, formats (text, JSON, SARIF 2.1.0), summary, usage errors."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import sight_core.audit as audit_api
from sight_core.audit import RULES, audit_source, main, render

P0_AND_P1 = textwrap.dedent(
    """
    import asyncio

    async def handler(llm, items):
        asyncio.create_task(llm.ainvoke("x"))
        for item in items:
            await llm.ainvoke(item)
    """
)
ONLY_P2 = textwrap.dedent(
    """
    async def get(redis, llm, pid):
        raw = await redis.get(f"summary:v1:{pid}")
        if raw:
            return raw.decode()
        text = (await llm.ainvoke(str(pid))).content
        await redis.set(f"summary:v1:{pid}", text)
        return text
    """
)


@pytest.fixture
def service(tmp_path: Path) -> Path:
    (tmp_path / "svc.py").write_text(P0_AND_P1)
    (tmp_path / "cache.py").write_text(ONLY_P2)
    (tmp_path / "clean.py").write_text("async def ok(llm):\n    return await llm.ainvoke('x')\n")
    return tmp_path


def test_exit_code_one_when_findings_reach_fail_on(service: Path) -> None:
    assert main([str(service)]) == 1


def test_fail_on_p0_ignores_lower_priorities(service: Path) -> None:
    assert main([str(service / "cache.py"), "--fail-on", "P0"]) == 0
    assert main([str(service / "cache.py"), "--fail-on", "p2"]) == 1
    assert main([str(service / "svc.py"), "--fail-on", "P0"]) == 1


def test_exit_zero_on_clean_code(service: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(service / "clean.py")]) == 0
    assert "0 finding(s) in 1 file(s)" in capsys.readouterr().out


def test_usage_errors_exit_two(service: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main([str(service / "missing")]) == 2
    assert main([str(service), "--select", "SC999"]) == 2
    assert main([str(service), "--format", "xml"]) == 2
    assert main([str(service), "--fail-on", "P7"]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err
    assert "SC999" in err


def test_bad_pyproject_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.sight-core.audit]\nselect = [")
    (tmp_path / "a.py").write_text("x = 1\n")
    assert main([str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_parse_errors_are_listed_but_do_not_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken.py").write_text("def f(:\n")
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "broken.py:1: error: syntax error" in out
    assert "1 file(s) skipped" in out


def test_text_report_shows_finding_why_fix_and_summary(
    service: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main([str(service / "svc.py")])
    out = capsys.readouterr().out
    assert "svc.py:5:5: SC501 [P0]" in out
    assert '    | asyncio.create_task(llm.ainvoke("x"))' in out
    assert "why: " in out
    assert "(https://sight-core.readthedocs.io/en/latest/fanout/)" in out
    assert "2 finding(s) in 1 file(s)" in out
    assert "P0 1, P1 1, P2 0" in out
    assert "SC101 sequential-awaits-in-loop" in out


def test_json_report_shape(service: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(service), "--format", "json", "--select", "SC1,SC5"]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert [f["code"] for f in payload["findings"]] == ["SC501", "SC101"]
    first = payload["findings"][0]
    assert set(first) == {
        "code",
        "priority",
        "path",
        "line",
        "col",
        "snippet",
        "message",
        "why",
        "fix",
        "docs",
        "docs_url",
        "chain",
    }
    assert first["priority"] == "P0"
    assert payload["summary"]["files_scanned"] == 3
    assert payload["summary"]["by_code"] == {"SC101": 1, "SC501": 1}
    assert payload["errors"] == []


def test_sarif_report_shape(service: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.sarif"
    assert main([str(service), "--format", "sarif", "-o", str(out)]) == 1
    log = json.loads(out.read_text())
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-2.1.0.json")
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "sight-core audit"
    assert [r["id"] for r in driver["rules"]] == [r.code for r in RULES]
    levels = {r["ruleId"]: r["level"] for r in run["results"]}
    assert levels == {"SC501": "error", "SC101": "warning", "SC401": "note"}
    for result in run["results"]:
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        region = result["locations"][0]["physicalLocation"]["region"]
        assert region["startLine"] >= 1
        assert region["startColumn"] >= 1
        assert region["snippet"]["text"]
    assert run["invocations"][0]["executionSuccessful"] is True


def test_output_file_prints_a_summary_line_and_bad_output_is_a_usage_error(
    service: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    assert main([str(service / "svc.py"), "--format", "json", "-o", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "2 finding(s) (P0 1, P1 1, P2 0) in 1 file(s)" in captured.err
    assert json.loads(out.read_text())["summary"]["findings"] == 2
    assert main([str(service), "-o", str(tmp_path / "missing-dir" / "r.txt")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_sarif_lists_skipped_files_as_notifications(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def f(:\n")
    from sight_core.audit import audit_paths

    log = json.loads(render(audit_paths([tmp_path]), "sarif"))
    (note,) = log["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert note["locations"][0]["physicalLocation"]["region"]["startLine"] == 1


def test_list_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-rules"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(RULES)
    assert lines[0].startswith("SC001")


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "sight-core audit" in capsys.readouterr().out


def test_every_rule_is_documented_with_a_docs_page() -> None:
    docs = Path(__file__).parents[2] / "docs"
    codes = [r.code for r in RULES]
    assert len(codes) == len(set(codes))
    for rule in RULES:
        assert rule.docs.startswith("docs/")
        assert rule.docs.endswith(".md")
        assert rule.why
        assert rule.fix
        assert rule.summary
    page = docs / "audit-rules.md"
    if page.exists():
        text = page.read_text()
        for code in codes:
            assert f"## {code}" in text, code


def test_public_names_are_pinned() -> None:
    assert sorted(audit_api.__all__) == sorted(
        [
            "RULES",
            "AuditConfig",
            "AuditResult",
            "FileError",
            "Finding",
            "Priority",
            "Rule",
            "audit_paths",
            "audit_source",
            "load_config",
            "main",
            "render",
        ]
    )


def test_audit_source_does_not_execute_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    source = f"open({str(marker)!r}, 'w').write('x')\nimport this_module_does_not_exist\n"
    assert audit_source(source).findings == []
    assert not marker.exists()
