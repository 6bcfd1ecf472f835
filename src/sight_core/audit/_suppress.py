"""Inline suppressions: ``# sight: ignore[SC101,SC202] reason that stays with the code``."""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass

__all__ = ["Suppression", "find_suppressions"]

_PATTERN = re.compile(
    r"#\s*sight:\s*ignore(?P<bracket>\[(?P<codes>[^\]]*)\])?(?P<reason>.*)$", re.IGNORECASE
)
_CODE = re.compile(r"^SC\d{3}$")


@dataclass(frozen=True, slots=True)
class Suppression:
    """One comment: the lines it covers, the codes it names and its reason ('' if none)."""

    line: int
    col: int
    applies_to: frozenset[int]
    codes: frozenset[str]
    reason: str
    problem: str | None

    def covers(self, code: str, line: int) -> bool:
        """True when a finding of ``code`` on ``line`` is silenced by this comment."""
        return line in self.applies_to and code in self.codes


def find_suppressions(source: str) -> list[Suppression]:
    """Every ``# sight: ignore`` comment in ``source``.

    A trailing comment covers its own line; a comment alone on its line covers the next line
    too. Costs one tokenize pass, and only for files that contain ``sight:`` at all.
    """
    if "sight:" not in source.lower():
        return []
    found: list[Suppression] = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return []
    for index, token in enumerate(tokens):
        if token.type != tokenize.COMMENT:
            continue
        match = _PATTERN.search(token.string)
        if match is None:
            continue
        line, col = token.start
        alone = not token.line[: token.start[1]].strip()
        applies = {line}
        if alone:
            nxt = next(
                (t for t in tokens[index + 1 :] if t.type not in _TRIVIA),
                None,
            )
            if nxt is not None:
                applies.add(nxt.start[0])
        raw_codes = [c.strip().upper() for c in (match.group("codes") or "").split(",")]
        codes = frozenset(c for c in raw_codes if c)
        reason = match.group("reason").strip().lstrip("-:# \u2014\u2013").strip()
        problem = None
        if not codes:
            problem = "names no rule code: write `# sight: ignore[SC101] reason`"
        elif bad := sorted(c for c in codes if not _CODE.match(c)):
            problem = f"names an invalid code {bad[0]!r}"
        elif not reason:
            problem = "gives no reason: add one after the codes"
        found.append(
            Suppression(
                line=line,
                col=col + 1,
                applies_to=frozenset(applies),
                codes=codes,
                reason=reason,
                problem=problem,
            )
        )
    return found


_TRIVIA = frozenset(
    {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
)
