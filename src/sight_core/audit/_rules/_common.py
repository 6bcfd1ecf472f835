"""Helpers shared by the rule families: what a call talks to, and what a loop body does."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from typing import Literal, TypeAlias

from .._context import FileContext, dotted, names_loaded
from .._model import Finding, Hop, Rule, docs_url

__all__ = [
    "COMPREHENSIONS",
    "Category",
    "LLM_ASYNC_METHODS",
    "LLM_SYNC_METHODS",
    "body_walk",
    "call_category",
    "depends_on_loop_target",
    "describe",
    "remote_chain",
    "finding",
    "has_early_exit",
    "is_bounded_iterable",
    "is_db_read",
    "loop_carried",
    "loop_of",
    "stmt_of",
    "statement_kind",
    "strip_await",
]

Category: TypeAlias = Literal["llm", "http", "db", "repo", "graph", "redis"]

COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
"""Comprehension node types: each one is a loop over its generators."""

LLM_ASYNC_METHODS = frozenset(
    {
        "ainvoke",
        "agenerate",
        "abatch",
        "apredict",
        "apredict_messages",
        "generate_content",
        "generate_content_async",
    }
)
LLM_SYNC_METHODS = frozenset({"invoke", "batch", "stream", "predict", "predict_messages"})
HTTP_METHODS = frozenset(
    {"get", "post", "put", "patch", "delete", "head", "options", "request", "send", "stream"}
)
DB_METHODS = frozenset(
    {
        "execute",
        "scalar",
        "scalars",
        "get",
        "get_one",
        "refresh",
        "stream",
        "stream_scalars",
        "merge",
        "fetch",
        "fetchrow",
        "fetchval",
    }
)
DB_READ_METHODS = frozenset(
    {"scalar", "scalars", "get", "get_one", "fetch", "fetchrow", "fetchval", "execute", "stream"}
)
REPO_READ_PREFIXES = ("get", "find", "fetch", "list", "load", "count", "exists", "search", "one")
REDIS_METHODS = frozenset({"get", "set", "setex", "mget", "hget", "hgetall", "delete", "incr"})
GRAPH_METHODS = frozenset(
    {"run", "execute_query", "execute_write", "execute_read", "write", "read"}
)


def finding(
    ctx: FileContext,
    rule: Rule,
    node: ast.AST,
    message: str,
    *,
    chain: Sequence[Hop] = (),
    fix: str | None = None,
) -> Finding:
    """A :class:`Finding` of ``rule`` at ``node`` with a specific ``message`` (and, when it
    was found through calls, the ``chain`` that leads to it)."""
    if chain:
        message = f"{message} ({' -> '.join(h.label for h in chain)})"
    return Finding(
        code=rule.code,
        priority=rule.priority,
        path=ctx.path,
        line=getattr(node, "lineno", 1),
        col=getattr(node, "col_offset", 0) + 1,
        snippet=ctx.snippet(node),
        message=message,
        why=rule.why,
        fix=fix if fix is not None else rule.fix,
        docs=rule.docs,
        chain=tuple(chain),
        docs_url=docs_url(rule.docs, ctx.docs_base),
    )


def remote_chain(ctx: FileContext, call: ast.Call, categories: Sequence[str]) -> list[Hop] | None:
    """When ``call`` is an awaited project coroutine that awaits one of ``categories``
    (``llm``, ``http``, ``db_read`` ...) somewhere down its calls: the chain from the
    calling function to that network call; else ``None``."""
    project = ctx.project
    if project is None or not ctx.is_awaited(call):
        return None
    target = project.resolve(ctx, call)
    callee = project.callee(target) if target is not None else None
    if callee is None or not callee.is_async:
        return None
    found = project.network_chain(callee, categories)
    if found is None:
        return None
    hops = found[1]
    hops[0] = Hop(callee.label, ctx.path, call.lineno)
    caller = project.function(ctx.scope_of(call))
    return [caller.hop(), *hops] if caller is not None else hops


def describe(node: ast.expr, width: int = 40) -> str:
    """Short source text of an expression for messages (``personas``, ``range(n)``)."""
    text = ast.unparse(node)
    return text if len(text) <= width else text[: width - 3] + "..."


def callee_text(func: ast.expr) -> str:
    """A call's callee for messages: ``llm.with_structured_output(...).ainvoke``."""
    if isinstance(func, ast.Attribute):
        return f"{callee_text(func.value)}.{func.attr}"
    if isinstance(func, ast.Call):
        return f"{callee_text(func.func)}(...)"
    return describe(func)


def strip_await(node: ast.expr) -> ast.expr:
    """``x`` for ``await x``, ``node`` otherwise."""
    return node.value if isinstance(node, ast.Await) else node


