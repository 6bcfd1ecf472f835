"""SC4xx: hand-written Redis read-through blocks and cache keys without a version."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from .._context import FileContext, FunctionNode, dotted, names_loaded
from .._model import Finding, Priority, Rule
from ._common import finding

if TYPE_CHECKING:
    from .._project import FunctionInfo

__all__ = ["RULES", "check"]

SC401 = Rule(
    code="SC401",
    name="hand-written-read-through",
    priority=Priority.P2,
    summary="get -> decode -> compute -> set/setex written by hand (in one function or "
    "through cache helpers)",
    why="each copy re-implements keys, encoding and TTLs, with no stampede lock, no stats and "
    "no invalidation by tag, and drifts from the others",
    fix="decorate the function with `@cache.cached(namespace=..., version=..., ttl=...)` "
    "and delete the block",
    docs="docs/cache-migration.md",
)
SC402 = Rule(
    code="SC402",
    name="unversioned-cache-key",
    priority=Priority.P1,
    summary="serialized value stored under an f-string key with no version",
    why="when the payload's shape changes, the next deploy reads old entries it cannot decode "
    "(or silently serves the old shape) until they expire",
    fix="let `@cache.cached(namespace=..., version=2, key=...)` build versioned keys, and "
    "bump `version` when the shape changes",
    docs="docs/caching.md",
)
RULES = (SC401, SC402)

_WRITES = frozenset({"set", "setex", "psetex"})
_SERIALIZERS = frozenset(
    {
        "json.dumps",
        "orjson.dumps",
        "pickle.dumps",
        "msgpack.packb",
        "msgpack.dumps",
        "ujson.dumps",
        "dumps",
    }
)
_SERIALIZER_METHODS = frozenset({"model_dump_json", "json", "SerializeToString", "to_json"})
_VERSION = re.compile(r"(^|[:_/.\-|])v\d+($|[:_/.\-|])|version", re.IGNORECASE)


def check(ctx: FileContext, enabled: frozenset[str]) -> Iterator[Finding]:
    """Findings of SC401 and SC402 in ``ctx``."""
    writers = {
        ctx.scope_of(call)
        for call in ctx.calls
        if isinstance(call.func, ast.Attribute) and call.func.attr in _WRITES
    }
    if "SC401" in enabled:
        yield from _split_read_through(ctx)
    for func in ctx.functions:
        if not isinstance(func, ast.AsyncFunctionDef) or func not in writers:
            continue
        blocks = _read_through(ctx, func)
        if "SC401" in enabled:
            for get_call in blocks:
                yield finding(
                    ctx,
                    SC401,
                    get_call,
                    "hand-written read-through: cache get, decode, compute and set in one function",
                )
        if "SC402" in enabled:
            in_blocks = {id(s) for s in blocks.values()}
            for call in _writes(ctx, func):
                if id(call) in in_blocks:
                    continue
                key = _key_source(ctx, call, func)
                if key is not None and not _versioned(key):
                    yield finding(
                        ctx,
                        SC402,
                        call,
                        "the key names no version, so a new payload shape reads old entries",
                    )


def _writes(ctx: FileContext, func: FunctionNode) -> Iterator[ast.Call]:
    for node in ctx.scope_nodes(func):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _WRITES
            and _is_cache_client(ctx, node.func.value, node)
            and not any(k.arg in {"nx", "xx"} for k in node.keywords)
            and _serialized_value(ctx, node, func)
        ):
            yield node


def _is_cache_client(ctx: FileContext, node: ast.expr, at: ast.AST) -> bool:
    if ctx.kind_of(node, at) in {"redis", "sync_redis"}:
        return True
    name = (dotted(node) or "").rsplit(".", 1)[-1].lower()
    return "cache" in name


def _value_arg(call: ast.Call) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == "value":
            return keyword.value
    assert isinstance(call.func, ast.Attribute)
    index = 1 if call.func.attr == "set" else 2
    return call.args[index] if len(call.args) > index else None


def _serialized_value(ctx: FileContext, call: ast.Call, func: FunctionNode) -> bool:
    """True when the stored value is a serialized payload (``json.dumps``, ``model_dump_json``)."""
    value = _value_arg(call)
    if isinstance(value, ast.Name):
        # payload = json.dumps(...); await redis.set(key, payload)
        value = next(iter(ctx.assignments(func).get(value.id, ())), None)
    if not isinstance(value, ast.Call):
        return False
    name = ctx.call_name(value) or ""
    if name in _SERIALIZERS or name.rsplit(".", 1)[-1] in {"dumps", "packb"}:
        return True
    return isinstance(value.func, ast.Attribute) and value.func.attr in _SERIALIZER_METHODS


def _key_arg(call: ast.Call) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg in {"name", "key"}:
            return keyword.value
    return call.args[0] if call.args else None


def _key_source(ctx: FileContext, call: ast.Call, func: FunctionNode) -> ast.JoinedStr | None:
    """The f-string a key is built from, inline or through one local assignment."""
    key = _key_arg(call)
    if isinstance(key, ast.JoinedStr):
        return key
    if isinstance(key, ast.Name):
        for value in ctx.assignments(func).get(key.id, ()):
            if isinstance(value, ast.JoinedStr):
                return value
    return None


def _versioned(key: ast.JoinedStr) -> bool:
    literal = "|".join(
        v.value for v in key.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
    )
    if _VERSION.search(literal):
        return True
    for value in key.values:
        if isinstance(value, ast.FormattedValue):
            for sub in ast.walk(value.value):
                name = sub.id if isinstance(sub, ast.Name) else getattr(sub, "attr", "")
                if isinstance(name, str) and ("version" in name.lower() or name.lower() == "ver"):
                    return True
    return False


def _built_key(ctx: FileContext, node: ast.expr, func: FunctionNode) -> bool:
    """True when the key is assembled in this function (f-string, concat, format, join)."""
    if isinstance(node, ast.Name):
        return any(
            not isinstance(v, ast.Name) and _built_key(ctx, v, func)
            for v in ctx.assignments(func).get(node.id, ())
        )
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return any(
            isinstance(side, ast.Constant | ast.JoinedStr) for side in (node.left, node.right)
        )
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"format", "join"}
        and isinstance(node.func.value, ast.Constant)
    )


def _read_through(ctx: FileContext, func: FunctionNode) -> dict[ast.Call, ast.Call]:
    """``get`` call -> matching ``set`` call of each hand-written read-through block."""
    gets: list[tuple[ast.Call, str]] = []  # (get call, variable holding the cached value)
    sets: list[ast.Call] = []
    returns: list[ast.Return] = []
    for node in ctx.scope_nodes(func):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            value = node.value.value if isinstance(node.value, ast.Await) else None
            if (
                isinstance(target, ast.Name)
                and isinstance(value, ast.Call)
                and isinstance(value.func, ast.Attribute)
                and value.func.attr == "get"
                and value.args
                and _built_key(ctx, value.args[0], func)
            ):
                gets.append((value, target.id))
        elif (
            isinstance(node, ast.Await)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and node.value.func.attr in _WRITES
            and node.value.args
        ):
            sets.append(node.value)
        elif isinstance(node, ast.Return) and node.value is not None:
            returns.append(node)
    blocks: dict[ast.Call, ast.Call] = {}
    for get_call, var in gets:
        assert isinstance(get_call.func, ast.Attribute)
        receiver = ast.dump(get_call.func.value)
        key = ast.dump(get_call.args[0])
        if not any(var in names_loaded(r.value) for r in returns if r.value is not None):
            continue  # the cached value is never returned: a counter or a lock, not a cache
        for set_call in sets:
            assert isinstance(set_call.func, ast.Attribute)
            if (
                ast.dump(set_call.func.value) == receiver
                and ast.dump(set_call.args[0]) == key
                and set_call.lineno > get_call.lineno
                and not _writes_back(set_call, var)
            ):
                blocks[get_call] = set_call
                break
    return blocks


def _split_read_through(ctx: FileContext) -> Iterator[Finding]:
    """``cached = await get_from_cache(key)`` ... ``await save_to_cache(key, value)``: the
    same read-through, with the Redis get and set hidden in two project helpers."""
    project = ctx.project
    if project is None:
        return
    for func in ctx.functions:
        reads: list[tuple[ast.Call, str, FunctionInfo]] = []
        done: set[ast.Call] = set()
        for node in ctx.scope_nodes(func):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                value = node.value.value if isinstance(node.value, ast.Await) else node.value
                helper = _helper(ctx, value, project.cache_reads)
                if isinstance(target, ast.Name) and helper is not None:
                    assert isinstance(value, ast.Call)
                    reads.append((value, target.id, helper))
            elif isinstance(node, ast.Call) and reads:
                writer = _helper(ctx, node, project.cache_writes)
                if writer is None or not node.args:
                    continue
                key = ast.dump(node.args[0])
                for get_call, var, reader in reads:
                    if (
                        get_call not in done
                        and get_call.args
                        and ast.dump(get_call.args[0]) == key
                        and get_call.lineno < node.lineno
                        and _checked(ctx, func, var)
                        and not _writes_back(node, var)
                    ):
                        done.add(get_call)
                        caller = project.function(func)
                        read_hops = project.chain(project.cache_reads, reader, get_call, ctx.path)
                        write_hops = project.chain(project.cache_writes, writer, node, ctx.path)
                        chain = [caller.hop()] if caller is not None else []
                        yield finding(
                            ctx,
                            SC401,
                            get_call,
                            f"hand-written read-through split across helpers: "
                            f"`{reader.label}` reads the cache, `{writer.label}` "
                            f"(line {node.lineno}) writes it back",
                            chain=[*chain, *read_hops, *write_hops],
                        )


def _helper(
    ctx: FileContext, value: ast.expr, table: Mapping[FunctionInfo, object]
) -> FunctionInfo | None:
    if not isinstance(value, ast.Call) or ctx.project is None:
        return None
    target = ctx.project.resolve(ctx, value)
    callee = ctx.project.callee(target) if target is not None else None
    return callee if callee is not None and callee in table else None


def _writes_back(write: ast.Call, var: str) -> bool:
    """The write stores what was read (``session["seen"] += 1; save(key, session)``): a
    read-modify-write of stored state, not a cache filled on a miss (where the value
    written is computed, since nothing was read)."""
    values = [*write.args[1:], *(k.value for k in write.keywords)]
    return any(var in names_loaded(v) for v in values)


def _checked(ctx: FileContext, func: FunctionNode, var: str) -> bool:
    """The cached value itself is returned (``return cached``, ``return Model(cached)``); a
    counter or a lock read and written back (``return count + 1``) is not a cache."""
    for node in ctx.scope_nodes(func):
        if not isinstance(node, ast.Return) or node.value is None:
            continue
        value = node.value
        if isinstance(value, ast.Call) and len(value.args) == 1 and not value.keywords:
            value = value.args[0]
        if isinstance(value, ast.Name) and value.id == var:
            return True
    return False
