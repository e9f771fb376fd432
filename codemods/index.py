"""The light whole-repo pass: mapped classes, the app's session objects and its wrapper helpers.

Declarations only, read with the standard library's ``ast`` (about a third of
the cost of a libcst parse), so a scan parses each file with libcst once: the
index must exist before the first file is checked, and parsing twice with
libcst would halve the rate. Facts are recorded per module as plain data
(picklable, small) and resolved lazily when the detector asks.
"""

from __future__ import annotations

import ast
import dataclasses
import os
from pathlib import Path
from typing import Iterable

from .values import (
    ANNOTATIONS,
    ASYNC_SESSION,
    DECLARATIVE_BASES,
    EXTERNAL_CALLS,
    OTHER,
    SESSION,
    SESSION_NAMES,
    WEAK_SESSION,
    Value,
)

IGNORE_MARK = "strangler: ignore"
WRITE_METHODS = {"add": "saved", "add_all": "saved", "delete": "deleted", "merge": "saved"}
COMMIT_METHODS = {"commit"}
LOADERS = ("get", "find", "fetch", "load", "lookup", "by_")
CONTEXT_MANAGERS = {"contextlib.contextmanager", "contextlib.asynccontextmanager"}

# A raw, unresolved description of an assigned expression:
#   ("dotted", "db.session") | ("call", "sessionmaker", {"autocommit": True}) | ("str", "...")
#   | ("param", "Session" or None, "session") | ("import", "sqlalchemy.orm.Session")
Raw = tuple


@dataclasses.dataclass
class FuncFacts:
    """What a function does that matters to the index: writes and commits through sessions."""

    qualname: str
    line: int
    params: list[str]
    annotations: dict[str, str]
    writes: list[tuple[str, str, str]]  # (receiver, method, first argument), as dotted text
    commits: list[str]  # receivers of .commit()
    self_calls: list[str]  # methods called on self, cls, or an instance made with cls(...)
    returns: Raw | None
    decorator: str  # "", "classmethod", "staticmethod", "property"
    ignored: bool
    decorators: list[str] = dataclasses.field(default_factory=list)  # every decorator, as dotted text
    yields: Raw | None = None  # what the first `yield` of a generator yields (a @contextmanager's `as` value)
    commits_yielded: bool = False  # it commits what it yields (`yield s` then `s.commit()`)


@dataclasses.dataclass
class ClassFacts:
    """A class's bases, mapping details, relationships, methods and ``__init__`` attributes."""

    name: str
    bases: list[str]
    tablename: str | None
    aggregate: str | None
    abstract: bool
    relationships: dict[str, str | None]
    keys: list[str]  # attributes declared with primary_key=True
    methods: dict[str, FuncFacts]
    attrs: dict[str, Raw]
    owned: set[str] = dataclasses.field(default_factory=set)  # relationships whose rows are part of the class


@dataclasses.dataclass
class ModuleFacts:
    """Everything the index keeps of one module."""

    name: str
    is_package: bool
    imports: dict[str, str]
    globals: dict[str, Raw]
    classes: dict[str, ClassFacts]
    functions: dict[str, FuncFacts]


def module_name(path: Path) -> tuple[str, bool]:
    """Return (dotted module name, is a package) of ``path``, from the enclosing packages' names.

    The name comes from where the file is found, not where a symbolic link
    leads: Python imports a linked module by the link's place in the package.
    """
    path = Path(os.path.abspath(path))
    is_package = path.name == "__init__.py"
    parts = [] if is_package else [path.stem]
    folder = path.parent
    if is_package:
        parts.insert(0, folder.name)
        folder = folder.parent
    while (folder / "__init__.py").is_file() and folder.parent != folder:
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts), is_package


