"""Output formats: human text with a summary, JSON, and SARIF 2.1.0 for code-scanning UIs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from ._model import DEFAULT_DOCS_BASE, AuditResult, Priority, docs_url
from ._rules import RULES

__all__ = ["Format", "render"]

Format = Literal["text", "json", "sarif"]

_SARIF_LEVEL = {Priority.P0: "error", Priority.P1: "warning", Priority.P2: "note"}
_SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def render(result: AuditResult, fmt: Format = "text", *, docs_base: str = DEFAULT_DOCS_BASE) -> str:
    """``result`` as text (findings then a summary), JSON or a SARIF 2.1.0 log.

    ``docs_base`` is where the rule pages are published (the SARIF rules' ``helpUri``);
    each finding already carries its own ``docs_url``. SARIF paths are relative to
    ``result.root`` (``uriBaseId`` ``SRCROOT``).
    """
    if fmt == "json":
        return _json(result)
    if fmt == "sarif":
        return _sarif(result, docs_base)
    return _text(result)


def _text(result: AuditResult) -> str:
    out: list[str] = []
    for f in result.findings:
        out.append(f"{f.location}: {f.code} [{f.priority.name}] {f.message}")
        out.append(f"    | {f.snippet}")
        if f.chain:
            out.append(f"    via: {f.chain_text}")
            for hop in f.chain[1:]:
                out.append(f"      {hop.path}:{hop.line}: {hop.label}")
        out.append(f"    why: {f.why}")
        out.append(f"    fix: {f.fix} ({f.docs_url or f.docs})")
        out.append("")
    for e in result.errors:
        out.append(f"{e.path}:{e.line}: error: {e.message} (file skipped)")
    if result.errors:
        out.append("")
    names = {r.code: r.name for r in RULES}
    prio = result.by_priority()
    out.append(
        f"{len(result.findings)} finding(s) in {result.files_scanned} file(s) "
        f"in {result.elapsed:.2f}s: P0 {prio['P0']}, P1 {prio['P1']}, P2 {prio['P2']}"
        + (f"; {result.suppressed} suppressed" if result.suppressed else "")
        + (f"; {len(result.errors)} file(s) skipped" if result.errors else "")
    )
    for code, count in result.by_code().items():
        out.append(f"  {code} {names.get(code, ''):<28} {count}")
    return "\n".join(out) + "\n"


def _json(result: AuditResult) -> str:
    payload = {
        "tool": "sight-core audit",
        "findings": [f.to_dict() for f in result.findings],
        "errors": [{"path": e.path, "line": e.line, "message": e.message} for e in result.errors],
        "summary": result.summary(),
    }
    return json.dumps(payload, indent=2) + "\n"


def _relative(path: str, root: str) -> str:
    """``path`` relative to the scan root, with forward slashes (as given when outside it)."""
    if not root:
        return Path(path).as_posix()
    rel = os.path.relpath(os.path.abspath(path), root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return Path(path).as_posix()
    return Path(rel).as_posix()


def _folder_uri(folder: str) -> str:
    """``file:///srv/app/`` for a folder: one trailing slash, also for ``/`` itself."""
    uri = Path(folder).as_uri()
    return uri if uri.endswith("/") else uri + "/"


def _location(path: str, line: int, root: str) -> dict[str, object]:
    return {
        "physicalLocation": {
            "artifactLocation": {"uri": _relative(path, root), "uriBaseId": "SRCROOT"},
            "region": {"startLine": max(line, 1)},
        }
    }


def _sarif(result: AuditResult, docs_base: str) -> str:
    root = result.root
    index = {rule.code: i for i, rule in enumerate(RULES)}
    rules = [
        {
            "id": rule.code,
            "name": rule.name,
            "shortDescription": {"text": rule.summary},
            "fullDescription": {"text": f"{rule.why}. Fix: {rule.fix}."},
            "help": {
                "text": f"{rule.fix} (see {rule.docs} and docs/audit-rules.md#{rule.code.lower()})"
            },
            "helpUri": docs_url(rule.docs, docs_base),
            "defaultConfiguration": {"level": _SARIF_LEVEL[rule.priority]},
            "properties": {"priority": rule.priority.name, "docs": rule.docs},
        }
        for rule in RULES
    ]
    results = [
        {
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": _SARIF_LEVEL[f.priority],
            "message": {"text": f"{f.message}. {f.why}. Fix: {f.fix} ({f.docs})"},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {
                            "uri": _relative(f.path, root),
                            "uriBaseId": "SRCROOT",
                        },
                        "region": {
                            "startLine": f.line,
                            "startColumn": f.col,
                            "snippet": {"text": f.snippet},
                        },
                    }
                }
            ],
            "relatedLocations": [
                {"id": i, **_location(h.path, h.line, root), "message": {"text": h.label}}
                for i, h in enumerate(f.chain)
            ],
            "properties": {"priority": f.priority.name, "docs": f.docs_url, "chain": f.chain_text},
        }
        for f in result.findings
    ]
    notifications = [
        {
            "level": "warning",
            "message": {"text": f"{e.message} (file skipped)"},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {
                            "uri": _relative(e.path, root),
                            "uriBaseId": "SRCROOT",
                        },
                        **({"region": {"startLine": e.line}} if e.line > 0 else {}),
                    }
                }
            ],
        }
        for e in result.errors
    ]
    log = {
        "$schema": _SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "sight-core audit",
                        "rules": rules,
                    }
                },
                "invocations": [
                    {
                        "executionSuccessful": True,
                        "toolExecutionNotifications": notifications,
                    }
                ],
                "originalUriBaseIds": {"SRCROOT": {"uri": _folder_uri(root or os.getcwd())}},
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2) + "\n"
