"""Inline ``# sight: ignore[CODE] reason`` suppressions."""

from __future__ import annotations

import textwrap

from sight_core.audit import audit_source

LOST_TASK = textwrap.dedent(
    """
    import asyncio

    async def create_persona(body):
        asyncio.create_task(notify(body)){comment}
    """
)


def _run(comment: str) -> tuple[list[tuple[str, int]], int]:
    result = audit_source(LOST_TASK.format(comment=comment), "app.py")
    return [(f.code, f.line) for f in result.findings], result.suppressed


def test_trailing_suppression_with_reason_silences_the_finding() -> None:
    findings, suppressed = _run("  # sight: ignore[SC501] notify() is idempotent, loss is fine")
    assert findings == []
    assert suppressed == 1


def test_suppression_of_another_code_does_not_silence() -> None:
    findings, suppressed = _run("  # sight: ignore[SC101] wrong code")
    assert findings == [("SC501", 5)]
    assert suppressed == 0


def test_suppression_without_reason_is_itself_reported() -> None:
    findings, suppressed = _run("  # sight: ignore[SC501]")
    assert findings == [("SC001", 5)]
    assert suppressed == 1


def test_suppression_without_codes_is_reported_and_silences_nothing() -> None:
    findings, suppressed = _run("  # sight: ignore because reasons")
    assert findings == [("SC501", 5), ("SC001", 5)]
    assert suppressed == 0


def test_comment_on_its_own_line_covers_the_next_line() -> None:
    source = textwrap.dedent(
        """
        import asyncio

        async def create_persona(body):
            # sight: ignore[SC501, SC101] shutdown drains via the task registry
            asyncio.create_task(notify(body))
            asyncio.create_task(notify(body))
        """
    )
    result = audit_source(source)
    assert [(f.code, f.line) for f in result.findings] == [("SC501", 7)]
    assert result.suppressed == 1


def test_suppression_text_inside_a_string_is_not_a_comment() -> None:
    source = textwrap.dedent(
        """
        import asyncio

        async def create_persona(body):
            asyncio.create_task(notify("# sight: ignore[SC501] not a comment"))
        """
    )
    assert [f.code for f in audit_source(source).findings] == ["SC501"]


def test_sc001_can_be_deselected() -> None:
    result = audit_source(LOST_TASK.format(comment="  # sight: ignore[SC501]"), ignore=["SC001"])
    assert result.findings == []
