"""SC5xx: background tasks nobody keeps a reference to."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from .._context import FileContext
from .._model import Finding, Priority, Rule
from ._common import finding

__all__ = ["RULES", "check"]

SC501 = Rule(
    code="SC501",
    name="lost-background-task",
    priority=Priority.P0,
    summary="asyncio.create_task / ensure_future whose task is not kept (a done callback "
    "does not keep it)",
    why="the event loop holds only a weak reference, so the task can be garbage-collected "
    "mid-flight, and its exception is never seen",
    fix="hand it to a `TaskSupervisor` (keeps a reference, logs failures, drains on shutdown), "
    "or keep the task and await it",
    docs="docs/fanout.md",
)
RULES = (SC501,)

_SPAWN = frozenset({"asyncio.create_task", "asyncio.ensure_future"})
_LOOP_GETTERS = frozenset({"asyncio.get_running_loop", "asyncio.get_event_loop"})


def check(ctx: FileContext, enabled: frozenset[str]) -> Iterator[Finding]:
    """Findings of SC501 in ``ctx``."""
    if "SC501" not in enabled:
        return
    for call in ctx.calls:
        if not _is_spawn(ctx, call):
            continue
        parent = ctx.parents.get(call)
        discarded = isinstance(parent, ast.Expr) or (
            isinstance(parent, ast.Assign)
            and all(isinstance(t, ast.Name) and t.id == "_" for t in parent.targets)
        )
        if discarded:
            yield finding(
                ctx,
                SC501,
                call,
                "the task returned here is dropped, so nothing keeps it alive or sees it fail",
            )
        elif _callback_then_dropped(ctx, parent):
            yield finding(
                ctx,
                SC501,
                call,
                "the task is dropped right after `add_done_callback(...)` (a done callback does "
                "not keep it alive), so it can be garbage-collected mid-flight",
            )
        elif _kept_nowhere(ctx, call, parent):
            yield finding(
                ctx,
                SC501,
                call,
                "the task is kept only in a local that nothing reads (a done callback does not "
                "keep it alive), so it can be garbage-collected mid-flight",
            )


def _callback_then_dropped(ctx: FileContext, parent: ast.AST | None) -> bool:
    """``create_task(...).add_done_callback(...)`` as a statement: the task is not kept."""
    if not isinstance(parent, ast.Attribute) or parent.attr != "add_done_callback":
        return False
    registration = ctx.parents.get(parent)
    return isinstance(registration, ast.Call) and isinstance(
        ctx.parents.get(registration), ast.Expr
    )


def _kept_nowhere(ctx: FileContext, call: ast.Call, parent: ast.AST | None) -> bool:
    """``task = create_task(...)`` in a function whose only uses of ``task`` are
    ``task.add_done_callback(...)`` (or none at all)."""
    if not isinstance(parent, ast.Assign) or len(parent.targets) != 1:
        return False
    target = parent.targets[0]
    scope = ctx.scope_of(call)
    if not isinstance(target, ast.Name) or scope is None or isinstance(scope, ast.Lambda):
        return False
    name = target.id
    for node in ast.walk(scope):
        if isinstance(node, ast.Global | ast.Nonlocal) and name in node.names:
            return False
        if node is target or not isinstance(node, ast.Name) or node.id != name:
            continue
        if isinstance(node.ctx, ast.Store):
            continue
        holder = ctx.parents.get(node)
        if (
            isinstance(holder, ast.Attribute)
            and holder.attr == "add_done_callback"
            and isinstance(ctx.parents.get(holder), ast.Call)
        ):
            continue
        return False  # awaited, stored, returned, passed on: someone keeps it
    return True


def _is_spawn(ctx: FileContext, call: ast.Call) -> bool:
    name = ctx.call_name(call)
    if name in _SPAWN:
        return True
    func = call.func
    if not isinstance(func, ast.Attribute) or func.attr != "create_task":
        return False
    owner = func.value
    if isinstance(owner, ast.Call):
        return ctx.call_name(owner) in _LOOP_GETTERS
    if isinstance(owner, ast.Name):
        if owner.id in {"loop", "event_loop"}:
            return True
        return any(
            isinstance(value, ast.Call) and ctx.call_name(value) in _LOOP_GETTERS
            for value in ctx.assignments(ctx.scope_of(call)).get(owner.id, ())
        )
    return False
