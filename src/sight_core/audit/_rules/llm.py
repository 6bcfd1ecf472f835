"""SC6xx: LLM failures swallowed and turned into made-up answers."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from .._context import FileContext, dotted
from .._model import Finding, Priority, Rule
from ._common import LLM_ASYNC_METHODS, LLM_SYNC_METHODS, body_walk, finding

__all__ = ["RULES", "check"]

SC601 = Rule(
    code="SC601",
    name="swallowed-llm-error",
    priority=Priority.P1,
    summary="except Exception around an LLM call that returns a literal or empty value",
    why="quota errors, timeouts and safety blocks become plausible-looking answers that are "
    "stored, cached and shown as if the model had said them",
    fix="call a model from `sight_core.llm.build_chat_model()` (retries, circuit breaker, "
    "fallbacks) and let "
    "`ContentBlockedError`/`LLMError` reach the route, which maps them to a status",
    docs="docs/llm.md",
)
SC602 = Rule(
    code="SC602",
    name="usage-read-from-response-metadata",
    priority=Priority.P2,
    summary='token usage read from `response_metadata["usage_metadata"]`',
    why="langchain-google-genai 2 and later put token counts on `AIMessage.usage_metadata`; "
    "the `response_metadata` key is absent, so usage logging and cost tracking silently "
    "record nothing",
    fix="read `message.usage_metadata` (`input_tokens`, `output_tokens`, `total_tokens`); "
    "models from `sight_core.llm.build_chat_model()` already report usage",
    docs="docs/llm.md",
)
RULES = (SC601, SC602)

_ERROR_REPLIES = ("Response", "Error", "Exception", "Problem")
_BROAD = frozenset({"Exception", "BaseException", "builtins.Exception", "builtins.BaseException"})


def check(ctx: FileContext, enabled: frozenset[str]) -> Iterator[Finding]:
    """Findings of SC601 and SC602 in ``ctx``."""
    if "SC602" in enabled:
        yield from _usage_from_metadata(ctx)
    if "SC601" not in enabled:
        return
    for try_node in ctx.trys:
        call = _llm_call(ctx, try_node.body)
        if call is None:
            continue
        results = _assigned_names(try_node.body)
        for handler in try_node.handlers:
            if not _is_broad(ctx, handler.type):
                continue
            fake: ast.AST | None = _fake_answer(handler, results)
            if fake is None and _falls_off_the_end(ctx, try_node, handler):
                fake = handler  # the caller gets None instead of an answer
            if fake is not None:
                what = dotted(call.func) or "the model call"
                yield finding(
                    ctx,
                    SC601,
                    fake,
                    f"a failure of `{what}(...)` is turned into a made-up answer here",
                )


def _llm_call(ctx: FileContext, body: list[ast.stmt]) -> ast.Call | None:
    for node in body_walk(body):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        method = node.func.attr
        if method in LLM_ASYNC_METHODS or method == "astream":
            return node
        if method in LLM_SYNC_METHODS and ctx.kind_of(node.func.value, node) == "llm":
            return node
    return None


def _is_broad(ctx: FileContext, node: ast.expr | None) -> bool:
    if node is None:
        return True
    types = node.elts if isinstance(node, ast.Tuple) else [node]
    return any((ctx.qualify(t) or "") in _BROAD for t in types)


def _assigned_names(body: list[ast.stmt]) -> set[str]:
    names: set[str] = set()
    for node in body_walk(body):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.add(target.id)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _fake_answer(handler: ast.ExceptHandler, results: set[str]) -> ast.stmt | None:
    """The statement that hands out a literal instead of the answer, unless the handler raises."""
    fake: ast.stmt | None = None
    for node in body_walk(handler.body):
        if isinstance(node, ast.Raise):
            return None
        if fake is not None:
            continue
        returns_literal = isinstance(node, ast.Return) and (
            node.value is None or _literal(node.value)
        )
        assigns_literal = (
            isinstance(node, ast.Assign)
            and _literal(node.value)
            and any(isinstance(t, ast.Name) and t.id in results for t in node.targets)
        )
        if returns_literal or assigns_literal:
            assert isinstance(node, ast.stmt)
            fake = node
    return fake


def _falls_off_the_end(
    ctx: FileContext, try_node: ast.Try | ast.TryStar, handler: ast.ExceptHandler
) -> bool:
    """True when the try returns the answer, is its function's last statement, and the handler
    ends without raising, returning or leaving a loop: the function returns ``None``."""
    func = ctx.parents.get(try_node)
    if (
        not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef)
        or func.body[-1] is not try_node
    ):
        return False
    if try_node.orelse or try_node.finalbody:
        return False
    if not any(isinstance(n, ast.Return) and n.value is not None for n in body_walk(try_node.body)):
        return False
    return not any(
        isinstance(n, ast.Raise | ast.Return | ast.Continue | ast.Break)
        for n in body_walk(handler.body)
    )


def _literal(node: ast.expr) -> bool:
    """A constant, an f-string, a container of those, or a model built only from those."""
    if isinstance(node, ast.Constant | ast.JoinedStr):
        return True
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return all(_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(_literal(v) for v in node.values) and all(
            k is None or _literal(k) for k in node.keys
        )
    if isinstance(node, ast.Call):
        name = dotted(node.func) or ""
        last = name.rsplit(".", 1)[-1]
        if last in {"dict", "list", "tuple", "set"} and not node.args and not node.keywords:
            return True
        if last.endswith(_ERROR_REPLIES):
            return False  # an error response (JSONResponse(status_code=502, ...)) is honest
        if last[:1].isupper() and (node.args or node.keywords):
            return all(_literal(a) for a in node.args) and all(
                _literal(k.value) for k in node.keywords
            )
    return False


def _usage_from_metadata(ctx: FileContext) -> Iterator[Finding]:
    """``msg.response_metadata["usage_metadata"]`` and ``.get("usage_metadata")``."""
    if "usage_metadata" not in ctx.source:
        return
    for node in ast.walk(ctx.tree):
        key: ast.expr | None = None
        owner: ast.expr | None = None
        if isinstance(node, ast.Subscript):
            owner, key = node.value, node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
        ):
            owner, key = node.func.value, node.args[0]
        if (
            isinstance(owner, ast.Attribute)
            and owner.attr == "response_metadata"
            and isinstance(key, ast.Constant)
            and key.value == "usage_metadata"
        ):
            yield finding(
                ctx,
                SC602,
                node,
                "`response_metadata` has no `usage_metadata` with langchain-google-genai >= 2: "
                "this reads nothing",
            )