def call_category(ctx: FileContext, call: ast.Call) -> Category | None:
    """What an (awaited) method call talks to: an LLM, HTTP, the database, a repository ..."""
    func = call.func
    if not isinstance(func, ast.Attribute):
        return None
    method = func.attr
    if method in LLM_ASYNC_METHODS:
        return "llm"
    receiver = func.value
    kind = ctx.kind_of(receiver, call)
    if kind == "repo":
        return "repo"
    if kind == "db" and method in DB_METHODS:
        return "db"
    if kind == "graph" and method in GRAPH_METHODS:
        return "graph"
    if kind == "redis" and method in REDIS_METHODS:
        return "redis"
    if kind == "http" and method in HTTP_METHODS:
        return "http"
    return None


def is_db_read(ctx: FileContext, call: ast.Call, category: Category | None) -> bool:
    """True for a read query: ``session.get/scalars/execute(select ...)``, ``repo.get_*``.

    ``execute``/``stream`` count only with a visible ``select``; ``scalar(s)`` count unless the
    statement is visibly an insert, update or delete (``delete(...).returning(...)``).
    """
    if not isinstance(call.func, ast.Attribute):
        return False
    method = call.func.attr
    if category == "repo":
        return method.lstrip("_").startswith(REPO_READ_PREFIXES)
    if category != "db" or method not in DB_READ_METHODS:
        return False
    if method in {"get", "get_one", "fetch", "fetchrow", "fetchval"}:
        return True
    kind = statement_kind(ctx, call.args[0], call) if call.args else None
    if method in {"execute", "stream"}:
        return kind == "select"
    return kind not in _WRITE_STATEMENTS


_WRITE_STATEMENTS = frozenset({"insert", "update", "delete"})
_STATEMENTS = ("select", "insert", "update", "delete")


def statement_kind(ctx: FileContext, node: ast.expr, at: ast.AST) -> str | None:
    """``select``/``insert``/``update``/``delete`` for a SQLAlchemy statement expression built
    in view (``select(P).where(...)``, ``stmt`` assigned from one, ``make_delete_stmt()``)."""
    seen = 0
    while isinstance(node, ast.Name) and seen < 5:
        values = ctx.assignments(ctx.scope_of(at)).get(node.id, ())
        if not values:
            return None
        node = values[0]
        seen += 1
    found: str | None = None
    current: ast.expr = node
    while seen < 10:
        if isinstance(current, ast.Name):
            # stmt = insert(M); final = stmt.returning(M): follow the root name back
            values = ctx.assignments(ctx.scope_of(at)).get(current.id, ())
            if not values:
                break
            current = values[0]
            seen += 1
            continue
        if not isinstance(current, ast.Call):
            break
        name = (dotted(current.func) or "").rsplit(".", 1)[-1].lower()
        for word in _STATEMENTS:
            if word in name:
                found = word  # the innermost (root) statement word wins
        func = current.func
        if not isinstance(func, ast.Attribute):
            break
        current = func.value
    return found


def body_walk(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every node under ``body`` except the insides of nested functions, lambdas and classes."""
    stack: list[ast.AST] = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        for child in reversed(list(ast.iter_child_nodes(node))):
            if not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef
            ):
                stack.append(child)


def loop_of(ctx: FileContext, node: ast.AST) -> ast.For | ast.AsyncFor | ast.While | None:
    """The nearest loop whose body (not its iterable) holds ``node``, within the same scope."""
    child: ast.AST = node
    for parent in ctx.ancestors(node):
        if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return None
        if isinstance(parent, ast.For | ast.AsyncFor | ast.While) and child not in (
            getattr(parent, "iter", None),
            getattr(parent, "target", None),
            getattr(parent, "test", None),
        ):
            return parent
        child = parent
    return None


def stmt_of(ctx: FileContext, node: ast.AST) -> ast.stmt:
    """The innermost statement that holds ``node``."""
    current: ast.AST = node
    while not isinstance(current, ast.stmt):
        current = ctx.parents[current]
    return current


def has_early_exit(ctx: FileContext, loop: ast.For | ast.AsyncFor) -> bool:
    """True when the body can leave the loop early or hand out items as it goes.

    ``return``, ``yield`` or a ``break`` that belongs to this loop: a fallback chain, a
    search or a stream, which are sequential on purpose.
    """
    for node in ctx.loop_body(loop):
        if isinstance(node, ast.Return | ast.Yield | ast.YieldFrom):
            return True
        if isinstance(node, ast.Break) and loop_of(ctx, node) is loop:
            return True
    return False


_MUTATORS = frozenset(
    {
        "append",
        "extend",
        "add",
        "update",
        "insert",
        "setdefault",
        "appendleft",
        "push",
        "put",
        "put_nowait",
        "add_message",
        "add_messages",
        "add_user_message",
        "add_ai_message",
    }
)


def _ref(node: ast.expr) -> str | None:
    """``name`` or ``self.attr`` for the object an expression refers to."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}" if node.value.id in {"self", "cls"} else None
    return None


def _pos(node: ast.AST) -> tuple[int, int]:
    return (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))


