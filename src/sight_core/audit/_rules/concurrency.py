"""SC1xx: independent I/O awaited one after another, and fan-outs with no limit."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from .._context import FileContext, dotted, is_async_scope, names_loaded
from .._model import Finding, Hop, Priority, Rule
from ._common import (
    COMPREHENSIONS,
    call_category,
    callee_text,
    depends_on_loop_target,
    describe,
    finding,
    has_early_exit,
    is_bounded_iterable,
    loop_carried,
    loop_of,
    names_loaded_store,
    remote_chain,
)

__all__ = ["RULES", "check"]

SC101 = Rule(
    code="SC101",
    name="sequential-awaits-in-loop",
    priority=Priority.P1,
    summary="independent LLM/HTTP calls awaited one after another in a loop",
    why="each iteration waits for the previous call, so the loop takes n round-trips "
    "instead of about one",
    fix="run the calls concurrently with a cap: `await gather_limited((call(x) for x in xs), "
    "limit=10)`, or `map_limited` to stream results",
    docs="docs/fanout.md",
)
SC102 = Rule(
    code="SC102",
    name="unbounded-fan-out",
    priority=Priority.P1,
    summary="asyncio.gather / TaskGroup over a comprehension with no concurrency limit",
    why="every item starts at once, so a large input exhausts the connection pool, the LLM "
    "quota and memory and turns into timeouts and 429s",
    fix="cap the fan-out: `await gather_limited((call(x) for x in xs), limit=10)` "
    "(or `Limiter` around the call)",
    docs="docs/fanout.md",
)
RULES = (SC101, SC102)

_REMOTE = ("llm", "http")
_GATHER = frozenset({"asyncio.gather", "asyncio.wait", "asyncio.as_completed"})
_LIMIT_WORDS = ("sem", "limit", "throttle", "bulkhead", "capacity")
_RETRY_WORDS = ("retry", "retrying", "attempt")
_PACING = frozenset({"asyncio.sleep", "anyio.sleep", "trio.sleep"})


def check(ctx: FileContext, enabled: frozenset[str]) -> Iterator[Finding]:
    """Findings of SC101 and SC102 in ``ctx``."""
    if "SC101" in enabled:
        for loop in ctx.loops:
            if isinstance(loop, ast.For) and is_async_scope(ctx.scope_of(loop)):
                found = _sequential(ctx, loop)
                if found is not None:
                    yield found
        yield from _sequential_comprehensions(ctx)
    if "SC102" in enabled:
        yield from _fan_outs(ctx)


# -- SC101 -------------------------------------------------------------------------------


def _sequential(ctx: FileContext, loop: ast.For) -> Finding | None:
    if _is_retry_loop(loop) or has_early_exit(ctx, loop) or _is_batched(loop):
        return None
    candidate: ast.Call | None = None
    chain: list[Hop] = []
    for node in ctx.loop_body(loop):
        if isinstance(node, ast.AsyncWith) and any(
            _mentions_limit(item.context_expr) for item in node.items
        ):
            return None  # serialised on purpose under a lock or limiter
        if not isinstance(node, ast.Await) or not isinstance(node.value, ast.Call):
            continue
        call = node.value
        if ctx.call_name(call) in _PACING:
            return None  # paced on purpose (rate limit)
        if candidate is None and loop_of(ctx, call) is loop:
            category = call_category(ctx, call)
            hops = None if category in {"llm", "http"} else remote_chain(ctx, call, _REMOTE)
            if (
                (category in {"llm", "http"} or hops is not None)
                and depends_on_loop_target(ctx, loop, call)
                and not loop_carried(ctx, loop, call)
            ):
                candidate, chain = call, hops or []
    if candidate is None:
        return None
    what = callee_text(candidate.func)
    source = describe(loop.iter)
    return finding(
        ctx,
        SC101,
        candidate,
        f"`{what}(...)` is awaited once per item of `{source}`, one after another",
        chain=chain,
    )


def _sequential_comprehensions(ctx: FileContext) -> Iterator[Finding]:
    """``[await llm.ainvoke(x) for x in xs]``: a comprehension is a loop, and an ``await``
    inside it runs the calls one after another (iterations cannot depend on each other)."""
    reported: set[ast.AST] = set()
    for call in ctx.calls:
        if not isinstance(ctx.parents.get(call), ast.Await):
            continue
        comp = next(
            (a for a in ctx.ancestors(call) if isinstance(a, (*COMPREHENSIONS, ast.stmt))),
            None,
        )
        if not isinstance(comp, COMPREHENSIONS) or comp in reported:
            continue
        if not is_async_scope(ctx.scope_of(comp)):
            continue
        hops = None
        if call_category(ctx, call) not in {"llm", "http"}:
            hops = remote_chain(ctx, call, _REMOTE)
            if hops is None:
                continue
        targets = {n for g in comp.generators for n in names_loaded_store(g.target)}
        if not targets & names_loaded(call) or all(
            _bounded(ctx, g.iter, comp) for g in comp.generators
        ):
            continue
        words = " ".join(targets | {n for g in comp.generators for n in names_loaded(g.iter)})
        if "chunk" in words.lower() or "batch" in words.lower():
            continue  # each item is already a batch
        reported.add(comp)
        what = callee_text(call.func)
        source = describe(comp.generators[0].iter)
        yield finding(
            ctx,
            SC101,
            call,
            f"`{what}(...)` is awaited once per item of `{source}` inside a comprehension, "
            "one after another",
            chain=hops or (),
        )


def _is_retry_loop(loop: ast.For) -> bool:
    name = (dotted(loop.iter.func) if isinstance(loop.iter, ast.Call) else dotted(loop.iter)) or ""
    if any(word in name.lower() for word in _RETRY_WORDS):
        return True
    target = loop.target.id if isinstance(loop.target, ast.Name) else None
    if target is not None and any(word in target.lower() for word in _RETRY_WORDS):
        return True
    # stamina style: `for attempt in ...: with attempt: ...`
    return any(
        isinstance(stmt, ast.With | ast.AsyncWith)
        and any(
            isinstance(i.context_expr, ast.Name) and i.context_expr.id == target for i in stmt.items
        )
        for stmt in loop.body
    )


def _is_batched(loop: ast.For) -> bool:
    """``for chunk in chunks``: each iteration is already a batch, sent in sequence on purpose."""
    words = " ".join(names_loaded_store(loop.target) | names_loaded(loop.iter)).lower()
    return "chunk" in words or "batch" in words


def _mentions_limit(node: ast.expr) -> bool:
    for sub in ast.walk(node):
        name = (
            sub.id
            if isinstance(sub, ast.Name)
            else sub.attr
            if isinstance(sub, ast.Attribute)
            else ""
        )
        low = name.lower()
        if low and (any(word in low for word in _LIMIT_WORDS) or "lock" in low):
            return True
    return False


# -- SC102 -------------------------------------------------------------------------------


def _fan_outs(ctx: FileContext) -> Iterator[Finding]:
    for call in ctx.calls:
        name = ctx.call_name(call)
        if name in _GATHER:
            elt = _unbounded_elt(ctx, call, starred=name == "asyncio.gather")
            if elt is not None and not _limited(ctx, elt):
                what = name.rsplit(".", 1)[-1]
                yield finding(
                    ctx,
                    SC102,
                    call,
                    f"`{what}` starts one task per item with nothing capping how many run at once",
                )
        elif (
            isinstance(call.func, ast.Attribute)
            and call.func.attr == "create_task"
            and isinstance(call.func.value, ast.Name)
            and _is_task_group(ctx, call.func.value)
            and call.args
            and isinstance(call.args[0], ast.Call)
        ):
            loop = loop_of(ctx, call)
            comp = _comprehension_of(ctx, call)
            iters = [loop.iter] if isinstance(loop, ast.For | ast.AsyncFor) else []
            if comp is not None:
                iters = [g.iter for g in comp.generators]
            unbounded = iters and not all(_bounded(ctx, it, call) for it in iters)
            coro = call.args[0]
            if comp is not None:
                targets = {n for g in comp.generators for n in names_loaded_store(g.target)}
                unbounded = unbounded and bool(targets & _argument_names(coro))
            elif isinstance(loop, ast.For | ast.AsyncFor):
                unbounded = unbounded and depends_on_loop_target(ctx, loop, coro)
            if unbounded and not _limited(ctx, call.args[0]):
                yield finding(
                    ctx,
                    SC102,
                    call,
                    "a TaskGroup task is created per item with nothing capping how many run",
                )


def _unbounded_elt(ctx: FileContext, call: ast.Call, *, starred: bool) -> ast.Call | None:
    """The per-item coroutine call of an unbounded gather/wait, or ``None``."""
    if starred:
        sources = [a.value for a in call.args if isinstance(a, ast.Starred)]
    else:
        sources = call.args[:1]
    for source in sources:
        elt = _elt_of(ctx, source, call)
        if elt is not None:
            return elt
    return None


def _elt_of(ctx: FileContext, source: ast.expr, at: ast.Call) -> ast.Call | None:
    if isinstance(source, ast.ListComp | ast.GeneratorExp | ast.SetComp):
        if all(_bounded(ctx, g.iter, at) for g in source.generators):
            return None
        targets = {n for g in source.generators for n in names_loaded_store(g.target)}
        elt = _as_call(source.elt)
        if elt is None or not targets & _argument_names(elt) or _is_dispatch(elt, targets):
            # n copies of one call (load generation), or an event delivered to each observer
            # of a collection (notify every handler): not a fan-out over data items
            return None
        return elt
    if (
        isinstance(source, ast.Call)
        and dotted(source.func) == "map"
        and len(source.args) == 2
        and not _bounded(ctx, source.args[1], at)
    ):
        return ast.Call(func=source.args[0], args=[], keywords=[])
    if isinstance(source, ast.Name):
        scope = ctx.scope_of(at)
        for value in ctx.assignments(scope).get(source.id, ()):
            if not isinstance(value, ast.Name):
                elt = _elt_of(ctx, value, at)
                if elt is not None:
                    return elt
        for node in ctx.scope_nodes(scope):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "append"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == source.id
                and node.args
            ):
                loop = loop_of(ctx, node)
                elt = _as_call(node.args[0])
                if (
                    elt is not None
                    and isinstance(loop, ast.For | ast.AsyncFor)
                    and not _bounded(ctx, loop.iter, at)
                    and depends_on_loop_target(ctx, loop, elt)
                    and not _is_dispatch(elt, names_loaded_store(loop.target))
                ):
                    return elt
    return None


_OBSERVER_WORDS = ("handler", "listener", "callback", "subscriber", "observer")
_DISPATCH_WORDS = ("handle_event", "notify", "dispatch", "emit", "callback")


def _is_dispatch(call: ast.Call, targets: set[str]) -> bool:
    """True for an event delivered to each observer rather than work per data item:
    ``item.method(...)`` or ``items[i].method(...)`` on the loop variable (every callback
    handler, every cluster node), an ``on_*`` hook or a ``notify``/``dispatch``-style callee,
    or a loop over handlers/listeners/callbacks."""
    if any(word in name.lower() for name in targets for word in _OBSERVER_WORDS):
        return True
    callee = (dotted(call.func) or "").rsplit(".", 1)[-1].lower()
    if callee.startswith("on_") or any(word in callee for word in _DISPATCH_WORDS):
        return True
    func = call.func
    if not isinstance(func, ast.Attribute):
        return False
    root = func.value
    while isinstance(root, ast.Attribute | ast.Subscript):
        if isinstance(root, ast.Subscript) and names_loaded(root.slice) & targets:
            return True
        root = root.value
    return isinstance(root, ast.Name) and root.id in targets


def _argument_names(call: ast.Call) -> set[str]:
    """Names read by a call's arguments (not by its receiver)."""
    names: set[str] = set()
    for arg in [*call.args, *(k.value for k in call.keywords)]:
        names |= names_loaded(arg)
    return names


