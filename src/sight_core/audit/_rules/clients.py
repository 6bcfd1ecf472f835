"""SC7xx: network clients built inside a function that runs on every request."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import replace

from .._context import FileContext, FunctionNode, dotted, names_loaded
from .._model import Finding, Hop, Priority, Rule, docs_url
from .._project import ClassInfo, ProjectIndex
from ._common import finding

__all__ = ["CLIENT_CONSTRUCTORS", "RULES", "check", "is_setup"]

SC701 = Rule(
    code="SC701",
    name="client-built-per-call",
    priority=Priority.P1,
    summary="LLM, Redis, engine, driver or HTTP client constructed per request",
    why="each call opens new connections (TLS, auth, pool warm-up) and throws them away, "
    "adding latency and leaking sockets under load",
    fix="build it once: `sight_core.llm.build_chat_model()` at startup, pool presets created "
    "in the FastAPI lifespan and passed in as dependencies",
    docs="docs/pools.md",
)
RULES = (SC701,)


_CLIENTS: dict[str, str] = {
    "langchain_google_genai.ChatGoogleGenerativeAI": "docs/llm.md",
    "langchain_google_vertexai.ChatVertexAI": "docs/llm.md",
    "langchain_openai.ChatOpenAI": "docs/llm.md",
    "langchain_anthropic.ChatAnthropic": "docs/llm.md",
    "google.genai.Client": "docs/llm.md",
    "redis.asyncio.Redis": "docs/pools.md",
    "redis.asyncio.StrictRedis": "docs/pools.md",
    "redis.asyncio.from_url": "docs/pools.md",
    "redis.asyncio.Redis.from_url": "docs/pools.md",
    "redis.asyncio.client.Redis": "docs/pools.md",
    "sqlalchemy.ext.asyncio.create_async_engine": "docs/pools.md",
    "neo4j.AsyncGraphDatabase.driver": "docs/pools.md",
    "httpx.AsyncClient": "docs/pools.md",
    "aiohttp.ClientSession": "docs/pools.md",
}
CLIENT_CONSTRUCTORS = frozenset(
    {
        *_CLIENTS,
        "redis.Redis",
        "redis.StrictRedis",
        "redis.from_url",
        "redis.Redis.from_url",
        "httpx.Client",
        "requests.Session",
        "neo4j.GraphDatabase.driver",
        "sqlalchemy.create_engine",
    }
)
"""Calls that open a client with its own connection pool (async or sync)."""
_SETUP_WORDS = (
    "lifespan",
    "startup",
    "shutdown",
    "bootstrap",
    "setup",
    "set_up",
    "configure",
    "init",
    "main",
    "factory",
    "doctor",
    "warm",
    "cli",
    "command",
    "check",
    "probe",
    "ping",
)
_SETUP_PREFIXES = ("create_", "build_", "make_", "open_", "connect", "new_", "provide_")
_MEMO_DECORATORS = frozenset(
    {"lru_cache", "cache", "cached", "cached_property", "fixture", "on_event", "once"}
)
_MANAGERS = frozenset({"asynccontextmanager", "contextmanager"})


def check(ctx: FileContext, enabled: frozenset[str]) -> Iterator[Finding]:
    """Findings of SC701 in ``ctx``."""
    if "SC701" not in enabled:
        return
    script = _is_script(ctx)
    yield from _classes_built_per_request(ctx)
    for call in ctx.calls:
        name = ctx.call_name(call)
        if name not in _CLIENTS:
            continue
        scope = ctx.scope_of(call)
        if not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        outer = [
            a for a in ctx.ancestors(call) if isinstance(a, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        if any(is_setup(ctx, f) for f in outer):
            continue
        if script and not any(_is_route(f) for f in outer):
            continue  # a script or CLI module: its functions run once, not per request
        if _CLIENTS[name] != "docs/llm.md" and not all(
            isinstance(f, ast.AsyncFunctionDef) for f in outer
        ):
            # an async-only client built under a sync function runs in a script, a thread
            # or a test helper (asyncio.run), not on the request path
            continue
        if _escapes(ctx, call, scope):
            continue
        parts = name.split(".")
        short = ".".join(parts[-2:]) if parts[-1][:1].islower() else parts[-1]
        found = finding(
            ctx,
            SC701,
            call,
            f"`{short}(...)` is built each time `{scope.name}` runs and dropped afterwards",
        )
        yield _with_docs(ctx, found, _CLIENTS[name])


def _classes_built_per_request(ctx: FileContext) -> Iterator[Finding]:
    """``ChatService()`` built in a route or dependency when its ``__init__`` opens a client
    (``self.redis = redis.from_url(...)``): a new pool per request, never closed."""
    project = ctx.project
    if project is None:
        return
    for call in ctx.calls:
        scope = ctx.scope_of(call)
        caller = project.function(scope)
        if caller is None:
            continue
        per_request: list[Hop] | None = None
        built = call
        dependency = _depends_arg(ctx, call)
        if dependency is not None:
            # Depends(ChatService): FastAPI builds the class itself on every request
            target = project.resolve_expr(ctx, dependency, call)
            per_request = [caller.hop()]
        else:
            target = project.resolve(ctx, call)
            if target is None or caller not in project.request:
                continue
            if _decorator_names(caller.node) & _MEMO_DECORATORS or _kept_for_later(ctx, call):
                continue
            per_request = project.request_chain(caller)
        if not isinstance(target, ClassInfo) or per_request is None:
            continue
        opens = project.client_in_init(target)
        if opens is None or _client_passed_in(project, target, built):
            continue
        hops = [*per_request, Hop(f"{target.qualname}.__init__()", ctx.path, built.lineno), *opens]
        yield finding(
            ctx,
            SC701,
            built,
            f"`{target.qualname}` is built on every request and its `__init__` opens "
            f"`{opens[-1].label}(...)`: a new connection pool on every request",
            chain=hops,
            fix="build the service (or just its client) once in the lifespan and hand it out "
            "from the dependency (`request.app.state`), or memoise the dependency with "
            "`@lru_cache`; clients come from the pool presets",
        )


def _client_passed_in(project: ProjectIndex, cls: ClassInfo, built: ast.Call) -> bool:
    """``self.redis = redis or Redis.from_url(...)`` (or ``if redis is None: ...``) and the
    caller passes ``redis``: the class reuses the caller's client."""
    init = project.callee(cls)
    step = project.client_builders.get(init) if init is not None else None
    if init is None or step is None:
        return False
    args = init.node.args
    params = [a.arg for a in [*args.posonlyargs, *args.args]][1:]  # without self
    given = {k.arg for k in built.keywords if k.arg} | set(params[: len(built.args)])
    for parent in init.ctx.ancestors(step.site):
        if parent is init.node:
            break
        test: ast.AST | None = None
        if isinstance(parent, ast.BoolOp) and isinstance(parent.op, ast.Or):
            test = parent
        elif isinstance(parent, ast.IfExp | ast.If):
            test = parent.test
        if test is not None and names_loaded(test) & given:
            return True
    return False


