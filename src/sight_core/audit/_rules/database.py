"""SC2xx: queries per row, lazy relationships, one session shared by concurrent tasks."""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Iterator

from .._context import FileContext, dotted, is_async_scope, names_loaded
from .._model import Finding, Hop, Priority, Rule
from ._common import (
    COMPREHENSIONS,
    call_category,
    depends_on_loop_target,
    describe,
    finding,
    has_early_exit,
    is_bounded_iterable,
    is_db_read,
    loop_carried,
    loop_of,
    names_loaded_store,
    remote_chain,
    strip_await,
)

__all__ = ["RULES", "check"]

SC201 = Rule(
    code="SC201",
    name="n-plus-one-query",
    priority=Priority.P1,
    summary="a query per row inside a loop over query results (N+1)",
    why="one round-trip per row: 200 rows cost 201 queries and hold the pooled connection "
    "the whole time",
    fix="load the related rows with the first query: a `Repository` with `load = "
    "(selectinload(...),)`, `get_many(ids)`, or a `BatchLoader`",
    docs="docs/db-loading.md",
)
SC202 = Rule(
    code="SC202",
    name="query-per-item",
    priority=Priority.P1,
    summary="a read query per item of a list, awaited one after another",
    why="n sequential round-trips where one `IN (...)` query does the same work",
    fix="fetch them in one query with `Repository.get_many(ids)`, or coalesce callers with "
    "a `BatchLoader`",
    docs="docs/db-loading.md",
)
SC203 = Rule(
    code="SC203",
    name="lazy-relationship-in-loop",
    priority=Priority.P0,
    summary="relationship touched on rows of a query that has no loader options",
    why="in async SQLAlchemy a lazy load raises `MissingGreenlet` (and with sync IO it is one "
    "hidden query per row)",
    fix="declare the relationship in the repository's `load = (selectinload(Model.rel),)` or "
    "add `.options(selectinload(...))` to the query",
    docs="docs/db-loading.md",
)
SC204 = Rule(
    code="SC204",
    name="session-shared-by-tasks",
    priority=Priority.P0,
    summary="one AsyncSession passed to several concurrently running tasks",
    why="an AsyncSession is not safe for concurrent use: overlapping queries fail with "
    "'another operation is in progress' or corrupt the unit of work",
    fix="open one session per task (`async with sessionmaker() as session:` inside the task), "
    "or load everything in one query with `get_many`",
    docs="docs/db-loading.md",
)
SC205 = Rule(
    code="SC205",
    name="graph-write-per-item",
    priority=Priority.P1,
    summary="a Cypher write per item in a loop",
    why="one Bolt round-trip and one transaction per item where one UNWIND writes them all",
    fix="send the items in one statement with `GraphClient.write_batch(query, rows)` "
    "(UNWIND $rows)",
    docs="docs/graph.md",
)
SC206 = Rule(
    code="SC206",
    name="session-held-across-llm-call",
    priority=Priority.P1,
    summary="an AsyncSession that has run a query is still open when an LLM call is awaited",
    why="after its first query the session holds a pooled connection until commit or close, "
    "so the connection sits idle for the whole generation (seconds) and the pool runs dry "
    "under load",
    fix="finish the database work first (`await session.commit()` or leave the `async with`), "
    "call the model, then open a new session for the writes",
    docs="docs/db-loading.md",
)
RULES = (SC201, SC202, SC203, SC204, SC205, SC206)

_RESULT_METHODS = frozenset(
    {"all", "scalars", "unique", "fetchall", "mappings", "tuples", "scalar_one", "partitions"}
)
_QUERY_METHODS = frozenset({"execute", "scalars", "stream", "stream_scalars", "fetch"})
_CONCURRENT = frozenset(
    {
        "asyncio.gather",
        "gather_limited",
        "sight_core.concurrency.gather_limited",
        "sight_core.gather_limited",
        "asyncio.wait",
    }
)
_WRITE_WORDS = ("CREATE", "MERGE", "SET ", "DELETE", "REMOVE")
_NOT_RELATIONS = frozenset(
    {
        "id",
        "uuid",
        "status",
        "state",
        "type",
        "kind",
        "role",
        "data",
        "meta",
        "metadata",
        "payload",
        "settings",
        "config",
        "extra",
        "attributes",
        "value",
        "__class__",
        "__dict__",
        "__table__",
    }
)
_SCALAR_ATTRS = frozenset(
    {
        "value",
        "year",
        "month",
        "day",
        "hour",
        "minute",
        "second",
        "microsecond",
        "tzinfo",
        "days",
        "seconds",
        "real",
        "imag",
        "hex",
        "int",
    }
)