def loop_carried(ctx: FileContext, loop: ast.For | ast.AsyncFor, call: ast.expr) -> bool:
    """True when ``call`` reads state that an earlier iteration of ``loop`` wrote.

    A name the body assigns after the call (or in the call's own statement), accumulates into
    (``+=``) or mutates (``history.append(answer)``), and that the call's arguments read,
    directly or through names assigned earlier in the same iteration.
    """
    first_store: dict[str, ast.AST] = {}  # body nodes come in source order
    mutated: set[str] = set()
    assigned_from: dict[str, list[ast.expr]] = {}
    for node in ctx.loop_body(loop):
        if isinstance(node, ast.Name | ast.Attribute):
            if isinstance(node.ctx, ast.Store):
                ref = _ref(node)
                if ref is not None:
                    first_store.setdefault(ref, node)
                elif isinstance(node, ast.Attribute) and (base := _ref(node.value)):
                    mutated.add(base)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _MUTATORS
            and (base := _ref(node.func.value))
        ):
            mutated.add(base)
        elif isinstance(node, ast.Subscript):
            if isinstance(node.ctx, ast.Store | ast.Del) and (base := _ref(node.value)):
                mutated.add(base)
        elif isinstance(node, ast.AugAssign):
            if ref := _ref(node.target):
                mutated.add(ref)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name | ast.Attribute) and (ref := _ref(sub)):
                        assigned_from.setdefault(ref, []).append(node.value)
        elif (
            isinstance(node, ast.NamedExpr | ast.AnnAssign)
            and node.value is not None
            and (ref := _ref(node.target))
        ):
            assigned_from.setdefault(ref, []).append(node.value)
    fresh = names_loaded_store(loop.target)
    call_pos = _pos(stmt_of(ctx, call))
    seen: set[str] = set()
    todo = _refs_read(call)
    while todo:
        ref = todo.pop()
        if ref in seen or ref in fresh:
            continue
        seen.add(ref)
        node_ = first_store.get(ref)
        if node_ is not None and _pos(stmt_of(ctx, node_)) < call_pos:
            # rebound earlier in this same iteration: follow what it was built from
            for value in assigned_from.get(ref, ()):
                todo |= _refs_read(value)
            continue
        if node_ is not None or ref in mutated:
            return True
    return False


def _refs_read(node: ast.AST) -> set[str]:
    refs = names_loaded(node)
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Load):
            ref = _ref(sub)
            if ref is not None and "." in ref:
                refs.add(ref)
    return refs


def depends_on_loop_target(ctx: FileContext, loop: ast.For | ast.AsyncFor, call: ast.expr) -> bool:
    """True when ``call``'s arguments read the loop variable, directly or through assignments."""
    targets = names_loaded_store(loop.target)
    assigned: dict[str, list[ast.expr]] = {}
    for node in ctx.loop_body(loop):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for name in names_loaded_store(target):
                    assigned.setdefault(name, []).append(node.value)
        elif isinstance(node, ast.For | ast.AsyncFor):
            for name in names_loaded_store(node.target):
                assigned.setdefault(name, []).append(node.iter)
    todo = set()
    if isinstance(call, ast.Call):
        for arg in [*call.args, *(k.value for k in call.keywords)]:
            todo |= names_loaded(arg)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in targets:
            return True
        if name in seen:
            continue
        seen.add(name)
        for value in assigned.get(name, ()):
            todo |= names_loaded(value)
    return False


def names_loaded_store(target: ast.AST) -> set[str]:
    """Names bound by an assignment or loop target."""
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}


def is_bounded_iterable(ctx: FileContext, node: ast.expr) -> bool:
    """True for iterables whose size is fixed in the source: literals, ``range(3)``, CONSTANTS."""
    if isinstance(node, ast.List | ast.Tuple | ast.Set | ast.Dict | ast.Constant):
        return True
    if isinstance(node, ast.Name):
        return node.id.isupper()
    if isinstance(node, ast.Attribute):
        return node.attr.isupper()
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
        # xs[:3], xs[2:5]: at most a constant number of items
        upper = node.slice.upper
        return isinstance(upper, ast.Constant) and isinstance(upper.value, int) and upper.value >= 0
    if isinstance(node, ast.Call):
        name = dotted(node.func) or ""
        last = name.rsplit(".", 1)[-1]
        if last == "range":
            return all(
                isinstance(a, ast.Constant) or (isinstance(a, ast.Name) and a.id.isupper())
                for a in node.args
            )
        if last in {"enumerate", "zip", "reversed", "sorted", "list", "tuple"} and node.args:
            return all(is_bounded_iterable(ctx, a) for a in node.args)
        if last in {"items", "keys", "values"} and isinstance(node.func, ast.Attribute):
            return is_bounded_iterable(ctx, node.func.value)
    return False