def _as_call(node: ast.expr) -> ast.Call | None:
    if not isinstance(node, ast.Call):
        return None
    # create_task(coro(x)) / ensure_future(coro(x)): look at the coroutine
    if (dotted(node.func) or "").rsplit(".", 1)[-1] in {"create_task", "ensure_future"}:
        inner = node.args[0] if node.args else None
        return inner if isinstance(inner, ast.Call) else node
    return node


def _bounded(ctx: FileContext, node: ast.expr, at: ast.AST) -> bool:
    if is_bounded_iterable(ctx, node):
        return True
    name = (dotted(node.func) if isinstance(node, ast.Call) else dotted(node)) or ""
    if any(word in name.lower() for word in ("batch", "chunk")):
        return True
    if isinstance(node, ast.Name):
        # the loop variable of an enclosing `for batch in batched(items, 20)`
        for anc in ctx.ancestors(at):
            if (
                isinstance(anc, ast.For | ast.AsyncFor)
                and isinstance(anc.target, ast.Name)
                and anc.target.id == node.id
            ):
                return _bounded(ctx, anc.iter, anc)
        values = ctx.assignments(ctx.scope_of(at)).get(node.id, [])
        if values and all(is_bounded_iterable(ctx, v) for v in values):
            return True
    return False


def _limited(ctx: FileContext, elt: ast.Call) -> bool:
    """True when the per-item coroutine visibly runs under a semaphore, limiter or batch loader."""
    if _mentions_limit(elt.func) or _is_loader_call(ctx, elt):
        return True
    if any(_mentions_limit(a) for a in [*elt.args, *(k.value for k in elt.keywords)]):
        return True
    callee = _local_function(ctx, elt)
    if callee is None:
        return False
    return any(
        isinstance(node, ast.AsyncWith)
        and any(_mentions_limit(item.context_expr) for item in node.items)
        for node in ast.walk(callee)
    )