def _depends_arg(ctx: FileContext, call: ast.Call) -> ast.expr | None:
    name = ctx.call_name(call)
    if name is None or name.rsplit(".", 1)[-1] != "Depends" or not call.args:
        return None
    return call.args[0]


def _kept_for_later(ctx: FileContext, call: ast.Call) -> bool:
    """Stored in a global or on a non-``self`` object: a singleton, built once."""
    parent = ctx.parents.get(call)
    if not isinstance(parent, ast.Assign | ast.AnnAssign):
        return False
    targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
    scope = ctx.scope_of(call)
    declared: set[str] = set()
    for node in ctx.scope_nodes(scope):
        if isinstance(node, ast.Global | ast.Nonlocal):
            declared.update(node.names)
    for target in targets:
        if isinstance(target, ast.Name) and target.id in declared:
            return True
        if isinstance(target, ast.Attribute | ast.Subscript):
            base = dotted(target.value)
            if base is not None and base.split(".")[0] != "self":
                return True
    return False


def _with_docs(ctx: FileContext, found: Finding, docs: str) -> Finding:
    if docs == found.docs:
        return found
    return replace(found, docs=docs, docs_url=docs_url(docs, ctx.docs_base))


_SCRIPT_RUNNERS = frozenset(
    {"asyncio.run", "anyio.run", "trio.run", "uvicorn.run", "asyncio.Runner"}
)
_ROUTE_METHODS = frozenset(
    {"get", "post", "put", "patch", "delete", "head", "options", "api_route", "route", "websocket"}
)


