"""SC3xx: blocking calls inside ``async def`` that stall every request on the event loop."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from .._context import FileContext, dotted, is_async_scope
from .._model import Finding, Priority, Rule
from ._common import LLM_SYNC_METHODS, finding

__all__ = ["RULES", "check"]

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
    "from `build_chat_model()`",
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


def check(ctx: FileContext, enabled: frozenset[str]) -> Iterator[Finding]:
    """Findings of SC301-SC303 in ``ctx``."""
    for call in ctx.calls:
        if not is_async_scope(ctx.scope_of(call)) or ctx.is_awaited(call):
            continue
        name = ctx.call_name(call)
        if name in _BLOCKING:
            if "SC301" in enabled:
                yield finding(
                    ctx, SC301, call, f"`{name}(...)` blocks the event loop inside `async def`"
                )
            continue
        if name in _SYNC_CLIENTS:
            if "SC302" in enabled:
                yield finding(
                    ctx, SC302, call, f"`{name}(...)` builds a synchronous client in `async def`"
                )
            continue
        func = call.func
        if not isinstance(func, ast.Attribute):
            continue
        kind = ctx.kind_of(func.value, call, guess=False)
        if kind in _SYNC_KINDS and func.attr not in _HARMLESS:
            code = SC301 if kind == "sync_http" else SC302
            if code.code in enabled:
                what = dotted(func) or func.attr
                yield finding(
                    ctx, code, call, f"`{what}(...)` is a blocking call on a synchronous client"
                )
            continue
        if "SC303" in enabled and _is_sync_llm(ctx, call, func):
            what = dotted(func) or func.attr
            yield finding(
                ctx, SC303, call, f"`{what}(...)` runs the model synchronously on the event loop"
            )


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
