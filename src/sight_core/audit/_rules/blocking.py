"""SC3xx: blocking calls inside ``async def`` that stall every request on the event loop."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .._context import FileContext, dotted, is_async_scope
from .._model import Finding, Priority, Rule
from ._common import LLM_SYNC_METHODS, callee_text, finding
from .clients import is_setup as _is_setup

if TYPE_CHECKING:
    from .._project import FunctionInfo

__all__ = ["RULES", "blocking_code", "check"]

SC301 = Rule(
    code="SC301",
    name="blocking-io-in-async",
    priority=Priority.P0,
    summary="time.sleep, requests, sync httpx or subprocess inside async def",
    why="a blocking call freezes the event loop, so every other request on the worker waits for it",
    fix="use the async form: `await asyncio.sleep()`, one `httpx.AsyncClient` opened in the "
    "lifespan, `asyncio.create_subprocess_exec`",
    docs="docs/pools.md",
)
SC302 = Rule(
    code="SC302",
    name="sync-client-in-async",
    priority=Priority.P0,
    summary="a synchronous Redis, Neo4j or SQLAlchemy client used inside async def",
    why="every command blocks the event loop for a network round-trip, serialising the "
    "whole worker behind one socket",
    fix="use the async clients from the pool presets (`redis.asyncio`, `create_engine` from "
    "sight_core.db, `create_driver`), built once in the lifespan",
    docs="docs/pools.md",
)
SC303 = Rule(
    code="SC303",
    name="sync-llm-call-in-async",
    priority=Priority.P0,
    summary="LangChain invoke/batch/stream (sync) inside async def",
    why="a synchronous model call blocks the event loop for the whole generation, often "
    "seconds, stalling every concurrent request",
    fix="await the async form (`await llm.ainvoke(...)`, `abatch`, `astream`) on a model "
    "from `sight_core.llm.build_chat_model()`; run an unavoidable sync helper with "
    "`await asyncio.to_thread(helper, ...)`",
    docs="docs/llm.md",
)
RULES = (SC301, SC302, SC303)

_BLOCKING = frozenset(
    {
        "time.sleep",
        "requests.get",
        "requests.post",
        "requests.put",
        "requests.patch",
        "requests.delete",
        "requests.head",
        "requests.options",
        "requests.request",
        "requests.Session",
        "requests.session",
        "httpx.get",
        "httpx.post",
        "httpx.put",
        "httpx.patch",
        "httpx.delete",
        "httpx.head",
        "httpx.options",
        "httpx.request",
        "httpx.stream",
        "httpx.Client",
        "urllib.request.urlopen",
        "subprocess.run",
        "subprocess.call",
        "subprocess.check_call",
        "subprocess.check_output",
        "os.system",
    }
)
_SYNC_CLIENTS = frozenset(
    {
        "redis.Redis",
        "redis.StrictRedis",
        "redis.from_url",
        "redis.Redis.from_url",
        "redis.client.Redis",
        "neo4j.GraphDatabase.driver",
        "sqlalchemy.create_engine",
        "sqlalchemy.orm.Session",
        "sqlalchemy.orm.sessionmaker",
    }
)
_SYNC_KINDS = frozenset({"sync_redis", "sync_db", "sync_graph", "sync_http"})
_HARMLESS = frozenset({"close", "__enter__", "__exit__"})


def blocking_code(ctx: FileContext, call: ast.Call, *, constructors: bool = True) -> str | None:
    """SC301/SC302/SC303 when ``call`` (not awaited) blocks the calling thread, else None.

    ``constructors=False`` leaves out building a sync client (no I/O yet; its use is what
    blocks), as the call-graph summaries do.
    """
    name = ctx.call_name(call)
    if name in _BLOCKING:
        return SC301.code
    if name in _SYNC_CLIENTS:
        return SC302.code if constructors else None
    func = call.func
    if not isinstance(func, ast.Attribute):
        return None
    kind = ctx.kind_of(func.value, call, guess=False)
    if kind in _SYNC_KINDS and func.attr not in _HARMLESS:
        return SC301.code if kind == "sync_http" else SC302.code
    if _is_sync_llm(ctx, call, func):
        return SC303.code
    return None


_MESSAGES = {
    "SC301": "`{what}(...)` blocks the event loop inside `async def`",
    "SC302": "`{what}(...)` uses a synchronous client inside `async def`",
    "SC303": "`{what}(...)` runs the model synchronously on the event loop",
}
_RULE = {rule.code: rule for rule in RULES}


def check(ctx: FileContext, enabled: frozenset[str]) -> Iterator[Finding]:
    """Findings of SC301-SC303 in ``ctx``: direct calls, and calls of project functions that
    block somewhere down their call chain."""
    project = ctx.project
    for call in ctx.calls:
        scope = ctx.scope_of(call)
        if not is_async_scope(scope) or ctx.is_awaited(call):
            continue
        code = blocking_code(ctx, call)
        if code is not None:
            if code in enabled:
                what = ctx.call_name(call) or callee_text(call.func)
                yield finding(ctx, _RULE[code], call, _MESSAGES[code].format(what=what))
            continue
        if project is None:
            continue
        target = project.resolve(ctx, call)
        callee = project.callee(target) if target is not None else None
        if callee is None or callee.is_async or callee not in project.blocks:
            continue
        step = project.blocks[callee]
        caller = project.function(scope)
        if step.code not in enabled or _runs_outside_requests(ctx, call, caller):
            continue
        hops = project.chain(project.blocks, callee, call, ctx.path)
        if caller is not None:
            hops.insert(0, caller.hop())
        leaf = hops[-1].label
        yield finding(
            ctx,
            _RULE[step.code],
            call,
            f"`{callee.label}` is a plain `def` that reaches `{leaf}`, and `async def` calls "
            "it directly, so the event loop waits for it",
            chain=hops,
        )


def _runs_outside_requests(ctx: FileContext, call: ast.Call, caller: FunctionInfo | None) -> bool:
    """True for startup code (lifespan, fixtures, CLI commands) that no request reaches, and
    for a coroutine defined inside a plain ``def`` (it runs in its own loop via
    ``asyncio.run`` or a thread): blocking there once does not stall requests."""
    assert ctx.project is not None
    if caller is not None and caller in ctx.project.request:
        return False
    outer = [
        a for a in ctx.ancestors(call) if isinstance(a, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    return any(_is_setup(ctx, f) or isinstance(f, ast.FunctionDef) for f in outer)


def _is_sync_llm(ctx: FileContext, call: ast.Call, func: ast.Attribute) -> bool:
    if func.attr == "generate_content":
        # google-genai: client.models.generate_content (sync) vs client.aio.models...
        chain = dotted(func) or ""
        return ".models." in f".{chain}" and ".aio." not in f".{chain}."
    if func.attr not in LLM_SYNC_METHODS:
        return False
    receiver = func.value
    if isinstance(receiver, ast.Call | ast.BinOp):
        return ctx.kind_of_value(receiver) == "llm"
    return ctx.kind_of(receiver, call) == "llm"