def check(ctx: FileContext, enabled: frozenset[str]) -> Iterator[Finding]:
    """Findings of SC201-SC205 in ``ctx``."""
    for loop in ctx.loops:
        if not is_async_scope(ctx.scope_of(loop)):
            continue
        query = _query_source(ctx, loop.iter, loop)
        if query is not None:
            if "SC201" in enabled:
                yield from _n_plus_one(ctx, loop)
            if "SC203" in enabled:
                yield from _lazy_relationship(ctx, loop, query)
        elif isinstance(loop, ast.For) and "SC202" in enabled:
            yield from _query_per_item(ctx, loop)
        if "SC205" in enabled:
            yield from _graph_writes(ctx, loop)
    if "SC203" in enabled:
        yield from _lazy_in_comprehensions(ctx)
    if "SC204" in enabled:
        yield from _shared_sessions(ctx)
    if "SC206" in enabled:
        for func in ctx.functions:
            if isinstance(func, ast.AsyncFunctionDef):
                yield from _session_across_llm(ctx, func)


# -- where rows come from ----------------------------------------------------------------


def _query_source(
    ctx: FileContext, node: ast.expr, at: ast.AST, entities: bool = False, hops: int = 0
) -> tuple[ast.Call, bool] | None:
    """The query call an iterable comes from, and whether it yields ORM objects (``scalars``).

    Follows at most :data:`_MAX_HOPS` local assignments, so ``xs = list(xs)`` ends."""
    node = strip_await(node)
    if isinstance(node, ast.Call):
        func = node.func
        if dotted(func) == "list" and node.args:
            return _query_source(ctx, node.args[0], at, entities, hops)
        if isinstance(func, ast.Attribute):
            category = call_category(ctx, node)
            if category == "db" and func.attr in _QUERY_METHODS:
                return node, entities or func.attr in {"scalars", "stream_scalars"}
            if category == "repo" and is_db_read(ctx, node, category):
                return node, False
            if func.attr in _RESULT_METHODS:
                scalars = entities or func.attr == "scalars"
                return _query_source(ctx, func.value, at, scalars, hops)
        return None
    if isinstance(node, ast.Name) and hops < _MAX_HOPS:
        scope = ctx.scope_of(at)
        if scope is None:
            return None
        for value in ctx.assignments(scope).get(node.id, ()):
            if value.lineno <= getattr(at, "lineno", 0) and not isinstance(value, ast.Name):
                return _query_source(ctx, value, value, entities, hops + 1)
    return None


_MAX_HOPS = 5


def _db_calls_in(ctx: FileContext, loop: ast.For | ast.AsyncFor) -> Iterator[ast.Call]:
    for node in ctx.loop_body(loop):
        if isinstance(node, ast.Await) and isinstance(node.value, ast.Call):
            call = node.value
            category = call_category(ctx, call)
            if category in {"db", "repo"} and is_db_read(ctx, call, category):
                yield call


# -- SC201 / SC202 -----------------------------------------------------------------------


def _n_plus_one(ctx: FileContext, loop: ast.For | ast.AsyncFor) -> Iterator[Finding]:
    for call in _db_calls_in(ctx, loop):
        if depends_on_loop_target(ctx, loop, call):
            what = dotted(call.func) or "the query"
            yield finding(
                ctx, SC201, call, f"`{what}(...)` runs once per row of the query this loop iterates"
            )
            return


def _query_per_item(ctx: FileContext, loop: ast.For) -> Iterator[Finding]:
    if is_bounded_iterable(ctx, loop.iter) or has_early_exit(ctx, loop):
        return
    words = " ".join(names_loaded_store(loop.target) | names_loaded(loop.iter)).lower()
    if any(word in words for word in ("chunk", "batch", "page")):
        return  # each iteration already handles many items
    for call, chain in _reads_in(ctx, loop):
        if loop_of(ctx, call) is loop and depends_on_loop_target(ctx, loop, call):
            if loop_carried(ctx, loop, call):
                return
            what = dotted(call.func) or "the query"
            source = describe(loop.iter)
            aggregate = _is_aggregate(ctx, call, chain)
            yield finding(
                ctx,
                SC202,
                call,
                f"`{what}(...)` runs "
                + ("an aggregate " if aggregate else "")
                + f"once per item of `{source}`, in sequence",
                chain=chain,
                fix=_GROUP_BY_FIX if aggregate else None,
            )
            return


