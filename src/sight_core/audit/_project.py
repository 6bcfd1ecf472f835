"""The project index: every module's symbols, a call graph and per-function summaries.

Built once per scan (pass 1) from the parsed files; the rules (pass 2) ask it what a call
resolves to and what a function does transitively. Resolution follows only what the source
states: module-level functions and classes, methods through ``self``/``cls`` (and the
class's bases found in the project), absolute and relative imports, and plain
``alias = name`` assignments at module level. Anything else is unknown and is never guessed.

Summaries are computed to a fixpoint over the graph:

- *blocks the loop*: a plain ``def`` that makes a blocking call (``time.sleep``,
  ``requests``, a sync client, a sync LangChain ``invoke``) or calls a ``def`` that does;
- *awaits the network*: an ``async def`` that awaits an LLM, HTTP, database, Redis or
  graph call, or awaits a project coroutine that does;
- *reads / writes the cache*: a function that does a Redis ``get`` / ``set``, directly
  or through another such function;
- *reached from a request*: a FastAPI route, a ``Depends(...)`` target, or anything they
  call (directly or through constructors).

Each summary keeps the next hop, so a finding can print its chain:
``health() -> get_vector_store() -> _retry() -> time.sleep``.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeAlias

from ._context import FileContext, FunctionNode, dotted
from ._model import Hop

__all__ = ["ClassInfo", "FunctionInfo", "ProjectIndex", "Target", "module_names"]

_MAX_DEPTH = 8
_ROUTE_METHODS = frozenset(
    {"get", "post", "put", "patch", "delete", "head", "options", "api_route", "route", "websocket"}
)
_ROUTE_OWNERS = ("router", "app", "api")


@dataclass(eq=False)
class ClassInfo:
    """A class defined at module level (or nested in one)."""

    node: ast.ClassDef
    module: ModuleInfo
    qualname: str
    methods: dict[str, FunctionInfo] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.qualname}()"


@dataclass(eq=False)
class FunctionInfo:
    """One ``def``/``async def`` and the facts read from its own body (not nested scopes)."""

    node: FunctionNode
    module: ModuleInfo
    qualname: str
    owner: ClassInfo | None
    edges: list[tuple[ast.Call, Target]] = field(default_factory=list)

    @property
    def ctx(self) -> FileContext:
        return self.module.ctx

    @property
    def is_async(self) -> bool:
        return isinstance(self.node, ast.AsyncFunctionDef)

    @property
    def label(self) -> str:
        return f"{self.qualname}()"

    def hop(self) -> Hop:
        """This function at its ``def`` line."""
        return Hop(self.label, self.ctx.path, self.node.lineno)


Target: TypeAlias = FunctionInfo | ClassInfo


@dataclass(eq=False)
class ModuleInfo:
    """One parsed file: its names, imports (absolute and relative) and module-level aliases."""

    ctx: FileContext
    name: str
    is_package: bool
    imports: dict[str, str] = field(default_factory=dict)
    defs: dict[str, Target] = field(default_factory=dict)
    aliases: dict[str, ast.expr] = field(default_factory=dict)
    local_defs: dict[ast.AST, dict[str, FunctionNode]] = field(default_factory=dict)
    """Functions defined inside a function, by the enclosing function."""


# A summary step: the call in this function that leads on, and where it leads (None: the
# call itself is the leaf, described by the label).
@dataclass(frozen=True, slots=True)
class _Step:
    site: ast.AST
    then: FunctionInfo | None
    label: str
    code: str = ""


def module_names(path: str, roots: Iterable[str], files: frozenset[str]) -> list[str]:
    """Dotted names a file can be imported as: from its package chain (``__init__.py``
    files among ``files``), then relative to each scan root and to the root's parent."""
    absolute = os.path.abspath(path)
    stem = os.path.splitext(absolute)[0]
    if os.path.basename(stem) == "__init__":
        stem = os.path.dirname(stem)
    anchors: list[str] = []
    top = os.path.dirname(absolute)
    if os.path.join(top, "__init__.py") in files:
        while os.path.join(top, "__init__.py") in files:
            top = os.path.dirname(top)
        anchors.append(top)
    for root in roots:
        base = os.path.abspath(root)
        if not os.path.isdir(base):
            base = os.path.dirname(base)
        anchors += [os.path.dirname(base), base]
    names: list[str] = []
    for anchor in anchors:
        rel = os.path.relpath(stem, anchor)
        if rel.startswith(os.pardir) or rel == os.curdir:
            continue
        name = rel.replace(os.sep, ".")
        if name not in names and name.replace(".", "").replace("_", "").isalnum():
            names.append(name)
    return names or [os.path.basename(stem)]


