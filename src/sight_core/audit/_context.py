"""One parsed file and what the rules ask about it: parents, imports, what a name is bound to.

Everything is computed from the syntax tree in one walk plus lazy, cached look-ups; nothing
is imported or executed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias

from ._model import DEFAULT_DOCS_BASE

if TYPE_CHECKING:
    from ._project import ProjectIndex

__all__ = [
    "FileContext",
    "FunctionNode",
    "Kind",
    "ScopeNode",
    "dotted",
    "is_async_scope",
    "names_loaded",
]

FunctionNode: TypeAlias = ast.FunctionDef | ast.AsyncFunctionDef
ScopeNode: TypeAlias = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
Kind: TypeAlias = Literal[
    "db",
    "sync_db",
    "session_factory",
    "redis",
    "sync_redis",
    "http",
    "sync_http",
    "graph",
    "sync_graph",
    "llm",
    "repo",
]

# Qualified constructor or factory name -> what the object it returns is.
_CTOR_KINDS: dict[str, Kind] = {
    "sqlalchemy.ext.asyncio.AsyncSession": "db",
    "sqlalchemy.ext.asyncio.async_sessionmaker": "session_factory",
    "sqlalchemy.ext.asyncio.async_scoped_session": "session_factory",
    "sqlalchemy.orm.Session": "sync_db",
    "sqlalchemy.orm.sessionmaker": "session_factory",
    "sight_core.db.create_sessionmaker": "session_factory",
    "redis.asyncio.Redis": "redis",
    "redis.asyncio.StrictRedis": "redis",
    "redis.asyncio.from_url": "redis",
    "redis.asyncio.Redis.from_url": "redis",
    "redis.asyncio.client.Redis": "redis",
    "redis.Redis": "sync_redis",
    "redis.StrictRedis": "sync_redis",
    "redis.from_url": "sync_redis",
    "redis.Redis.from_url": "sync_redis",
    "redis.client.Redis": "sync_redis",
    "httpx.AsyncClient": "http",
    "aiohttp.ClientSession": "http",
    "httpx.Client": "sync_http",
    "requests.Session": "sync_http",
    "requests.session": "sync_http",
    "neo4j.AsyncGraphDatabase.driver": "graph",
    "neo4j.GraphDatabase.driver": "sync_graph",
    "sight_core.graph.create_driver": "graph",
    "sight_core.graph.GraphClient": "graph",
    "langchain_google_genai.ChatGoogleGenerativeAI": "llm",
    "langchain_google_vertexai.ChatVertexAI": "llm",
    "langchain_openai.ChatOpenAI": "llm",
    "langchain_anthropic.ChatAnthropic": "llm",
    "sight_core.llm.build_chat_model": "llm",
}

# Last segment of an annotation -> kind, when the module is not needed to decide.
_ANNOTATION_KINDS: dict[str, Kind] = {
    "AsyncSession": "db",
    "async_sessionmaker": "session_factory",
    "sessionmaker": "session_factory",
    "AsyncClient": "http",
    "ClientSession": "http",
    "AsyncDriver": "graph",
    "GraphClient": "graph",
    "Driver": "sync_graph",
    "BaseChatModel": "llm",
    "BaseLanguageModel": "llm",
    "Runnable": "llm",
    "RunnableSerializable": "llm",
    "ChatGoogleGenerativeAI": "llm",
}

_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_NESTED = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
# statements that bind names: indexed per scope for _bindings() and assignments()
_BINDERS = frozenset({ast.Assign, ast.AnnAssign, ast.NamedExpr, ast.With, ast.AsyncWith})
# node types _note files somewhere (calls are handled inline, they are the most common)
_NOTED = frozenset(
    {*_NESTED, ast.For, ast.AsyncFor, ast.Try, ast.TryStar, ast.Import, ast.ImportFrom}
)
_CONTAINERS = frozenset(
    {
        "dict",
        "list",
        "set",
        "frozenset",
        "tuple",
        "type",
        "Dict",
        "List",
        "Set",
        "Tuple",
        "Type",
        "Mapping",
        "MutableMapping",
        "Sequence",
        "Iterable",
        "Iterator",
        "Collection",
        "deque",
        "defaultdict",
        "WeakKeyDictionary",
        "WeakValueDictionary",
    }
)
_REPO_NAME = re.compile(r"(^|_)(repo|repository|repos|repositories)$")
_DB_NAMES = frozenset({"session", "db", "db_session", "dbsession", "sess", "async_db"})
_HTTP_NAMES = frozenset({"http", "http_client", "httpx_client", "api_client", "client_http"})
_LLM_NAMES = re.compile(r"(^|_)(llm|llms|chain|chat|chat_model|model|runnable|agent|structured)$")


def dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, ``None`` for anything else."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def names_loaded(node: ast.AST) -> set[str]:
    """Every plain name read anywhere inside ``node``."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def is_async_scope(scope: ScopeNode | None) -> bool:
    """True when code directly in ``scope`` runs on the event loop (an ``async def`` body)."""
    return isinstance(scope, ast.AsyncFunctionDef)