def _reads_in(ctx: FileContext, loop: ast.For) -> Iterator[tuple[ast.Call, list[Hop]]]:
    """Read queries awaited in the loop body, directly or inside an awaited project helper."""
    for node in ctx.loop_body(loop):
        if isinstance(node, ast.Await) and isinstance(node.value, ast.Call):
            call = node.value
            category = call_category(ctx, call)
            if category in {"db", "repo"}:
                if is_db_read(ctx, call, category):
                    yield call, []
                continue
            chain = remote_chain(ctx, call, ("db_read",))
            if chain is not None:
                yield call, chain


_GROUP_BY_FIX = (
    "count every item in one query: `select(Model.key, func.count()).where(Model.key.in_(keys))"
    ".group_by(Model.key)`, then read the counts from the dict it gives"
)
_AGGREGATES = ("count", "sum", "avg", "min", "max", "total")


def _is_aggregate(ctx: FileContext, call: ast.Call, chain: list[Hop]) -> bool:
    """A count/sum per item: the repository method, helper or statement names an aggregate."""
    names = [h.label for h in chain] + [dotted(call.func) or ""]
    for name in names:
        last = name.rstrip("()").rsplit(".", 1)[-1].lower().lstrip("_")
        if last.startswith(_AGGREGATES) or last.endswith(("_count", "_total")):
            return True
    for arg in call.args[:1]:
        for sub in ast.walk(arg):
            if (
                isinstance(sub, ast.Attribute)
                and sub.attr in {"count", "sum", "avg"}
                and dotted(sub.value) in {"func", "sa.func", "sqlalchemy.func"}
            ):
                return True
    return False


# -- SC203 -------------------------------------------------------------------------------


def _lazy_relationship(
    ctx: FileContext, loop: ast.For | ast.AsyncFor, source: tuple[ast.Call, bool]
) -> Iterator[Finding]:
    query, entities = source
    if not entities:
        return
    stmt = _select_of(ctx, query)
    if stmt is None:
        return
    targets = names_loaded_store(loop.target)
    if len(targets) != 1:
        return
    (row,) = targets
    for node in ctx.loop_body(loop):
        rel = _relationship_access(ctx, node, row)
        if rel is not None:
            yield finding(
                ctx,
                SC203,
                node,
                f"`{row}.{rel}` is loaded lazily for each row: the query has no loader options",
            )
            return


def _lazy_in_comprehensions(ctx: FileContext) -> Iterator[Finding]:
    """SC203 for ``[p.project.name for p in rows]``: a comprehension over query rows is a loop,
    and the most common place where response models are built from ORM objects."""
    for func in ctx.functions:
        if not isinstance(func, ast.AsyncFunctionDef):
            continue
        for comp in ctx.scope_nodes(func):
            if not isinstance(comp, COMPREHENSIONS):
                continue
            for gen in comp.generators:
                if not isinstance(gen.target, ast.Name):
                    continue
                source = _query_source(ctx, gen.iter, comp)
                if source is None or not source[1] or _select_of(ctx, source[0]) is None:
                    continue
                row = gen.target.id
                parts = [comp.key, comp.value] if isinstance(comp, ast.DictComp) else [comp.elt]
                found = next(
                    (
                        (node, rel)
                        for part in (*parts, *gen.ifs)
                        for node in ast.walk(part)
                        if (rel := _relationship_access(ctx, node, row)) is not None
                    ),
                    None,
                )
                if found is not None:
                    node, rel = found
                    at = node.iter if isinstance(node, ast.comprehension) else node
                    yield finding(
                        ctx,
                        SC203,
                        at,
                        f"`{row}.{rel}` is loaded lazily for each row: the query has no "
                        "loader options",
                    )
                    break


def _select_of(ctx: FileContext, query: ast.Call) -> ast.Call | None:
    """The ``select(Entity)`` chain a query runs, when it is visible and has no options."""
    if not query.args:
        return None
    stmt = query.args[0]
    if isinstance(stmt, ast.Name):
        scope = ctx.scope_of(query)
        if scope is None:
            return None
        values = ctx.assignments(scope).get(stmt.id, [])
        if len(values) != 1:
            return None
        stmt = values[0]
    root = stmt
    methods: list[str] = []
    while isinstance(root, ast.Call) and isinstance(root.func, ast.Attribute):
        methods.append(root.func.attr)
        root = root.func.value
    if not isinstance(root, ast.Call) or "options" in methods:
        return None
    name = ctx.call_name(root) or ""
    if name.rsplit(".", 1)[-1] != "select" or len(root.args) != 1:
        return None
    entity = root.args[0]
    if not isinstance(entity, ast.Name) or not entity.id[:1].isupper():
        return None
    return root