def _is_loader_call(ctx: FileContext, call: ast.Call) -> bool:
    """``loader.load(key)``: a BatchLoader/DataLoader coalesces these into batch calls."""
    func = call.func
    if not isinstance(func, ast.Attribute) or func.attr not in {"load", "load_many"}:
        return False
    owner = dotted(func.value) or ""
    if "loader" in owner.lower():
        return True
    if owner == "self":
        cls = next((a for a in ctx.ancestors(call) if isinstance(a, ast.ClassDef)), None)
        return cls is not None and ("Loader" in cls.name or "Batch" in cls.name)
    return False


def _local_function(
    ctx: FileContext, call: ast.Call
) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    name = dotted(call.func)
    if name is None:
        return None
    head, _, attr = name.partition(".")
    wanted = attr if head in {"self", "cls"} and "." not in attr else name
    if "." in wanted:
        return None
    for func in ctx.functions:
        if func.name == wanted:
            return func
    return None


def _comprehension_of(
    ctx: FileContext, node: ast.AST
) -> ast.ListComp | ast.GeneratorExp | ast.SetComp | None:
    for anc in ctx.ancestors(node):
        if isinstance(anc, ast.ListComp | ast.GeneratorExp | ast.SetComp):
            return anc
        if isinstance(anc, ast.stmt):
            return None
    return None


def _is_task_group(ctx: FileContext, name: ast.Name) -> bool:
    for anc in ctx.ancestors(name):
        if isinstance(anc, ast.AsyncWith):
            for item in anc.items:
                if (
                    isinstance(item.optional_vars, ast.Name)
                    and item.optional_vars.id == name.id
                    and isinstance(item.context_expr, ast.Call)
                    and (ctx.call_name(item.context_expr) or "").endswith("TaskGroup")
                ):
                    return True
    return False