def dotted(node: ast.AST | None) -> str | None:
    """``db.session`` for an attribute chain, ``get_db()`` for a call at its end, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    if isinstance(node, ast.Call):
        inner = dotted(node.func)
        return None if inner is None else f"{inner}()"
    if isinstance(node, ast.Subscript):  # Mapped[Session], Optional[Session]
        return dotted(node.slice) if isinstance(node.slice, (ast.Name, ast.Attribute)) else dotted(node.value)
    return None


# What a parameter's annotation is recorded as when it names no type this pass can read (`Callable[...]`,
# `dict[str, Any]`): still an annotation, so the parameter's name says nothing about what it holds.
UNREADABLE_ANNOTATION = "<annotation>"
_WRAPPING_TYPES = {"Optional", "Union", "Annotated"}


def annotation_text(node: ast.AST | None) -> str | None:
    """The dotted type an annotation names: ``Session`` for ``Optional[Session]``, ``Session | None``,
    ``Union[Session, None]``, ``Annotated[Session, Depends(get_db)]`` or ``"Session"``.

    None when there is no annotation; ``UNREADABLE_ANNOTATION`` when it names
    no single type, since an annotated parameter must not be typed by its name.
    """
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            return annotation_text(ast.parse(node.value.strip(), mode="eval").body)
        except SyntaxError:
            return UNREADABLE_ANNOTATION
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _first_type([node.left, node.right])
    if isinstance(node, ast.Subscript) and (dotted(node.value) or "").rpartition(".")[2] in _WRAPPING_TYPES:
        inner = node.slice
        return _first_type(list(inner.elts) if isinstance(inner, ast.Tuple) else [inner])
    return dotted(node) or UNREADABLE_ANNOTATION


def _first_type(nodes: list[ast.AST]) -> str:
    """The first of ``nodes`` that is not ``None``, as ``annotation_text`` reads it."""
    for node in nodes:
        if not (isinstance(node, ast.Constant) and node.value is None):
            return annotation_text(node) or UNREADABLE_ANNOTATION
    return UNREADABLE_ANNOTATION


def _raw(node: ast.AST | None) -> Raw | None:
    if isinstance(node, ast.Call):
        callee = dotted(node.func)
        if callee is None:
            return None
        kwargs = {
            k.arg: k.value.value for k in node.keywords if k.arg and isinstance(k.value, ast.Constant)
        }
        first = node.args[0] if node.args else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            kwargs["__first__"] = first.value
        return ("call", callee, kwargs)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return ("str", node.value)
    if isinstance(node, (ast.Set, ast.Dict, ast.List, ast.SetComp, ast.DictComp, ast.ListComp)):
        return ("other",)
    text = dotted(node)
    return None if text is None else ("dotted", text)


def _decorator(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    for dec in node.decorator_list:
        name = dotted(dec) or ""
        if name in ("classmethod", "staticmethod", "property"):
            return name
    return ""


class _FactsVisitor:
    def __init__(self, lines: list[str]):
        self.lines = lines

    def _ignored(self, node: ast.AST) -> bool:
        first = getattr(node, "lineno", 1)
        for deco in getattr(node, "decorator_list", []):
            first = min(first, deco.lineno)
        for line in (first - 1, first, getattr(node, "lineno", first)):
            if 1 <= line <= len(self.lines) and IGNORE_MARK in self.lines[line - 1]:
                return True
        return False

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef, qualname: str) -> FuncFacts:
        args = node.args
        params = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
        annotations = {
            a.arg: text
            for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)
            if (text := annotation_text(a.annotation)) is not None
        }
        writes: list[tuple[str, str, str]] = []
        commits: list[str] = []
        self_calls: list[str] = []
        own = {"self", "cls"}
        returns: Raw | None = None
        yields: Raw | None = None
        yielded: str | None = None
        assigned: dict[str, Raw] = {}
        for sub in _walk_body(node):
            if isinstance(sub, (ast.With, ast.AsyncWith)):
                for item in sub.items:  # `with SessionLocal() as s: yield s`
                    if isinstance(item.optional_vars, ast.Name) and (raw := _raw(item.context_expr)) is not None:
                        assigned.setdefault(item.optional_vars.id, raw)
            if isinstance(sub, ast.Yield) and sub.value is not None and yields is None:
                yielded = dotted(sub.value)
                yields = _raw(sub.value)
                if yields is not None and yields[0] == "dotted" and yields[1] in assigned:
                    yields = assigned[yields[1]]  # `s = SessionLocal(); yield s`
            if isinstance(sub, ast.Assign) and len(sub.targets) == 1 and isinstance(sub.targets[0], ast.Name):
                raw = _raw(sub.value)
                if raw is not None:
                    assigned.setdefault(sub.targets[0].id, raw)
                if raw is not None and raw[0] == "call" and raw[1] == "cls":
                    own.add(sub.targets[0].id)
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
                receiver = dotted(sub.func.value)
                if receiver is None:
                    continue
                if sub.func.attr in WRITE_METHODS:
                    first = dotted(sub.args[0]) if sub.args else ""
                    writes.append((receiver, sub.func.attr, first or ""))
                elif sub.func.attr in COMMIT_METHODS:
                    commits.append(receiver)
                if receiver in own:
                    self_calls.append(sub.func.attr)
            elif isinstance(sub, ast.Return) and sub.value is not None and returns is None:
                returns = _raw(sub.value)
                if returns is not None and returns[0] == "dotted" and returns[1] in assigned:
                    returns = assigned[returns[1]]  # `order = Order.get(...); return order`
        if node.returns is not None and (text := dotted(node.returns)):
            returns = ("annotation", text)
        return FuncFacts(
            qualname=qualname,
            line=node.lineno,
            params=params,
            annotations=annotations,
            writes=writes,
            commits=commits,
            self_calls=self_calls,
            returns=returns,
            decorator=_decorator(node),
            ignored=self._ignored(node),
            decorators=[name for name in map(dotted, node.decorator_list) if name],
            yields=yields,
            commits_yielded=yielded is not None and yielded in commits,
        )

    def klass(self, node: ast.ClassDef) -> ClassFacts:
        facts = ClassFacts(
            name=node.name,
            bases=[b for b in (dotted(base) for base in node.bases) if b],
            tablename=None,
            aggregate=None,
            abstract=False,
            relationships={},
            keys=[],
            methods={},
            attrs={},
        )
        for stmt in node.body:
            if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                value = stmt.value
                for target in targets:
                    if not isinstance(target, ast.Name):
                        continue
                    name = target.id
                    if isinstance(value, ast.Constant):
                        if name == "__tablename__" and isinstance(value.value, str):
                            facts.tablename = value.value
                        elif name == "__strangler_aggregate__" and isinstance(value.value, str):
                            facts.aggregate = value.value
                        elif name == "__abstract__" and value.value is True:
                            facts.abstract = True
                    elif isinstance(value, ast.Call):
                        callee = dotted(value.func) or ""
                        if callee.rsplit(".", 1)[-1] in ("relationship", "relation", "dynamic_loader"):
                            first = value.args[0] if value.args else None
                            target_name = first.value if isinstance(first, ast.Constant) else dotted(first)
                            facts.relationships[name] = target_name if isinstance(target_name, str) else None
                            if any(k.arg == "secondary" or (k.arg == "cascade" and isinstance(k.value, ast.Constant)
                                                            and "delete-orphan" in str(k.value.value))
                                   for k in value.keywords):
                                facts.owned.add(name)  # delete-orphan children, or association rows
                        elif any(k.arg == "primary_key" and isinstance(k.value, ast.Constant)
                                 and k.value.value is True for k in value.keywords):
                            facts.keys.append(name)
                        elif (raw := _raw(value)) is not None:
                            facts.attrs.setdefault(name, raw)
                    elif isinstance(stmt, ast.AnnAssign) and value is None and stmt.annotation is not None:
                        text = annotation_text(stmt.annotation)
                        if text:
                            facts.attrs.setdefault(name, ("param", text, name))
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                fn = self.function(stmt, f"{node.name}.{stmt.name}")
                facts.methods[stmt.name] = fn
                if stmt.name == "__init__":
                    self._init_attrs(stmt, fn, facts)
        return facts

    def _init_attrs(self, node: ast.FunctionDef | ast.AsyncFunctionDef, fn: FuncFacts, facts: ClassFacts) -> None:
        for sub in _walk_body(node):
            if not isinstance(sub, (ast.Assign, ast.AnnAssign)):
                continue
            targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                ):
                    value = sub.value
                    if isinstance(value, ast.Name) and value.id in fn.params:
                        raw: Raw | None = ("param", fn.annotations.get(value.id), value.id)
                    else:
                        raw = _raw(value)
                    if isinstance(sub, ast.AnnAssign) and (text := annotation_text(sub.annotation)):
                        raw = ("param", text, target.attr)
                    if raw is not None:
                        facts.attrs[target.attr] = raw

    def module(self, tree: ast.Module, name: str, is_package: bool) -> ModuleFacts:
        facts = ModuleFacts(name=name, is_package=is_package, imports={}, globals={}, classes={}, functions={})
        package = name if is_package else name.rpartition(".")[0]
        for stmt in _module_level(tree.body):
            if isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    if alias.asname:
                        facts.imports[alias.asname] = alias.name
                    else:
                        head = alias.name.split(".")[0]
                        facts.imports[head] = head
            elif isinstance(stmt, ast.ImportFrom):
                base = stmt.module or ""
                if stmt.level:
                    parts = package.split(".") if package else []
                    parts = parts[: len(parts) - (stmt.level - 1)] if stmt.level > 1 else parts
                    base = ".".join([*parts, *([stmt.module] if stmt.module else [])])
                for alias in stmt.names:
                    if alias.name != "*":
                        facts.imports[alias.asname or alias.name] = f"{base}.{alias.name}" if base else alias.name
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                raw = _raw(stmt.value)
                for target in targets:
                    if isinstance(target, ast.Name) and raw is not None:
                        facts.globals[target.id] = raw
            elif isinstance(stmt, ast.ClassDef):
                facts.classes[stmt.name] = self.klass(stmt)
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                facts.functions[stmt.name] = self.function(stmt, stmt.name)
        return facts


def _module_level(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    """Module statements, looking into ``if``/``try`` blocks (``try: import x except ImportError``)."""
    for stmt in body:
        if isinstance(stmt, (ast.If, ast.Try)):
            yield from _module_level(stmt.body)
            yield from _module_level(stmt.orelse)
            if isinstance(stmt, ast.Try):
                for handler in stmt.handlers:
                    yield from _module_level(handler.body)
        else:
            yield stmt


def _walk_body(node: ast.AST) -> Iterable[ast.AST]:
    """Nodes of a function body, not descending into nested functions or classes."""
    stack = list(reversed(getattr(node, "body", [])))
    while stack:
        sub = stack.pop()
        yield sub
        for child in ast.iter_child_nodes(sub):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                stack.append(child)


def facts_of(source: str, path: Path) -> ModuleFacts | None:
    """Return the index facts of one file, or None when it does not parse."""
    name, is_package = module_name(path)
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    return _FactsVisitor(source.splitlines()).module(tree, name, is_package)


@dataclasses.dataclass(frozen=True)
class Wrapper:
    """An app helper that writes its entity (``self`` or a parameter) through a session."""

    qualname: str
    verb: str  # saved or deleted
    commits: bool
    entity: str  # "self" or the parameter's name
    ignored: bool
    direct: bool = True  # False: it writes by calling another wrapper of its class


class Index:
    """Whole-repo facts, resolved on demand: what a module-level name or class attribute is."""

    def __init__(self, modules: Iterable[ModuleFacts] = ()):
        self.modules: dict[str, ModuleFacts] = {}
        self._globals: dict[tuple[str, str], Value | None] = {}
        self._tables: dict[str, str] | None = None
        self._wrappers: dict[str, Wrapper | None] = {}
        self._mapped: dict[str, bool] = {}
        self._method_names: frozenset[str] | None = None
        for facts in modules:
            self.add(facts)

    def add(self, facts: ModuleFacts) -> None:
        self.modules[facts.name] = facts
        self._method_names = None

    def method_names(self) -> frozenset[str]:
        """Every method name defined by a scanned class: a call by another name is no wrapper call."""
        if self._method_names is None:
            self._method_names = frozenset(
                name for facts in self.modules.values() for cls in facts.classes.values() for name in cls.methods
            )
        return self._method_names

    # -- names -------------------------------------------------------------------------

    def global_value(self, module: str, name: str, _depth: int = 0) -> Value | None:
        """What the module-level ``name`` of ``module`` is (class, function, session, import…)."""
        key = (module, name)
        if key in self._globals:
            return self._globals[key]
        self._globals[key] = None  # cycle guard
        value = self._global_value(module, name, _depth)
        self._globals[key] = value
        return value

    def _global_value(self, module: str, name: str, depth: int) -> Value | None:
        facts = self.modules.get(module)
        if facts is None or depth > 8:
            return None
        if name in facts.classes:
            return Value("class", cls=f"{module}.{name}")
        if name in facts.functions:
            return Value("function", attr=f"{module}.{name}")
        if name in facts.globals:
            return self.raw_value(module, facts.globals[name], {}, depth + 1)
        if name in facts.imports:
            return self.qualified(facts.imports[name], depth + 1)
        return None

    def qualified(self, qualname: str, depth: int = 0) -> Value:
        """What a fully qualified name is: a module, a name inside a scanned module, or external."""
        if qualname in self.modules:
            return Value("module", attr=qualname)
        module, _, name = qualname.rpartition(".")
        if module in self.modules:
            value = self.global_value(module, name, depth)
            if value is not None:
                return value
            if f"{module}.{name}" in self.modules:
                return Value("module", attr=f"{module}.{name}")
        return Value("external", origin=qualname)

    def raw_value(self, module: str, raw: Raw, env: dict[str, Value | None], depth: int = 0) -> Value | None:
        """Resolve a raw expression recorded by the index in ``module`` (with locals ``env``)."""
        kind = raw[0]
        if kind == "dotted":
            return self.dotted_value(module, raw[1], env, depth)
        if kind == "str":
            return Value("str", text=raw[1])
        if kind == "other":
            return OTHER
        if kind == "call":
            callee = self.dotted_value(module, raw[1], env, depth)
            return self.call_value(callee, raw[2])
        if kind == "param":
            annotation, name = raw[1], raw[2]
            if annotation:
                value = self.annotation_value(module, annotation)
                if value is None and name in SESSION_NAMES:
                    # `session: requests.Session`, `session: aiohttp.ClientSession`: the annotation says what it
                    # is, and it is none of ours; the name is evidence only when nothing else is said.
                    return OTHER
                return value
            if name in SESSION_NAMES:
                return WEAK_SESSION
            return None
        if kind == "annotation":
            return self.annotation_value(module, raw[1])
        return None

    def annotation_value(self, module: str, text: str) -> Value | None:
        """What a parameter annotated ``text`` holds: a session, a connection, an entity…"""
        value = self.dotted_value(module, text, {})
        if value is None:
            return None
        if value.kind == "external":
            return ANNOTATIONS.get(value.origin or "")
        if value.kind in ("session", "session_factory"):
            # `Session = scoped_session(...)` or `sessionmaker(...)` in the app, used as the annotation.
            return ASYNC_SESSION if value.origin == "async" else SESSION
        if value.kind == "class":
            if self.is_mapped(value.cls or ""):
                return Value("entity", cls=value.cls, origin="param")
            return Value("instance", cls=value.cls)
        return None

    def dotted_value(self, module: str, text: str, env: dict[str, Value | None], depth: int = 0) -> Value | None:
        """Resolve ``a.b().c`` from the names of ``module`` and locals ``env``."""
        parts = text.split(".")
        head = parts[0]
        called = head.endswith("()")
        head = head[:-2] if called else head
        value = env[head] if head in env else self.global_value(module, head, depth)
        if called:
            value = self.call_value(value, {})
        for part in parts[1:]:
            called = part.endswith("()")
            value = self.attribute(value, part[:-2] if called else part)
            if called:
                value = self.call_value(value, {})
        return value

    # -- what attributes and calls of a value are -------------------------------------------

    def attribute(self, value: Value | None, attr: str) -> Value | None:
        """What ``<value>.<attr>`` is."""
        if value is None:
            return None
        kind = value.kind
        if kind == "module":
            return self.global_value(value.attr or "", attr) or self.qualified(f"{value.attr}.{attr}")
        if kind == "external":
            return Value("external", origin=f"{value.origin}.{attr}")
        if kind == "fsa":
            return {
                "session": SESSION,
                "Model": Value("base"),
                "engine": Value("engine"),
                "Table": Value("external", origin="sqlalchemy.Table"),
                "relationship": Value("external", origin="sqlalchemy.orm.relationship"),
            }.get(attr)
        if kind == "class" and value.cls:
            if attr == "query" and self.is_mapped(value.cls):
                return Value("query", cls=value.cls)
            if attr == "__table__" and self.is_mapped(value.cls):
                return Value("table", cls=value.cls, table=self.tablename(value.cls))
            method = self.find_method(value.cls, attr)
            if method is not None:
                return Value("method", cls=value.cls, attr=method)
            return None
        if kind in ("entity", "instance") and value.cls:
            if kind == "entity" and attr in self.relationships(value.cls):
                return Value("collection", cls=value.cls, attr=attr)
            raw = self.class_attr(value.cls, attr)
            if raw is not None:
                return self.raw_value(value.cls.rpartition(".")[0], raw, {})
            return None
        if kind == "cursor" and attr == "connection":
            return Value("dbapi_conn")
        return None

    def call_value(self, callee: Value | None, kwargs: dict) -> Value | None:
        """What calling ``callee`` returns (``kwargs``: constant keyword arguments, if known)."""
        if callee is None:
            return None
        kind = callee.kind
        if kind == "external":
            value = EXTERNAL_CALLS.get(callee.origin or "")
            if value is not None and value.kind == "dbapi_conn":
                autocommit = kwargs.get("autocommit") is True or (
                    "isolation_level" in kwargs and kwargs["isolation_level"] is None
                )
                return Value("dbapi_conn", flag=autocommit)
            if value is not None and value.kind == "table":
                return Value("table", table=kwargs.get("__first__"))
            if value is not None and value.kind == "engine" and kwargs.get("isolation_level") == "AUTOCOMMIT":
                return dataclasses.replace(value, flag=True)  # every connection commits each statement
            return value
        if kind == "session_factory" or kind == "session":
            return ASYNC_SESSION if callee.origin == "async" else SESSION
        if kind == "class" and callee.cls:
            if self.is_mapped(callee.cls):
                return Value("entity", cls=callee.cls, origin="new")
            if self.is_declarative_base(callee.cls):
                return None
            return Value("instance", cls=callee.cls)
        if kind == "function" and callee.attr:
            fn = self.function(callee.attr)
            if fn is not None and fn.returns is not None:
                module = callee.attr.rpartition(".")[0]
                return self.raw_value(module, fn.returns, {})
        if kind == "method" and callee.cls and self.is_mapped(callee.cls):
            # Class-level finders and factories of a mapped class (`Order.get_by_id(1)`,
            # `User.create(...)`), by name: their bodies are not typed by this pass.
            name = (callee.attr or "").rpartition(".")[2]
            if name.startswith(LOADERS):
                return Value("entity", cls=callee.cls, origin="loaded")
            if name in ("create", "build", "new"):
                return Value("entity", cls=callee.cls, origin="new")
        return None

    # -- classes -------------------------------------------------------------------------

    def klass(self, qualname: str) -> ClassFacts | None:
        module, _, name = qualname.rpartition(".")
        facts = self.modules.get(module)
        return facts.classes.get(name) if facts else None

    def function(self, qualname: str) -> FuncFacts | None:
        module, _, name = qualname.rpartition(".")
        facts = self.modules.get(module)
        if facts and name in facts.functions:
            return facts.functions[name]
        owner = self.klass(module)
        return owner.methods.get(name) if owner else None

    def bases(self, qualname: str) -> list[Value]:
        """The resolved bases of a class."""
        facts = self.klass(qualname)
        if facts is None:
            return []
        module = qualname.rpartition(".")[0]
        return [v for v in (self.dotted_value(module, b, {}) for b in facts.bases) if v is not None]

    def mro(self, qualname: str) -> list[str]:
        """The class and its scanned ancestors, depth first (close enough to Python's MRO)."""
        out: list[str] = []
        stack = [qualname]
        while stack:
            cls = stack.pop(0)
            if cls in out or self.klass(cls) is None:
                continue
            out.append(cls)
            stack.extend(v.cls for v in self.bases(cls) if v.kind == "class" and v.cls)
        return out

    def is_declarative_base(self, qualname: str) -> bool:
        """True for ``class Base(DeclarativeBase)``: its subclasses are mapped, it is not."""
        for base in self.bases(qualname):
            if base.kind == "external" and base.origin in DECLARATIVE_BASES:
                return True
        return False

    def is_mapped(self, qualname: str) -> bool:
        """True when instances of the class are mapped entities (a table of their own or inherited)."""
        if qualname in self._mapped:
            return self._mapped[qualname]
        self._mapped[qualname] = False
        facts = self.klass(qualname)
        result = False
        if facts is not None and not facts.abstract and not self.is_declarative_base(qualname):
            for base in self.bases(qualname):
                if base.kind == "base":
                    result = True
                elif base.kind == "class" and base.cls and (
                    self.is_declarative_base(base.cls) or self.is_mapped(base.cls) or self._abstract_model(base.cls)
                ):
                    result = True
        self._mapped[qualname] = result
        return result

    def _abstract_model(self, qualname: str) -> bool:
        facts = self.klass(qualname)
        if facts is None or not facts.abstract:
            return False
        return any(
            b.kind == "base" or (b.kind == "class" and b.cls and self.is_declarative_base(b.cls))
            for b in self.bases(qualname)
        )

    def tablename(self, qualname: str) -> str | None:
        for cls in self.mro(qualname):
            facts = self.klass(cls)
            if facts and facts.tablename:
                return facts.tablename
        return None

    def aggregate_of(self, qualname: str) -> str:
        """The aggregate type of a mapped class, by the runtime's rule (``aggregate_type_of``)."""
        for cls in self.mro(qualname):
            facts = self.klass(cls)
            if facts and facts.aggregate:
                return facts.aggregate
        return snake_case(qualname.rpartition(".")[2])

    def relationships(self, qualname: str) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for cls in reversed(self.mro(qualname)):
            facts = self.klass(cls)
            if facts:
                out.update(facts.relationships)
        return out

    def owns(self, qualname: str, relationship: str) -> bool:
        """True when the class owns the rows of ``relationship`` (``delete-orphan``, or many-to-many)."""
        return any(relationship in facts.owned for facts in map(self.klass, self.mro(qualname)) if facts)

    def primary_keys(self, qualname: str) -> list[str]:
        """The primary key attributes of a mapped class (its own, else the nearest ancestor's)."""
        for cls in self.mro(qualname):
            facts = self.klass(cls)
            if facts and facts.keys:
                return facts.keys
        return []

    def class_attr(self, qualname: str, attr: str) -> Raw | None:
        for cls in self.mro(qualname):
            facts = self.klass(cls)
            if facts and attr in facts.attrs:
                return facts.attrs[attr]
        return None

    def find_method(self, qualname: str, name: str) -> str | None:
        """Qualified name of the method ``name`` that instances of the class run, if scanned."""
        for cls in self.mro(qualname):
            facts = self.klass(cls)
            if facts and name in facts.methods:
                return f"{cls}.{name}"
        return None

    def has_external_base(self, qualname: str) -> bool:
        """True when some ancestor comes from outside the tree (and may define methods we cannot see)."""
        for cls in self.mro(qualname):
            for base in self.bases(cls):
                if base.kind == "external" and base.origin not in DECLARATIVE_BASES:
                    return True
        return False

    def class_for_table(self, table: str) -> str | None:
        """The mapped class whose ``__tablename__`` is ``table``."""
        if self._tables is None:
            self._tables = {}
            for module, facts in self.modules.items():
                for name, cls in facts.classes.items():
                    if cls.tablename and self.is_mapped(f"{module}.{name}"):
                        self._tables.setdefault(cls.tablename.lower(), f"{module}.{name}")
        return self._tables.get(table.lower())

    # -- wrappers ----------------------------------------------------------------------------

    def wrapper(self, qualname: str) -> Wrapper | None:
        """The wrapper at ``qualname`` if that function writes ``self`` or a parameter through a session."""
        if qualname in self._wrappers:
            return self._wrappers[qualname]
        self._wrappers[qualname] = None
        result = self._wrapper(qualname)
        self._wrappers[qualname] = result
        return result

    def _wrapper(self, qualname: str) -> Wrapper | None:
        fn = self.function(qualname)
        if fn is None:
            return None
        module, _, _ = qualname.rpartition(".")
        owner = module if self.klass(module) else None
        if owner:
            module = owner.rpartition(".")[0]
        env = self.function_env(module, owner, fn)
        verb = None
        entity = None
        for receiver, method, arg in fn.writes:
            value = self.dotted_value(module, receiver, env)
            if value is None or value.kind != "session":
                continue
            if arg == "self" and owner and fn.decorator == "":
                entity = "self"
            elif arg in fn.params and arg not in ("self", "cls"):
                entity = arg
            else:
                continue
            verb = WRITE_METHODS[method] if verb in (None, "saved") else verb
        if (verb is None or entity is None) and owner:
            # `def create(cls, **kw): return cls(**kw).save()`, `def update(self): ...; self.save()`
            for method in fn.self_calls:
                target = self.find_method(owner, method)
                inner = self.wrapper(target) if target and target != qualname else None
                if inner is not None:
                    return Wrapper(qualname=qualname, verb=inner.verb, commits=inner.commits, entity="self",
                                   ignored=fn.ignored or inner.ignored, direct=False)
        if verb is None or entity is None:
            return None
        commits = any(
            (v := self.dotted_value(module, receiver, env)) is not None and v.kind == "session"
            for receiver in fn.commits
        )
        return Wrapper(qualname=qualname, verb=verb, commits=commits, entity=entity, ignored=fn.ignored)

    def function_env(self, module: str, owner: str | None, fn: FuncFacts) -> dict[str, Value | None]:
        """Parameters of ``fn`` resolved from annotations (``self`` and ``cls`` from its class)."""
        env: dict[str, Value | None] = {}
        for i, param in enumerate(fn.params):
            if i == 0 and owner and fn.decorator in ("", "property"):
                env[param] = (
                    Value("entity", cls=owner, origin="self")
                    if self.is_mapped(owner)
                    else Value("instance", cls=owner)
                )
            elif i == 0 and owner and fn.decorator == "classmethod":
                env[param] = Value("class", cls=owner)
            else:
                env[param] = self.raw_value(module, ("param", fn.annotations.get(param), param), {})
        return env

    def entered_value(self, qualname: str) -> Value | None:
        """What ``with f() as x`` binds to ``x`` when ``f`` is a ``@contextmanager`` (or async) generator: what it yields.

        ``@contextmanager def session_scope(): s = SessionLocal(); yield s; s.commit()``
        is how many apps hand out a session; without this its ``with`` target would be unknown.
        Whether it commits what it yields is ``FuncFacts.commits_yielded``.
        """
        fn = self.function(qualname)
        if fn is None or fn.yields is None:
            return None
        module, owner, env = self._function_context(qualname, fn)
        decorators = [self.dotted_value(module, name, {}) for name in fn.decorators]
        if not any(d is not None and d.kind == "external" and d.origin in CONTEXT_MANAGERS for d in decorators):
            return None
        return self.raw_value(module, fn.yields, env)

    def _function_context(self, qualname: str, fn: FuncFacts) -> tuple[str, str | None, dict[str, Value | None]]:
        """The module, the owning class (for a method) and the resolved parameters of the function ``qualname``."""
        module = qualname.rpartition(".")[0]
        owner = module if self.klass(module) else None
        if owner:
            module = owner.rpartition(".")[0]
        return module, owner, self.function_env(module, owner, fn)

    def commits_inside(self, qualname: str) -> bool:
        """True when the function commits a session (a helper such as ``def commit(): db.session.commit()``)."""
        fn = self.function(qualname)
        if fn is None or not fn.commits:
            return False
        module = qualname.rpartition(".")[0]
        owner = module if self.klass(module) else None
        if owner:
            module = owner.rpartition(".")[0]
        env = self.function_env(module, owner, fn)
        return any(
            (v := self.dotted_value(module, r, env)) is not None and v.kind in ("session", "dbapi_conn")
            for r in fn.commits
        )


def snake_case(name: str) -> str:
    """``OrderLine`` → ``order_line``, the runtime's ``aggregate_type_of`` rule."""
    import re

    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