def _relationship_access(ctx: FileContext, node: ast.AST, row: str) -> str | None:
    """``rel`` when ``node`` reads ``row.rel.attr`` or iterates ``row.rel`` as objects."""
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.ctx, ast.Load)
        and isinstance(node.value, ast.Attribute)
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == row
    ):
        rel = node.value.attr
        if not _is_called(ctx, node) and _relation_name(rel) and node.attr not in _SCALAR_ATTRS:
            return rel
    if isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
        it = node.iter
        if (
            isinstance(it, ast.Attribute)
            and isinstance(it.value, ast.Name)
            and it.value.id == row
            and _relation_name(it.attr)
            and isinstance(node.target, ast.Name)
        ):
            inner = node.target.id
            scope: ast.AST = node if not isinstance(node, ast.comprehension) else ctx.parents[node]
            for sub in ast.walk(scope):
                if (
                    isinstance(sub, ast.Attribute)
                    and isinstance(sub.value, ast.Name)
                    and sub.value.id == inner
                    and not _is_called(ctx, sub)
                ):
                    return it.attr
    return None


def _is_called(ctx: FileContext, node: ast.Attribute) -> bool:
    """True for ``x.method(...)``: the attribute is the function of a call."""
    parent = ctx.parents.get(node)
    return isinstance(parent, ast.Call) and parent.func is node


def _relation_name(name: str) -> bool:
    low = name.lower()
    if low in _NOT_RELATIONS or low.startswith("_"):
        return False
    return not low.endswith(("_at", "_id", "_ids", "_on", "_date", "_time", "_json", "_url"))


# -- SC204 -------------------------------------------------------------------------------


def _shared_sessions(ctx: FileContext) -> Iterator[Finding]:
    create_tasks: dict[tuple[ast.AST | None, str], list[tuple[ast.Call, int]]] = {}
    for call in ctx.calls:
        name = ctx.call_name(call) or ""
        last = name.rsplit(".", 1)[-1]
        if name in _CONCURRENT or last in {"gather_limited", "map_limited"}:
            uses: Counter[str] = Counter()
            for arg in call.args:
                for coro, weight in _coroutines(arg):
                    for session in _sessions_used(ctx, coro):
                        uses[session] += weight
            shared = [s for s, n in uses.items() if n >= 2]
            if shared:
                yield finding(
                    ctx,
                    SC204,
                    call,
                    f"`{shared[0]}` is used by several tasks of this `{last}` at the same time",
                )
        elif last in {"create_task", "ensure_future", "start_soon"} and call.args:
            first = call.args[0]
            if isinstance(first, ast.Call):
                coro = first
                weight = 2 if loop_of(ctx, call) is not None else 1
                for session in _sessions_used(ctx, coro):
                    key = (ctx.scope_of(call), session)
                    create_tasks.setdefault(key, []).append((call, weight))
    for (_, session), spawns in create_tasks.items():
        if sum(w for _, w in spawns) >= 2:
            yield finding(
                ctx,
                SC204,
                spawns[-1][0],
                f"`{session}` is passed to several tasks that run at the same time",
            )


def _coroutines(arg: ast.expr) -> Iterator[tuple[ast.Call, int]]:
    """Coroutine calls an argument of gather stands for, with how many times each runs."""
    if isinstance(arg, ast.Starred):
        arg = arg.value
    if isinstance(arg, ast.ListComp | ast.GeneratorExp | ast.SetComp):
        if isinstance(arg.elt, ast.Call):
            yield arg.elt, 2
    elif isinstance(arg, ast.List | ast.Tuple):
        for elt in arg.elts:
            if isinstance(elt, ast.Call):
                yield elt, 1
    elif isinstance(arg, ast.Call):
        yield arg, 1


def _sessions_used(ctx: FileContext, coro: ast.Call) -> set[str]:
    """Database sessions (known by evidence, not by name) a coroutine call receives or uses."""
    found: set[str] = set()
    candidates = [*coro.args, *(k.value for k in coro.keywords)]
    func = coro.func
    if isinstance(func, ast.Attribute):
        candidates.append(func.value)
    for node in candidates:
        name = dotted(node)
        if name is not None and ctx.kind_of(node, coro, guess=False) == "db":
            found.add(name)
    return found


# -- SC205 -------------------------------------------------------------------------------