def _last(name: str) -> str:
    return name.rsplit(".", 1)[-1]


@dataclass
class FileContext:
    """A parsed file plus indexes built in one walk; rules read it, never mutate it."""

    path: str
    source: str
    tree: ast.Module
    lines: list[str] = field(default_factory=list)
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)
    imports: dict[str, str] = field(default_factory=dict)
    functions: list[FunctionNode] = field(default_factory=list)
    calls: list[ast.Call] = field(default_factory=list)
    loops: list[ast.For | ast.AsyncFor] = field(default_factory=list)
    trys: list[ast.Try | ast.TryStar] = field(default_factory=list)
    import_nodes: list[ast.Import | ast.ImportFrom] = field(default_factory=list)
    _kinds: dict[ast.AST, dict[str, Kind]] = field(default_factory=dict)
    _scopes: dict[ast.AST, ScopeNode | None] = field(default_factory=dict)
    _members: dict[ast.AST, list[ast.AST]] = field(default_factory=dict)
    _assigned: dict[ast.AST, dict[str, list[ast.expr]]] = field(default_factory=dict)
    _call_names: dict[ast.Call, str | None] = field(default_factory=dict)
    _binders: dict[ast.AST, list[ast.AST]] = field(default_factory=dict)
    _loop_bodies: dict[ast.AST, list[ast.AST]] = field(default_factory=dict)
    project: ProjectIndex | None = None
    """The scan's project index (call graph and summaries), set before the rules run."""
    docs_base: str = DEFAULT_DOCS_BASE

    @classmethod
    def build(cls, path: str, source: str, tree: ast.Module) -> FileContext:
        """Index ``tree`` in one pre-order walk.

        Parent links, the enclosing function of every node, the nodes of each scope (a
        function, lambda, class body or the module, without nested scopes) in source order,
        imports, and lists of functions, calls, loops and try blocks. Recursive for speed;
        a tree too deep for the interpreter's stack is indexed again iteratively.
        """
        ctx = cls(path=path, source=source, tree=tree, lines=source.splitlines())
        try:
            ctx._index_recursive(tree)
        except RecursionError:
            ctx = cls(path=path, source=source, tree=tree, lines=ctx.lines)
            ctx._index_iterative(tree)
        return ctx

    def _index_recursive(self, tree: ast.Module) -> None:
        parents = self.parents
        scopes = self._scopes
        members = self._members
        note = self._note
        calls = self.calls
        call_type = ast.Call
        ast_type = ast.AST

        binders = self._binders

        def visit(
            node: ast.AST, func: ScopeNode | None, bucket: ast.AST, out: list[ast.AST]
        ) -> None:
            out.append(node)
            scopes[node] = func
            # dispatch on the exact type (ast node classes are never subclassed): an identity
            # test and set lookups instead of an isinstance chain per node; mypy cannot narrow
            # on it, hence the two ignores below
            kind = type(node)
            if kind is call_type:
                calls.append(node)  # type: ignore[arg-type]
            elif kind in _BINDERS:
                binders.setdefault(bucket, []).append(node)
            elif kind in _NOTED:
                if kind in _NESTED:
                    out = members[node] = []
                    bucket = node
                    if kind in _FUNCS:
                        func = node  # type: ignore[assignment]
                note(node)
            for name in node._fields:
                value = getattr(node, name, None)
                if isinstance(value, list):
                    for item in value:
                        if isinstance(item, ast_type):
                            parents[item] = node
                            visit(item, func, bucket, out)
                elif isinstance(value, ast_type):
                    parents[value] = node
                    visit(value, func, bucket, out)

        top: list[ast.AST] = []
        members[tree] = top
        scopes[tree] = None
        for stmt in tree.body:
            parents[stmt] = tree
            visit(stmt, None, tree, top)

    def _index_iterative(self, tree: ast.Module) -> None:
        members = self._members
        members[tree] = []
        stack: list[tuple[ast.AST, ScopeNode | None, ast.AST]] = [(tree, None, tree)]
        while stack:
            node, func, bucket = stack.pop()
            if node is not tree:
                members[bucket].append(node)
            self._scopes[node] = func
            if isinstance(node, _NESTED):
                members[node] = []
                bucket = node
                if isinstance(node, _FUNCS):
                    func = node
            if isinstance(node, ast.Call):
                self.calls.append(node)
            elif type(node) in _BINDERS:
                self._binders.setdefault(bucket, []).append(node)
            elif node is not tree:
                self._note(node)
            for child in reversed(list(ast.iter_child_nodes(node))):
                self.parents[child] = node
                stack.append((child, func, bucket))

    def _note(self, node: ast.AST) -> None:
        """File the node in the per-kind lists and record imports (calls are filed by the
        walkers themselves)."""
        if isinstance(node, ast.For | ast.AsyncFor):
            self.loops.append(node)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            self.functions.append(node)
        elif isinstance(node, ast.Try | ast.TryStar):
            self.trys.append(node)
        elif isinstance(node, ast.Import):
            self.import_nodes.append(node)
            for alias in node.names:
                if alias.asname:
                    self.imports[alias.asname] = alias.name
                else:
                    top = alias.name.split(".", 1)[0]
                    self.imports[top] = top
        elif isinstance(node, ast.ImportFrom):
            self.import_nodes.append(node)
            if not node.module or node.level:
                return
            for alias in node.names:
                self.imports[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    # -- names ---------------------------------------------------------------------------

    def qualify(self, node: ast.expr) -> str | None:
        """The dotted name of ``node`` with its first part resolved through the imports."""
        name = dotted(node)
        if name is None:
            return None
        head, _, rest = name.partition(".")
        full = self.imports.get(head)
        if full is None:
            return name
        return f"{full}.{rest}" if rest else full

    def call_name(self, call: ast.Call) -> str | None:
        """Qualified name of what ``call`` calls (``asyncio.gather``), if it is a plain chain."""
        try:
            return self._call_names[call]
        except KeyError:
            name = self._call_names[call] = self.qualify(call.func)
            return name

    # -- structure -----------------------------------------------------------------------

    def scope_of(self, node: ast.AST) -> ScopeNode | None:
        """The nearest enclosing function or lambda of ``node`` (``None`` at module level)."""
        return self._scopes.get(node)

    def scope_nodes(self, scope: ast.AST | None) -> list[ast.AST]:
        """Nodes of one function, lambda, class body or module (``None``), in source order,
        without the insides of nested functions, lambdas and classes."""
        return self._members.get(scope if scope is not None else self.tree, [])

    def loop_body(self, loop: ast.For | ast.AsyncFor | ast.While) -> list[ast.AST]:
        """Nodes of a loop's body in source order, without nested scopes (cached)."""
        cached = self._loop_bodies.get(loop)
        if cached is None:
            cached = self._loop_bodies[loop] = list(_walk_block(loop.body))
        return cached

    def assignments(self, scope: ast.AST | None) -> dict[str, list[ast.expr]]:
        """``name -> [values]`` of plain ``name = value`` assignments in one scope, in order."""
        key = scope if scope is not None else self.tree
        cached = self._assigned.get(key)
        if cached is not None:
            return cached
        found: dict[str, list[ast.expr]] = {}
        for node in self._binders.get(key, ()):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        found.setdefault(target.id, []).append(node.value)
            elif (
                isinstance(node, ast.AnnAssign | ast.NamedExpr)
                and isinstance(node.target, ast.Name)
                and node.value is not None
            ):
                found.setdefault(node.target.id, []).append(node.value)
        self._assigned[key] = found
        return found

    def ancestors(self, node: ast.AST) -> Iterator[ast.AST]:
        """Parents of ``node``, nearest first, up to the module."""
        parent = self.parents.get(node)
        while parent is not None:
            yield parent
            parent = self.parents.get(parent)

    def is_awaited(self, call: ast.Call) -> bool:
        """True when ``call`` is the direct operand of ``await``."""
        return isinstance(self.parents.get(call), ast.Await)

    def snippet(self, node: ast.AST) -> str:
        """The first source line of ``node``, stripped and cut to 120 characters."""
        line = getattr(node, "lineno", 1)
        text = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""
        return text if len(text) <= 120 else text[:117] + "..."

    # -- what names are bound to -----------------------------------------------------------

    def kind_of(
        self, node: ast.expr, at: ast.AST | None = None, *, guess: bool = True
    ) -> Kind | None:
        """What ``node`` (a name, ``self.attr`` or a longer chain) most likely is.

        Evidence first (annotations, ``Depends(get_session)``, the constructor it was built
        with, in the enclosing functions, the class's ``__init__`` or the module), then the
        conventional names (``session``, ``redis``, ``llm``, ``*_repo``) unless ``guess`` is
        false.
        """
        name = dotted(node)
        if name is None:
            return None
        scope = self.scope_of(at if at is not None else node)
        parts = name.split(".")
        if len(parts) == 1:
            s: ast.AST | None = scope
            while s is not None:
                kind = self._bindings(s).get(name)
                if kind is not None:
                    return kind
                s = self.scope_of(s)
            kind = self._bindings(self.tree).get(name)
            if kind is not None:
                return kind
        elif len(parts) == 2 and parts[0] in {"self", "cls"}:
            cls_node = next((a for a in self.ancestors(node) if isinstance(a, ast.ClassDef)), None)
            if cls_node is not None:
                kind = self._class_bindings(cls_node).get(parts[1])
                if kind is not None:
                    return kind
        return self.kind_by_name(parts[-1]) if guess else None

    @staticmethod
    def kind_by_name(name: str) -> Kind | None:
        """The conventional meaning of a variable name, or ``None``."""
        low = name.lower().lstrip("_")
        if "redis" in low:
            return "redis"
        if low in _DB_NAMES or (low.endswith("_session") and "http" not in low):
            return "db"
        if _REPO_NAME.search(low) or low.endswith("repository"):
            return "repo"
        if low in _HTTP_NAMES or ("http" in low and "client" in low):
            return "http"
        if _LLM_NAMES.search(low) or "llm" in low:
            return "llm"
        if "neo4j" in low or low in {"graph", "graph_client", "driver"}:
            return "graph"
        return None

    def kind_of_value(self, value: ast.expr) -> Kind | None:
        """Kind of the object an expression builds: a known constructor, a session factory call."""
        if isinstance(value, ast.Await):
            value = value.value
        if isinstance(value, ast.BinOp) and isinstance(value.op, ast.BitOr):
            # prompt | llm | parser: a LangChain runnable
            left = self.kind_of_value(value.left) or self.kind_of(value.left)
            right = self.kind_of_value(value.right) or self.kind_of(value.right)
            return "llm" if "llm" in (left, right) else None
        if not isinstance(value, ast.Call):
            return None
        qual = self.call_name(value)
        if qual is not None:
            kind = _CTOR_KINDS.get(qual)
            if kind is not None:
                return kind
            last = _last(qual)
            if last.endswith("Repository") and last != "Repository":
                return "repo"
            if last in {"ClientSession", "AsyncClient"}:
                return "http"
        func = value.func
        if isinstance(func, ast.Attribute) and func.attr in {
            "with_structured_output",
            "with_fallbacks",
            "with_retry",
            "bind_tools",
            "bind",
        }:
            return "llm" if self.kind_of(func.value) == "llm" else None
        if isinstance(func, ast.Attribute) and func.attr == "session":
            owner = self.kind_of(func.value)
            if owner in {"graph", "sync_graph"}:
                return owner  # neo4j driver.session()
        # session_factory() / self.sessionmaker() / get_session() -> a database session
        target = dotted(func)
        if target is not None:
            if self.kind_of(func) == "session_factory":
                return "db"
            low = _last(target).lower()
            if "session" in low and "client" not in low and "http" not in low:
                return "db"
        return None

    def kind_of_annotation(self, ann: ast.expr | None) -> Kind | None:
        """Kind named by a parameter or variable annotation (``AsyncSession``, ``Redis`` ...)."""
        if ann is None:
            return None
        if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
            try:
                ann = ast.parse(ann.value, mode="eval").body
            except SyntaxError:
                return None
        if isinstance(ann, ast.Subscript):
            outer = (dotted(ann.value) or "").rsplit(".", 1)[-1]
            if outer in _CONTAINERS:
                return None  # dict[..., Session] holds sessions, it is not one
        for sub in ast.walk(ann):
            if isinstance(sub, ast.Call):
                kind = self._depends_kind(sub)
                if kind is not None:
                    return kind
            if not isinstance(sub, ast.Name | ast.Attribute):
                continue
            qual = self.qualify(sub)
            if qual is None:
                continue
            if qual in _CTOR_KINDS:
                return _CTOR_KINDS[qual]
            last = _last(qual)
            if qual.startswith("neo4j.") and last == "AsyncSession":
                return "graph"
            if last == "Redis":
                return "sync_redis" if qual in {"redis.Redis", "redis.client.Redis"} else "redis"
            if last == "Session" and qual.startswith("sqlalchemy"):
                return "sync_db"
            if last in _ANNOTATION_KINDS:
                return _ANNOTATION_KINDS[last]
            if last.endswith("Repository") and last != "Repository":
                return "repo"
        return None

    def _depends_kind(self, call: ast.Call) -> Kind | None:
        qual = self.call_name(call)
        if qual is None or _last(qual) != "Depends" or not call.args:
            return None
        dep = dotted(call.args[0])
        if dep is None:
            return None
        low = _last(dep).lower()
        if "session" in low or low.endswith("_db") or low == "db":
            return "db"
        if "redis" in low:
            return "redis"
        return None

    def _bindings(self, scope: ast.AST) -> dict[str, Kind]:
        cached = self._kinds.get(scope)
        if cached is not None:
            return cached
        kinds: dict[str, Kind] = {}
        self._kinds[scope] = kinds  # guard against recursion through kind_of
        if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            args = scope.args
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
            defaults: list[ast.expr | None] = [None] * (
                len(args.posonlyargs) + len(args.args) - len(args.defaults)
            )
            defaults += list(args.defaults)
            defaults += list(args.kw_defaults)
            for arg, default in zip(every, defaults, strict=False):
                kind = self.kind_of_annotation(arg.annotation)
                if kind is None and isinstance(default, ast.Call):
                    kind = self._depends_kind(default)
                if kind is not None:
                    kinds[arg.arg] = kind
        for node in self._binders.get(scope, ()):
            if isinstance(node, ast.Assign):
                kind = self.kind_of_value(node.value)
                if kind is not None:
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            kinds[target.id] = kind
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                kind = self.kind_of_annotation(node.annotation)
                if kind is None and node.value is not None:
                    kind = self.kind_of_value(node.value)
                if kind is not None:
                    kinds[node.target.id] = kind
            elif isinstance(node, ast.With | ast.AsyncWith):
                for item in node.items:
                    if isinstance(item.optional_vars, ast.Name):
                        kind = self.kind_of_value(item.context_expr)
                        if kind is not None:
                            kinds[item.optional_vars.id] = kind
        return kinds

    def _class_bindings(self, cls_node: ast.ClassDef) -> dict[str, Kind]:
        cached = self._kinds.get(cls_node)
        if cached is not None:
            return cached
        kinds: dict[str, Kind] = {}
        self._kinds[cls_node] = kinds
        for stmt in cls_node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                kind = self.kind_of_annotation(stmt.annotation)
                if kind is not None:
                    kinds[stmt.target.id] = kind
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                local = self._bindings(stmt)
                for node in self._binders.get(stmt, ()):
                    if not isinstance(node, ast.Assign | ast.AnnAssign):
                        continue
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for target in targets:
                        if (
                            isinstance(target, ast.Attribute)
                            and isinstance(target.value, ast.Name)
                            and target.value.id == "self"
                            and node.value is not None
                        ):
                            kind = self.kind_of_value(node.value)
                            if kind is None and isinstance(node.value, ast.Name):
                                kind = local.get(node.value.id)
                            if kind is None and isinstance(node, ast.AnnAssign):
                                kind = self.kind_of_annotation(node.annotation)
                            if kind is not None:
                                kinds.setdefault(target.attr, kind)
        return kinds


def _walk_block(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Pre-order walk of statements without entering nested functions, lambdas or classes."""
    stack: list[ast.AST] = list(reversed(body))
    nested = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
    while stack:
        node = stack.pop()
        yield node
        for child in reversed(list(ast.iter_child_nodes(node))):
            if not isinstance(child, nested):
                stack.append(child)