class ProjectIndex:
    """Every scanned module's symbols, the resolved call graph and the summaries."""

    def __init__(self) -> None:
        self.modules: dict[str, ModuleInfo] = {}
        self._ambiguous: set[str] = set()
        self._by_node: dict[ast.AST, FunctionInfo] = {}
        self._classes: dict[ast.ClassDef, ClassInfo] = {}
        self._by_ctx: dict[int, ModuleInfo] = {}
        self._resolved: dict[ast.Call, Target | None] = {}
        self._attr_classes: dict[tuple[ClassInfo, str], ClassInfo | None] = {}
        self._mros: dict[ClassInfo, list[ClassInfo]] = {}
        self.blocks: dict[FunctionInfo, _Step] = {}
        self.network: dict[FunctionInfo, dict[str, _Step]] = {}
        self.cache_reads: dict[FunctionInfo, _Step] = {}
        self.cache_writes: dict[FunctionInfo, _Step] = {}
        self.request: dict[FunctionInfo, _Step | None] = {}
        self.client_builders: dict[FunctionInfo, _Step] = {}

    # -- pass 1: symbols ------------------------------------------------------------------

    def add(self, ctx: FileContext, names: list[str]) -> None:
        """Index one parsed file under its possible module names (first one canonical)."""
        is_package = os.path.basename(ctx.path) in {"__init__.py", "__init__.pyi"}
        module = ModuleInfo(ctx=ctx, name=names[0], is_package=is_package)
        self._by_ctx[id(ctx)] = module
        for name in names:
            if name in self._ambiguous:
                continue
            if name in self.modules and self.modules[name] is not module:
                del self.modules[name]
                self._ambiguous.add(name)
                continue
            self.modules[name] = module
        self._read_imports(module)
        for stmt in ctx.tree.body:
            self._define(module, stmt, prefix="", owner=None, into=module.defs)
            if (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
                and dotted(stmt.value) is not None
            ):
                module.aliases[stmt.targets[0].id] = stmt.value
        for func in ctx.functions:
            outer_scope = ctx.scope_of(func)
            if outer_scope is not None:
                module.local_defs.setdefault(outer_scope, {})[func.name] = func
            if func not in self._by_node:
                # a function nested in another one
                outer = ctx.scope_of(func)
                parent = self._by_node.get(outer) if outer is not None else None
                prefix = f"{parent.qualname}." if parent is not None else ""
                owner = parent.owner if parent is not None else None
                self._by_node[func] = FunctionInfo(func, module, prefix + func.name, owner)

    def _define(
        self,
        module: ModuleInfo,
        stmt: ast.stmt,
        prefix: str,
        owner: ClassInfo | None,
        into: dict[str, Target],
    ) -> None:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            info = FunctionInfo(stmt, module, prefix + stmt.name, owner)
            self._by_node[stmt] = info
            into[stmt.name] = info
        elif isinstance(stmt, ast.ClassDef):
            cls = ClassInfo(stmt, module, prefix + stmt.name)
            self._classes[stmt] = cls
            into[stmt.name] = cls
            members: dict[str, Target] = {}
            for sub in stmt.body:
                self._define(module, sub, f"{cls.qualname}.", cls, members)
            cls.methods = {k: v for k, v in members.items() if isinstance(v, FunctionInfo)}
        elif isinstance(stmt, ast.If | ast.Try):
            for sub in [*stmt.body, *stmt.orelse]:
                self._define(module, sub, prefix, owner, into)

    def _read_imports(self, module: ModuleInfo) -> None:
        base = module.name.split(".")
        if not module.is_package:
            base = base[:-1]
        # module-level imports first; those inside functions and if/try blocks count too
        nodes = module.ctx.import_nodes
        for node in sorted(nodes, key=lambda n: module.ctx.scope_of(n) is not None):
            self._import(module, node, base)

    @staticmethod
    def _import(module: ModuleInfo, node: ast.AST, base: list[str]) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    module.imports.setdefault(alias.asname, alias.name)
                else:
                    top = alias.name.split(".", 1)[0]
                    module.imports.setdefault(top, top)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                keep = len(base) - (node.level - 1)
                if keep < 0:
                    return
                source = ".".join([*base[:keep], *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                if alias.name != "*":
                    name = f"{source}.{alias.name}" if source else alias.name
                    module.imports.setdefault(alias.asname or alias.name, name)

    # -- look-ups ---------------------------------------------------------------------------

    def function(self, node: ast.AST | None) -> FunctionInfo | None:
        """The indexed function for a ``def`` node."""
        return self._by_node.get(node) if node is not None else None

    def module_of(self, ctx: FileContext) -> ModuleInfo | None:
        return self._by_ctx.get(id(ctx))

    def functions(self) -> Iterator[FunctionInfo]:
        return iter(self._by_node.values())

    def resolve(self, ctx: FileContext, call: ast.Call) -> Target | None:
        """What ``call`` calls inside the project, or ``None`` when unknown."""
        try:
            return self._resolved[call]
        except KeyError:
            pass
        module = self._by_ctx.get(id(ctx))
        found = (
            None
            if module is None
            else self._resolve_expr(module, ctx.scope_of(call), call.func, call, 0)
        )
        self._resolved[call] = found
        return found

    def resolve_expr(self, ctx: FileContext, expr: ast.expr, at: ast.AST) -> Target | None:
        """What the name or dotted chain ``expr`` (seen at ``at``) refers to in the project."""
        module = self._by_ctx.get(id(ctx))
        if module is None:
            return None
        return self._resolve_expr(module, ctx.scope_of(at), expr, at, 0)

    def _resolve_expr(
        self,
        module: ModuleInfo,
        scope: ast.AST | None,
        expr: ast.expr,
        at: ast.AST,
        depth: int,
    ) -> Target | None:
        if depth > _MAX_DEPTH:
            return None
        if (
            isinstance(expr, ast.Attribute)
            and isinstance(expr.value, ast.Call)
            and dotted(expr.value.func) == "super"
            and not expr.value.args
        ):
            # super().method(): the next class after the owner in its MRO that has it
            func = self._by_node.get(scope) if scope is not None else None
            if func is None or func.owner is None:
                return None
            for cls in self._mro(func.owner)[1:]:
                if expr.attr in cls.methods:
                    return cls.methods[expr.attr]
            return None
        name = dotted(expr)
        if name is None:
            return None
        parts = name.split(".")
        head = parts[0]
        if head in {"self", "cls"} and len(parts) <= 3:
            func = self._by_node.get(scope) if scope is not None else None
            while func is not None and func.owner is None:
                outer = func.ctx.scope_of(func.node)
                func = self._by_node.get(outer) if outer is not None else None
            if func is None or func.owner is None:
                return None
            if len(parts) == 1:
                # cls(...) in a classmethod builds the class
                return func.owner if head == "cls" else None
            if len(parts) == 3:
                # self.store.search(): the class self.store was built from, if one is stated
                held = self._attribute_class(func.owner, parts[1], depth + 1)
                return self._method(held, parts[2], 0) if held is not None else None
            return self._method(func.owner, parts[1], 0)
        # a function defined in an enclosing function
        s = scope
        while s is not None:
            local = module.local_defs.get(s)
            if local is not None and head in local:
                return self._by_node.get(local[head]) if len(parts) == 1 else None
            if head in module.ctx.assignments(s) or head in _parameters(s):
                # a local name shadows the module's; known only when it visibly holds an
                # instance of a project class (annotation or the one constructor call)
                if len(parts) != 2:
                    return None
                held = self._local_class(module, s, head, depth + 1)
                return self._method(held, parts[1], 0) if held is not None else None
            s = module.ctx.scope_of(s)
        if head in module.defs:
            return self._member(module.defs[head], parts[1:])
        if head in module.aliases:
            alias = module.aliases[head]
            if len(parts) == 1:
                return self._resolve_expr(module, None, alias, at, depth + 1)
            return None
        if head in module.imports:
            return self._lookup(".".join([module.imports[head], *parts[1:]]), depth + 1)
        return None

    def _class_of(self, module: ModuleInfo, expr: ast.expr | None, depth: int) -> ClassInfo | None:
        """The project class an annotation or a value names (``Service``, ``Service(...)``,
        ``"Service"``); ``None`` for anything else (``Service | None`` included)."""
        if expr is None or depth > _MAX_DEPTH:
            return None
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            try:
                expr = ast.parse(expr.value, mode="eval").body
            except SyntaxError:
                return None
        if isinstance(expr, ast.Call):
            found = self._resolve_expr(module, None, expr.func, expr, depth)
        elif isinstance(expr, ast.Name | ast.Attribute):
            found = self._resolve_expr(module, None, expr, expr, depth)
        else:
            return None
        return found if isinstance(found, ClassInfo) else None

    def _local_class(
        self, module: ModuleInfo, scope: ast.AST, name: str, depth: int
    ) -> ClassInfo | None:
        if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
            args = scope.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                if arg.arg == name:
                    return self._class_of(module, arg.annotation, depth)
        values = module.ctx.assignments(scope).get(name, [])
        if len(values) != 1:
            return None
        return self._class_of(module, values[0], depth) if isinstance(values[0], ast.Call) else None

    def _attribute_class(self, cls: ClassInfo, attr: str, depth: int) -> ClassInfo | None:
        """The class of ``self.attr``: every assignment to it in the class's methods builds
        the same project class (or an annotated ``__init__`` parameter stored there)."""
        key = (cls, attr)
        if key in self._attr_classes:
            return self._attr_classes[key]
        self._attr_classes[key] = None  # guards recursion
        found: set[ClassInfo | None] = set()
        for method in cls.methods.values():
            for node in method.ctx.scope_nodes(method.node):
                if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
                    continue
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if (
                        isinstance(target, ast.Attribute)
                        and target.attr == attr
                        and isinstance(target.value, ast.Name)
                        and target.value.id == "self"
                    ):
                        value = node.value
                        if isinstance(value, ast.Name):
                            found.add(self._local_class(cls.module, method.node, value.id, depth))
                        else:
                            found.add(self._class_of(cls.module, value, depth))
        result = found.pop() if len(found) == 1 else None
        self._attr_classes[key] = result
        return result

    def _member(self, target: Target, rest: list[str]) -> Target | None:
        if not rest:
            return target
        if isinstance(target, ClassInfo) and len(rest) == 1:
            return self._method(target, rest[0], 0)
        return None

    def _method(self, cls: ClassInfo, name: str, depth: int) -> FunctionInfo | None:
        """``name`` as Python finds it on ``cls``: the first class of its MRO defining it."""
        for klass in self._mro(cls):
            if name in klass.methods:
                return klass.methods[name]
        return None

    def _mro(self, cls: ClassInfo) -> list[ClassInfo]:
        """``cls`` and its project bases in method resolution order (C3, as Python
        computes it); bases outside the project are left out. A hierarchy that is
        cyclic or has no consistent order gives ``[cls]`` and depth-first bases."""
        if cls in self._mros:
            return self._mros[cls]
        self._mros[cls] = [cls]  # guards a cyclic hierarchy
        bases = [
            found
            for base in cls.node.bases
            if isinstance(found := self._resolve_expr(cls.module, None, base, base, 0), ClassInfo)
        ]
        sequences = [list(self._mro(b)) for b in bases] + [list(bases)]
        order = [cls]
        while any(sequences):
            head = next(
                (
                    seq[0]
                    for seq in sequences
                    if seq and not any(seq[0] in other[1:] for other in sequences)
                ),
                None,
            )
            if head is None or head in order:
                order = [cls]
                for base in bases:
                    order += [k for k in self._mro(base) if k not in order]
                break
            order.append(head)
            sequences = [seq[1:] if seq and seq[0] is head else seq for seq in sequences]
        self._mros[cls] = order
        return order

    def _lookup(self, qualified: str, depth: int) -> Target | None:
        """``pkg.mod.func`` or ``pkg.mod.Class.method`` to its definition, following
        re-exports (``from .impl import func`` in a package ``__init__``)."""
        if depth > _MAX_DEPTH:
            return None
        parts = qualified.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            module = self.modules.get(".".join(parts[:cut]))
            if module is None:
                continue
            rest = parts[cut:]
            head = rest[0]
            if head in module.defs:
                return self._member(module.defs[head], rest[1:])
            if head in module.imports:
                return self._lookup(".".join([module.imports[head], *rest[1:]]), depth + 1)
            if head in module.aliases and len(rest) == 1:
                return self._resolve_expr(
                    module, None, module.aliases[head], module.ctx.tree, depth
                )
            return None
        return None

    # -- pass 1b: edges and summaries --------------------------------------------------------

    def build(self) -> None:
        """Resolve every call, read each function's own facts, then run the fixpoints."""
        from ._facts import direct_facts  # the facts use the rule tables

        routes: list[FunctionInfo] = []
        dependencies: set[FunctionInfo] = set()
        for info in list(self._by_node.values()):
            ctx = info.ctx
            for node in ctx.scope_nodes(info.node):
                if isinstance(node, ast.Call):
                    target = self.resolve(ctx, node)
                    if target is not None:
                        info.edges.append((node, target))
                    dep = _depends_target(ctx, node)
                    if dep is not None:
                        resolved = self._resolve_expr(info.module, info.node, dep, node, 0)
                        if isinstance(resolved, FunctionInfo):
                            dependencies.add(resolved)
            for default in [*info.node.args.defaults, *info.node.args.kw_defaults]:
                for sub in ast.walk(default) if default is not None else ():
                    if isinstance(sub, ast.Call):
                        dep = _depends_target(ctx, sub)
                        if dep is not None:
                            resolved = self._resolve_expr(info.module, None, dep, sub, 0)
                            if isinstance(resolved, FunctionInfo):
                                dependencies.add(resolved)
            if _is_route(info.node):
                routes.append(info)
            facts = direct_facts(info)
            if facts.blocking is not None:
                code, label, site = facts.blocking
                self.blocks[info] = _Step(site, None, label, code)
            for category, (label, site) in facts.network.items():
                self.network.setdefault(info, {})[category] = _Step(site, None, label)
            if facts.cache_read is not None:
                self.cache_reads[info] = _Step(facts.cache_read[1], None, facts.cache_read[0])
            if facts.cache_write is not None:
                self.cache_writes[info] = _Step(facts.cache_write[1], None, facts.cache_write[0])
            if facts.client is not None:
                self.client_builders[info] = _Step(facts.client[1], None, facts.client[0])
        # module-level Depends(...) (e.g. Annotated aliases) mark dependencies too
        for module in set(self._by_ctx.values()):
            for node in module.ctx.scope_nodes(None):
                if isinstance(node, ast.Call):
                    dep = _depends_target(module.ctx, node)
                    if dep is not None:
                        resolved = self._resolve_expr(module, None, dep, node, 0)
                        if isinstance(resolved, FunctionInfo):
                            dependencies.add(resolved)
        self._fixpoints()
        self._reach([*routes, *sorted(dependencies, key=_position)])

    def _fixpoints(self) -> None:
        """Propagate the summaries from callees to callers until nothing changes: a
        worklist, so a chain of any length settles (each table only grows)."""
        callers: dict[FunctionInfo, list[FunctionInfo]] = {}
        for info in self._by_node.values():
            for _, target in info.edges:
                callee = self.callee(target)
                if callee is not None:
                    callers.setdefault(callee, []).append(info)
        todo = list(reversed(self._by_node.values()))
        queued = set(todo)
        while todo:
            info = todo.pop()
            queued.discard(info)
            if self._propagate(info):
                for caller in callers.get(info, ()):
                    if caller not in queued:
                        queued.add(caller)
                        todo.append(caller)

    def _propagate(self, info: FunctionInfo) -> bool:
        """Take over what ``info``'s callees do; True when a summary of ``info`` grew."""
        changed = False
        for call, target in info.edges:
            callee = self.callee(target)
            if callee is None:
                continue
            awaited = info.ctx.is_awaited(call)
            if not info.is_async and not callee.is_async and info not in self.blocks:
                step = self.blocks.get(callee)
                if step is not None:
                    self.blocks[info] = _Step(call, callee, callee.label, step.code)
                    changed = True
            if info.is_async and callee.is_async and awaited:
                theirs = self.network.get(callee)
                if theirs:
                    mine = self.network.setdefault(info, {})
                    for category in theirs:
                        if category not in mine:
                            mine[category] = _Step(call, callee, callee.label)
                            changed = True
            if callee.is_async == info.is_async or awaited:
                for table in (self.cache_reads, self.cache_writes):
                    if info not in table and callee in table:
                        table[info] = _Step(call, callee, callee.label)
                        changed = True
        return changed

    def _reach(self, roots: list[FunctionInfo]) -> None:
        todo = list(roots)
        for root in roots:
            self.request[root] = None
        while todo:
            info = todo.pop()
            for call, target in info.edges:
                callee = self.callee(target)
                if callee is not None and callee not in self.request:
                    self.request[callee] = _Step(call, info, info.label)
                    todo.append(callee)

    # -- chains --------------------------------------------------------------------------

    def client_in_init(self, cls: ClassInfo) -> list[Hop] | None:
        """When building ``cls`` opens a client (in ``__init__`` or a method it calls on
        ``self``): the hops from ``__init__`` to the constructor call, else ``None``."""
        init = self._method(cls, "__init__", 0)
        if init is None:
            return None
        step = self.client_builders.get(init)
        if step is not None:
            return [Hop(step.label, init.ctx.path, getattr(step.site, "lineno", 1))]
        for call, target in init.edges:
            helper = self.callee(target)
            if helper is not None and helper.owner is init.owner and helper in self.client_builders:
                inner = self.client_builders[helper]
                return [
                    Hop(helper.label, init.ctx.path, call.lineno),
                    Hop(inner.label, helper.ctx.path, getattr(inner.site, "lineno", 1)),
                ]
        return None

    def callee(self, target: Target) -> FunctionInfo | None:
        """The function a resolved call runs: itself, or a class's (inherited) ``__init__``."""
        if isinstance(target, ClassInfo):
            return self._method(target, "__init__", 0)
        return target

    def chain(
        self, table: dict[FunctionInfo, _Step], start: FunctionInfo, site: ast.AST, path: str
    ) -> list[Hop]:
        """``start`` (called at ``site`` in the file ``path``) and the hops down to the leaf."""
        hops = [Hop(start.label, path, getattr(site, "lineno", 1))]
        current: FunctionInfo | None = start
        seen: set[FunctionInfo] = set()
        while current is not None and current not in seen:
            seen.add(current)
            step = table.get(current)
            if step is None:
                break
            hops.append(Hop(step.label, current.ctx.path, getattr(step.site, "lineno", 1)))
            current = step.then
        return hops

    def network_chain(
        self, start: FunctionInfo, categories: Iterable[str]
    ) -> tuple[str, list[Hop]] | None:
        """The first of ``categories`` that ``start`` awaits (transitively), with its chain."""
        steps = self.network.get(start, {})
        for category in categories:
            step = steps.get(category)
            if step is None:
                continue
            hops = [start.hop()]
            current: FunctionInfo | None = start
            seen: set[FunctionInfo] = set()
            while current is not None and current not in seen:
                seen.add(current)
                here = self.network.get(current, {}).get(category)
                if here is None:
                    break
                hops.append(Hop(here.label, current.ctx.path, getattr(here.site, "lineno", 1)))
                current = here.then
            return category, hops
        return None

    def request_chain(self, info: FunctionInfo) -> list[Hop] | None:
        """From the route or dependency that reaches ``info`` down to it, or ``None``."""
        if info not in self.request:
            return None
        hops: list[Hop] = []
        current: FunctionInfo | None = info
        seen: set[FunctionInfo] = set()
        while current is not None and current not in seen:
            seen.add(current)
            step = self.request.get(current)
            if step is None:
                hops.append(current.hop())
                break
            assert step.then is not None
            hops.append(Hop(current.label, step.then.ctx.path, getattr(step.site, "lineno", 1)))
            current = step.then
        return list(reversed(hops))


def _position(info: FunctionInfo) -> tuple[str, str, int]:
    """A stable order for functions (set order follows memory addresses, so a chain picked
    from a set would change between two runs)."""
    return info.module.name, info.qualname, info.node.lineno


def _parameters(scope: ast.AST) -> set[str]:
    if not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        return set()
    args = scope.args
    names = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
    if args.vararg is not None:
        names.add(args.vararg.arg)
    if args.kwarg is not None:
        names.add(args.kwarg.arg)
    return names


def _depends_target(ctx: FileContext, call: ast.Call) -> ast.expr | None:
    name = ctx.call_name(call)
    if name is None or name.rsplit(".", 1)[-1] != "Depends" or not call.args:
        return None
    return call.args[0]


def _is_route(func: FunctionNode) -> bool:
    """``@router.get(...)``, ``@app.post(...)``: a FastAPI (or Starlette-style) route."""
    for deco in func.decorator_list:
        if (
            isinstance(deco, ast.Call)
            and isinstance(deco.func, ast.Attribute)
            and deco.func.attr in _ROUTE_METHODS
        ):
            owner = (dotted(deco.func.value) or "").rsplit(".", 1)[-1].lower()
            if any(word in owner for word in _ROUTE_OWNERS):
                return True
    return False