def _graph_writes(ctx: FileContext, loop: ast.For | ast.AsyncFor) -> Iterator[Finding]:
    for node in ctx.loop_body(loop):
        if not (isinstance(node, ast.Await) and isinstance(node.value, ast.Call)):
            continue
        call = node.value
        if call_category(ctx, call) != "graph" or not call.args:
            continue
        query = _cypher_text(ctx, call.args[0])
        if query is None:
            continue
        upper = query.upper()
        if "UNWIND" in upper or not any(word in upper for word in _WRITE_WORDS):
            continue
        if depends_on_loop_target(ctx, loop, call):
            yield finding(
                ctx, SC205, call, "one Cypher write per item: the loop sends n statements"
            )
            return


def _cypher_text(ctx: FileContext, node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        scope = ctx.scope_of(node)
        for values in (
            ctx.assignments(scope).get(node.id, []),
            ctx.assignments(None).get(node.id, []),
        ):
            for value in values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    return value.value
    return None


# -- SC206 -------------------------------------------------------------------------------

_RELEASES = frozenset({"commit", "rollback", "close"})


def _session_across_llm(ctx: FileContext, func: ast.AsyncFunctionDef) -> Iterator[Finding]:
    """In source order: a query on a session marks it holding a connection; commit,
    rollback or close releases it; an LLM await while one is held is reported (once)."""
    holding: dict[str, ast.Call] = {}
    blocks: dict[str, ast.AST] = {}  # session bound by `async with ... as session`
    for node in ctx.scope_nodes(func):
        if isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                if isinstance(item.optional_vars, ast.Name):
                    blocks[item.optional_vars.id] = node
                expr = item.context_expr
                if (
                    isinstance(expr, ast.Call)
                    and isinstance(expr.func, ast.Attribute)
                    and expr.func.attr == "begin"
                    and (owner := dotted(expr.func.value)) is not None
                ):
                    blocks[owner] = node  # `async with session.begin():` commits at its end
        if not isinstance(node, ast.Await) or not isinstance(node.value, ast.Call):
            continue
        call = node.value
        func_ = call.func
        if isinstance(func_, ast.Attribute):
            owner = dotted(func_.value)
            if owner is not None and ctx.kind_of(func_.value, call, guess=False) == "db":
                if func_.attr in _RELEASES:
                    holding.pop(owner, None)
                elif call_category(ctx, call) == "db":
                    holding.setdefault(owner, call)
                continue
        handed = _session_handed_to_reader(ctx, call)
        if handed is not None:
            holding.setdefault(handed, call)
            continue
        for name, block in blocks.items():
            if name in holding and block not in set(ctx.ancestors(node)):
                del holding[name]  # the `async with` ended: the session is closed
        live = {k: q for k, q in holding.items() if _reaches(ctx, q, node)}
        if not live:
            continue
        chain: list[Hop] = []
        if call_category(ctx, call) != "llm":
            found = remote_chain(ctx, call, ("llm",))
            if found is None:
                continue
            chain = found
        session, query = next(iter(live.items()))
        what = dotted(call.func) or "the model call"
        yield finding(
            ctx,
            SC206,
            call,
            f"`{session}` still holds the connection of its query on line {query.lineno} "
            f"while `{what}(...)` waits for the model",
            chain=chain,
        )
        return


def _session_handed_to_reader(ctx: FileContext, call: ast.Call) -> str | None:
    """``await load_persona(session, pid)``: the session handed to a project helper that
    queries it (and neither commits, rolls back nor closes it) still holds the connection."""
    project = ctx.project
    target = project.resolve(ctx, call) if project is not None else None
    callee = project.callee(target) if project is not None and target is not None else None
    if callee is None or project is None or "db_read" not in project.network.get(callee, {}):
        return None
    for node in callee.ctx.scope_nodes(callee.node):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and (node.func.attr in _RELEASES or node.func.attr == "begin")
        ):
            return None
    for arg in [*call.args, *(k.value for k in call.keywords)]:
        if isinstance(arg, ast.Name) and ctx.kind_of(arg, call, guess=False) == "db":
            return arg.id
    return None


def _reaches(ctx: FileContext, query: ast.AST, later: ast.AST) -> bool:
    """False when ``query`` sits in a branch that ends in ``return``/``raise`` and ``later``
    is outside that branch: control never goes from one to the other."""
    around = set(ctx.ancestors(later))
    child: ast.AST = query
    for parent in ctx.ancestors(query):
        if parent in around:
            return True
        for name in ("body", "orelse", "handlers", "finalbody"):
            block = getattr(parent, name, None)
            if (
                isinstance(block, list)
                and child in block
                and block
                and isinstance(block[-1], ast.Return | ast.Raise)
            ):
                return False
        child = parent
    return True
