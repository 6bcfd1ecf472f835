"""What one function does by itself (its own body, without nested scopes): the seeds of the
project summaries in :mod:`._project`."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._context import dotted
from ._rules._common import call_category, is_db_read
from ._rules.blocking import blocking_code
from ._rules.clients import CLIENT_CONSTRUCTORS

if TYPE_CHECKING:
    from ._project import FunctionInfo

__all__ = ["Facts", "direct_facts"]

_CACHE_READS = frozenset({"get", "hget", "mget", "hgetall"})
_CACHE_WRITES = frozenset({"set", "setex", "psetex", "hset"})


@dataclass(slots=True)
class Facts:
    """Direct facts: each is ``(label, site)`` of the first call that shows it."""

    blocking: tuple[str, str, ast.Call] | None = None  # (rule code, label, call)
    network: dict[str, tuple[str, ast.Call]] = field(default_factory=dict)
    cache_read: tuple[str, ast.Call] | None = None
    cache_write: tuple[str, ast.Call] | None = None
    client: tuple[str, ast.Call] | None = None


def direct_facts(info: FunctionInfo) -> Facts:
    """Read ``info``'s own body once."""
    ctx = info.ctx
    facts = Facts()
    returns_value = False
    reads: tuple[str, ast.Call] | None = None
    writes: tuple[str, ast.Call] | None = None
    for node in ctx.scope_nodes(info.node):
        if isinstance(node, ast.Return) and node.value is not None:
            returns_value = True
        if not isinstance(node, ast.Call):
            continue
        awaited = ctx.is_awaited(node)
        label = dotted(node.func) or ""
        if not info.is_async and facts.blocking is None and not awaited:
            code = blocking_code(ctx, node, constructors=False)
            if code is not None:
                facts.blocking = (code, ctx.call_name(node) or label, node)
        if info.is_async and awaited:
            category = call_category(ctx, node)
            if category is not None:
                facts.network.setdefault(category, (label, node))
                if category in {"db", "repo"} and is_db_read(ctx, node, category):
                    facts.network.setdefault("db_read", (label, node))
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and (awaited or not info.is_async)
            and ctx.kind_of(func.value, node) in {"redis", "sync_redis"}
        ):
            if func.attr in _CACHE_READS and reads is None:
                reads = (label, node)
            elif func.attr in _CACHE_WRITES and writes is None:
                writes = (label, node)
        name = ctx.call_name(node)
        if name in CLIENT_CONSTRUCTORS and facts.client is None:
            facts.client = (name, node)
    if reads is not None and writes is None and returns_value:
        facts.cache_read = reads
    if writes is not None and reads is None:
        facts.cache_write = writes
    return facts