def _is_script(ctx: FileContext) -> bool:
    """A module that runs itself: ``if __name__ == "__main__"`` or ``asyncio.run(...)``."""
    for stmt in ctx.tree.body:
        if (
            isinstance(stmt, ast.If)
            and isinstance(stmt.test, ast.Compare)
            and isinstance(stmt.test.left, ast.Name)
            and stmt.test.left.id == "__name__"
        ):
            return True
    return any(ctx.call_name(call) in _SCRIPT_RUNNERS for call in ctx.calls)


def _is_route(func: FunctionNode) -> bool:
    """Decorated as a web route: ``@router.get(...)``, ``@app.post(...)``."""
    return any(
        isinstance(deco, ast.Call)
        and isinstance(deco.func, ast.Attribute)
        and deco.func.attr in _ROUTE_METHODS
        for deco in func.decorator_list
    )


def _decorator_names(func: FunctionNode) -> set[str]:
    names: set[str] = set()
    for deco in func.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        name = dotted(target)
        if name is not None:
            names.add(name.rsplit(".", 1)[-1])
    return names


def is_setup(ctx: FileContext, func: FunctionNode) -> bool:
    """Functions that run once or rarely (startup, factories, memoised getters, fixtures,
    tests, health probes and CLI commands)."""
    low = func.name.lower().lstrip("_")
    if func.name.startswith("__") or low.startswith("test"):
        return True
    if any(word in low for word in _SETUP_WORDS) or low.startswith(_SETUP_PREFIXES):
        return True
    return bool(_decorator_names(func) & _MEMO_DECORATORS)


def _escapes(ctx: FileContext, call: ast.Call, func: FunctionNode) -> bool:
    """True when the client outlives the call: returned, stored on an object, made global."""
    parent = ctx.parents.get(call)
    if isinstance(parent, ast.Await):
        parent = ctx.parents.get(parent)
    if isinstance(parent, ast.Return):
        return True
    if isinstance(parent, ast.Yield | ast.YieldFrom):
        return _is_manager(func)
    if isinstance(parent, ast.Assign | ast.AnnAssign):
        targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
        if any(not isinstance(t, ast.Name) for t in targets):
            return True  # self.client = ..., app.state.redis = ..., registry[k] = ...
        names = {t.id for t in targets if isinstance(t, ast.Name)}
        return _name_escapes(ctx, names, func)
    if isinstance(parent, ast.withitem):
        var = parent.optional_vars
        if isinstance(var, ast.Name):
            return _name_escapes(ctx, {var.id}, func)
        return False
    # handed to a constructor or registry that keeps it
    return isinstance(parent, ast.Call | ast.keyword)


def _name_escapes(ctx: FileContext, names: set[str], func: FunctionNode) -> bool:
    for node in ctx.scope_nodes(func):
        if isinstance(node, ast.Global | ast.Nonlocal) and names & set(node.names):
            return True
        value = getattr(node, "value", None)
        if not isinstance(value, ast.Name) or value.id not in names:
            continue
        if isinstance(node, ast.Return):
            return True
        if isinstance(node, ast.Yield | ast.YieldFrom):
            return _is_manager(func)
        if isinstance(node, ast.Assign) and any(not isinstance(t, ast.Name) for t in node.targets):
            return True
    return False


def _is_manager(func: FunctionNode) -> bool:
    """A context-manager factory hands the client to its caller; a FastAPI dependency doesn't."""
    return bool(_decorator_names(func) & _MANAGERS)
