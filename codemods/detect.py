"""Find the state changes of one module: a read-only pass over its libcst tree.

What an expression *is* comes from ``values.Value``: names resolve through the
module's imports and the whole-repo ``Index`` (so ``db.session`` is a session
because ``db`` is a Flask-SQLAlchemy object), parameters through their
annotations, locals through the assignments before them in the function. The
walk reads node fields directly instead of using libcst's visitor machinery,
which costs more than half a parse; positions are computed only for the sites
found (``positions.start_positions``).

Each ``Finding`` is a reportable ``Site`` plus, when the rewrite may act on
it, the ``Edit`` that inserts its ``emit``.
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
from typing import Iterable, Iterator, Sequence

import libcst as cst

from . import naming, sql
from .index import IGNORE_MARK, UNREADABLE_ANNOTATION, Index, annotation_text, snake_case
from .positions import start_positions
from .values import (
    ASYNC_SESSION,
    CURSOR_NAMES,
    DBAPI_CONN_NAMES,
    OTHER,
    SESSION,
    SESSION_NAMES,
    WEAK_SESSION,
    Value,
)

KINDS = (
    "session-add",
    "session-delete",
    "session-merge",
    "session-bulk",
    "query-bulk",
    "execute",
    "dbapi",
    "collection",
    "wrapper",
    "wrapper-call",
    "implicit-update",
)

QUERY_CHAIN = {
    "filter", "filter_by", "join", "outerjoin", "order_by", "limit", "offset", "options", "where",
    "distinct", "with_for_update", "populate_existing", "execution_options", "group_by", "having",
    "select_from", "enable_eagerloads", "yield_per", "params", "correlate",
}
QUERY_ONE = {
    "get", "first", "one", "one_or_none", "scalar", "first_or_404", "get_or_404", "one_or_404",
    "scalar_one", "scalar_one_or_none",
}
COLLECTION_METHODS = {"append", "remove", "add", "extend", "discard", "insert", "pop", "clear"}
SESSION_WRITES = {"add": "session-add", "add_all": "session-add", "delete": "session-delete", "merge": "session-merge"}
BULK = {"bulk_save_objects", "bulk_insert_mappings", "bulk_update_mappings"}
EMIT_NAMES = {"outbox.emit", "outbox.emit.emit"}
SQLA_DML = {
    "insert": "created", "update": "updated", "delete": "deleted",
}
SQLA_CONSTRUCTS = {*SQLA_DML, "select", "text"}
SQLA_MODULES = ("sqlalchemy.", "sqlalchemy.sql.", "sqlalchemy.sql.expression.", "sqlalchemy.future.")
DBAPI_TRANSACTION_NAMES = {"commit"}
# Methods that run a statement: of a session (DML through scalar/scalars too), a Core connection, a DB-API
# cursor or connection (sqlite3's executescript).
SESSION_EXECUTES = {"execute", "executemany", "scalar", "scalars"}
CORE_EXECUTES = {"execute", "executemany", "scalar", "scalars", "exec_driver_sql"}
DBAPI_EXECUTES = {"execute", "executemany", "executescript"}
EXECUTES = SESSION_EXECUTES | CORE_EXECUTES | DBAPI_EXECUTES


@dataclasses.dataclass(frozen=True)
class Site:
    """One state change, as reported by ``scan`` (the JSON fields, documented in docs/codemods.md)."""

    path: str
    line: int
    column: int
    kind: str
    aggregate: str | None
    function: str | None
    commit_visible: bool
    covered: bool
    confidence: str  # high (types resolved) | medium (a receiver known by its name only)
    action: str  # rewrite | covered | decide | capture
    reason: str
    event_type: str | None
    code: str


@dataclasses.dataclass(frozen=True)
class Edit:
    """Insert ``code`` (one or more statements) before or after the statement ``anchor``, and ``lead`` before it."""

    anchor: cst.CSTNode
    before: bool
    code: str
    imports: tuple[tuple[str, str], ...]  # (module, name)
    lead: str = ""


@dataclasses.dataclass
class Finding:
    site: Site
    edit: Edit | None


@dataclasses.dataclass
class Settings:
    """The codemod settings detection needs (a slice of ``toolkit.config.CodemodsConfig``)."""

    prefix: str = "app"
    verbs: str = "crud"  # or "function": the domain verb from the enclosing function's name
    event_types: tuple[str, ...] = ()  # "PATH::FUNCTION=TEMPLATE"
    skip_kinds: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()  # "PATH_GLOB:KIND"
    skip_functions: tuple[str, ...] = ()


def settings_problems(settings: Settings) -> list[str]:
    """What in ``settings`` would be misread (an unknown kind or placeholder), one line per entry, config key first.

    Checked before any file is read, so a typo stops the run instead of
    crashing it halfway or silently matching nothing.
    """
    problems = []
    known = ", ".join(KINDS)
    for entry in settings.event_types:
        problem = naming.template_problem(entry)
        if problem:
            problems.append(f"codemods.event_types: {entry!r}: {problem}")
    for entry in settings.skip_kinds:
        if entry not in KINDS:
            problems.append(f"codemods.skip_kinds: {entry!r}: unknown kind {entry}; known: {known}")
    for entry in settings.skip:
        pattern, colon, kind = entry.rpartition(":")
        if colon and pattern and kind not in ("*", "") and kind not in KINDS:
            problems.append(f"codemods.skip: {entry!r}: unknown kind {kind}; known: {known}, *")
    return problems


# -- fast traversal ------------------------------------------------------------------------

_SKIP_PREFIXES = (
    "whitespace", "lpar", "rpar", "comma", "semicolon", "leading_lines", "lines_after", "header",
    "footer", "trailing", "operator", "equal", "colon", "dot", "star", "asynchronous", "lbracket",
    "rbracket", "lbrace", "rbrace", "newline", "indent", "default_", "encoding", "has_trailing",
)
_FIELDS: dict[type, tuple[str, ...]] = {}


def _child_fields(tp: type) -> tuple[str, ...]:
    fields = _FIELDS.get(tp)
    if fields is None:
        fields = _FIELDS[tp] = tuple(
            f.name for f in dataclasses.fields(tp) if not f.name.startswith(_SKIP_PREFIXES)
        )
    return fields


_COMPREHENSIONS = (cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)


def _is_method_call(node: cst.CSTNode, method: str) -> bool:
    """``node`` is ``<something>.method(...)``."""
    return isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value == method


def _calls_in(node: cst.CSTNode, repeated: dict[cst.CSTNode, str] | None = None) -> list[cst.CSTNode]:
    """Calls inside an expression or simple statement, outermost first.

    Each call that may run any number of times, or not at all, where the
    statement stands is also put in ``repeated`` (when given) with why, since
    one emit after the line could not follow it: ``comprehension`` (a
    comprehension's body), ``conditional`` (an arm of ``a if c else b``, the
    right of ``and``/``or``), ``lambda`` (runs when called, if ever). With
    ``repeated`` given, a session write method named but not called
    (``map(s.delete, objs)``) is returned as its ``Attribute``, put there as
    ``reference``: a write that runs wherever the function is called.
    """
    out: list[cst.CSTNode] = []
    stack: list[tuple[cst.CSTNode, str]] = [(node, "")]
    while stack:
        current, why = stack.pop()
        tp = type(current)
        if tp is cst.Lambda:
            if repeated is None:
                continue
            stack.append((current.body, why or "lambda"))
            continue
        if tp is cst.Call:
            out.append(current)
            if why and repeated is not None:
                repeated[current] = why
            if repeated is not None and type(current.func) is cst.Attribute:
                # The method itself is called, not named: look past it to its receiver and the arguments.
                stack.extend((arg.value, why) for arg in reversed(current.args))
                stack.append((current.func.value, why))
                continue
        if tp is cst.Attribute and repeated is not None and current.attr.value in _WRITE_REFERENCES:
            out.append(current)
            repeated[current] = why or "reference"
        if tp in _COMPREHENSIONS:
            # The first iterable is evaluated once, where the comprehension stands; the rest once per element.
            first = current.for_in
            parts = [first.target, *first.ifs, first.inner_for_in]
            parts += [current.key, current.value] if tp is cst.DictComp else [current.elt]
            stack.extend((part, why or "comprehension") for part in parts if part is not None)
            stack.append((first.iter, why))
            continue
        if tp is cst.IfExp:
            # The test always runs; one arm or the other.
            stack.extend([(current.orelse, why or "conditional"), (current.body, why or "conditional")])
            stack.append((current.test, why))
            continue
        if tp is cst.BooleanOperation:
            # `a and b`, `a or b`: the right runs only for some values of the left.
            stack.append((current.right, why or "conditional"))
            stack.append((current.left, why))
            continue
        for name in _child_fields(tp):
            value = getattr(current, name)
            if isinstance(value, cst.CSTNode):
                stack.append((value, why))
            elif type(value) in (list, tuple):
                stack.extend((child, why) for child in reversed(value))
    return out


# Session write methods that, named without a call (`map(s.delete, objs)`), hand the write to someone else.
_WRITE_REFERENCES = {"add", "add_all", "delete", "merge", "bulk_save_objects", "bulk_insert_mappings",
                     "bulk_update_mappings"}


_EMPTY = cst.Module(body=[])


def code_of(node: cst.CSTNode) -> str:
    return _EMPTY.code_for_node(node)


def literal(node: cst.CSTNode | None) -> str | None:
    """The text of a string literal (f-string holes become ``__expr__``), else None."""
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return value.decode("latin-1") if isinstance(value, bytes) else value
    if isinstance(node, cst.ConcatenatedString):
        left, right = literal(node.left), literal(node.right)
        return None if left is None or right is None else left + right
    if isinstance(node, cst.FormattedString):
        return "".join(
            part.value if isinstance(part, cst.FormattedStringText) else "__expr__" for part in node.parts
        )
    return None


def _has_ignore(lines: Iterable[cst.EmptyLine]) -> bool:
    return any(line.comment is not None and IGNORE_MARK in line.comment.value for line in lines)


def _comment(tw: cst.TrailingWhitespace | None) -> bool:
    return tw is not None and tw.comment is not None and IGNORE_MARK in tw.comment.value


# -- per-function state --------------------------------------------------------------------


@dataclasses.dataclass
class _Event:
    order: int
    kind: str  # site | implicit | commit | emit
    node: cst.CSTNode | None = None
    stmt: cst.CSTNode | None = None
    value: Value | None = None
    data: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Scope:
    qualname: str | None
    owner: str | None  # qualified name of the enclosing class
    env: dict[str, Value | None]
    parent: "_Scope | None"
    ignored: bool
    asynchronous: bool = False  # an `async def`: the only place an AsyncConnection's emit can be awaited
    events: list[_Event] = dataclasses.field(default_factory=list)
    aliases: dict[str, str] = dataclasses.field(default_factory=dict)  # loop variable -> what it iterates

    def lookup(self, name: str) -> tuple[bool, Value | None]:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.env:
                return True, scope.env[name]
            scope = scope.parent
        return False, None


class Detector:
    """Find the sites of one module (parsed once by the caller)."""

    def __init__(self, module: cst.Module, path: str, modname: str, index: Index, settings: Settings):
        self.module = module
        self.path = path
        self.modname = modname
        self.index = index
        self.settings = settings
        self.order = 0
        self.functions: list[_Scope] = []
        self.names = {name: self._binding(name) for name in ("emit", "added", "track_added")}
        self.emit_name = self.names["emit"]
        self.wrapper_names = index.method_names()

    # -- entry ---------------------------------------------------------------------------------

    def run(self) -> list[Finding]:
        top = _Scope(qualname=None, owner=None, env={}, parent=None, ignored=False)
        self.functions.append(top)
        self._block(self.module.body, top, in_begin=False)
        pending: list[tuple[_Scope, _Event, dict]] = []
        for scope in self.functions:
            pending.extend(self._resolve(scope))
        nodes = [event.node for _, event, _ in pending if event.node is not None]
        positions = start_positions(self.module, nodes)
        findings = []
        for scope, event, info in pending:
            line, column = positions.get(event.node, (0, 0))
            findings.append(self._finding(scope, event, info, line, column))
        findings.sort(key=lambda f: (f.site.line, f.site.column))
        return [f for f in findings if not self._skipped(f.site)]

    def _skipped(self, site: Site) -> bool:
        if site.kind in self.settings.skip_kinds:
            return True
        for entry in self.settings.skip:
            pattern, _, kind = entry.rpartition(":")
            if not pattern:
                pattern, kind = kind, "*"
            if fnmatch.fnmatch(self.path, pattern) and (kind in ("*", "") or kind == site.kind):
                return True
        if site.function and any(fnmatch.fnmatch(site.function, p) for p in self.settings.skip_functions):
            return True
        return False

    def _binding(self, name: str) -> str:
        """The name outbox's ``name`` will have here: ``name``, or ``outbox_<name>`` if ``name`` is taken."""
        facts = self.index.modules.get(self.modname)
        if facts is None:
            return name
        bound = facts.imports.get(name)
        if bound is None and name not in facts.functions and name not in facts.globals:
            return name
        if bound in (f"outbox.{name}", f"outbox.emit.{name}"):
            return name
        return f"outbox_{name}"

    def _import(self, name: str) -> tuple[str, str]:
        bound = self.names[name]
        return ("outbox", name) if bound == name else ("outbox", f"{name} as {bound}")

    # -- statements ----------------------------------------------------------------------------

    def _block(self, body: Iterable[cst.CSTNode], scope: _Scope, in_begin: bool) -> None:
        for stmt in body:
            self._statement(stmt, scope, in_begin)

    def _statement(self, stmt: cst.CSTNode, scope: _Scope, in_begin: bool) -> None:
        if isinstance(stmt, cst.SimpleStatementLine):
            ignored = scope.ignored or _comment(stmt.trailing_whitespace) or _has_ignore(stmt.leading_lines)
            for small in stmt.body:
                self._small(small, stmt, scope, ignored, in_begin)
            return
        if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
            self._definition(stmt, scope)
            return
        if isinstance(stmt, cst.BaseSmallStatement):
            # A one-line block (`if x: session.add(y)`): found, but no line of its own to insert after.
            self._small(stmt, None, scope, scope.ignored, in_begin)
            return
        ignored = scope.ignored or _has_ignore(getattr(stmt, "leading_lines", ()))
        if isinstance(stmt, cst.With):
            begins = False
            for item in stmt.items:
                self._calls(item.item, stmt, scope, ignored, in_begin, header=True)
                value = self.value_of(item.item, scope)
                if self._is_begin(item.item, scope):
                    begins = True
                entered = self._entered(item.item, scope)
                if entered is not None:
                    value, commits = entered
                    begins = begins or commits
                if item.asname is not None and isinstance(item.asname.name, cst.Name):
                    scope.env[item.asname.name.value] = value
                if value is not None and value.kind == "dbapi_conn" and item.asname is None:
                    begins = True  # sqlite3: `with conn:` commits on exit
            self._block(stmt.body.body, scope, in_begin or begins)
            return
        if isinstance(stmt, (cst.For,)):
            self._calls(stmt.iter, stmt, scope, ignored, in_begin, header=True)
            iterated = self.value_of(stmt.iter, scope)
            if isinstance(stmt.target, cst.Name):
                if _is_reference(stmt.iter):
                    # `for u in users: emit(s, t, u)` covers `session.add_all(users)`.
                    scope.aliases[stmt.target.value] = code_of(stmt.iter)
                element = None
                if iterated is not None and iterated.kind == "entities":
                    element = Value("entity", cls=iterated.cls, origin="loaded")
                scope.env[stmt.target.value] = element
            self._block(stmt.body.body, scope, in_begin)
            if stmt.orelse:
                self._block(stmt.orelse.body.body, scope, in_begin)
            return
        if isinstance(stmt, (cst.If, cst.While)):
            # A while header runs once per iteration, each perhaps in its own transaction: like a comprehension.
            self._calls(stmt.test, stmt, scope, ignored, in_begin, header=True,
                        loop="while" if isinstance(stmt, cst.While) else "")
            self._block(stmt.body.body, scope, in_begin)
            orelse = stmt.orelse
            while orelse is not None:
                if isinstance(orelse, cst.If):
                    self._calls(orelse.test, orelse, scope, ignored, in_begin, header=True)
                    self._block(orelse.body.body, scope, in_begin)
                    orelse = orelse.orelse
                else:
                    self._block(orelse.body.body, scope, in_begin)
                    orelse = None
            return
        if isinstance(stmt, (cst.Try, cst.TryStar)):
            self._block(stmt.body.body, scope, in_begin)
            for handler in stmt.handlers:
                if handler.name is not None and isinstance(handler.name.name, cst.Name):
                    scope.env[handler.name.name.value] = None
                self._block(handler.body.body, scope, in_begin)
            if stmt.orelse:
                self._block(stmt.orelse.body.body, scope, in_begin)
            if stmt.finalbody:
                self._block(stmt.finalbody.body.body, scope, in_begin)
            return
        if isinstance(stmt, cst.Match):
            for case in stmt.cases:
                self._block(case.body.body, scope, in_begin)
            return

    def _definition(self, node: cst.FunctionDef | cst.ClassDef, scope: _Scope) -> None:
        ignored = (
            scope.ignored
            or _has_ignore(node.leading_lines)
            or any(_has_ignore(d.leading_lines) for d in node.decorators)
            or (isinstance(node.body, cst.IndentedBlock) and _comment(node.body.header))
        )
        prefix = f"{scope.qualname}." if scope.qualname else ""
        if isinstance(node, cst.ClassDef):
            owner = f"{self.modname}.{node.name.value}" if scope.qualname is None else None
            inner = _Scope(
                qualname=f"{prefix}{node.name.value}", owner=owner, env={}, parent=scope, ignored=ignored
            )
            inner.is_class = True  # type: ignore[attr-defined]
            for stmt in node.body.body:
                if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
                    self._definition(stmt, inner)
            return
        owner = scope.owner if getattr(scope, "is_class", False) else None
        fn = _Scope(
            qualname=f"{prefix}{node.name.value}",
            owner=owner,
            env={},
            parent=scope if not getattr(scope, "is_class", False) else scope.parent,
            ignored=ignored,
            asynchronous=node.asynchronous is not None,
        )
        self._bind_params(node, fn)
        self.functions.append(fn)
        self._block(node.body.body, fn, False)

    def _bind_params(self, node: cst.FunctionDef, fn: _Scope) -> None:
        params = node.params
        ordered = [*params.posonly_params, *params.params, *params.kwonly_params]
        decorators = {d.decorator.value for d in node.decorators if isinstance(d.decorator, cst.Name)}
        for i, param in enumerate(ordered):
            name = param.name.value
            if i == 0 and fn.owner and "staticmethod" not in decorators:
                if "classmethod" in decorators:
                    fn.env[name] = Value("class", cls=fn.owner)
                elif self.index.is_mapped(fn.owner):
                    fn.env[name] = Value("entity", cls=fn.owner, origin="self")
                else:
                    fn.env[name] = Value("instance", cls=fn.owner)
                continue
            annotation = _annotation_name(param.annotation.annotation) if param.annotation else None
            fn.env[name] = self.index.raw_value(self.modname, ("param", annotation, name), {})
        for star in (params.star_arg, params.star_kwarg):
            if isinstance(star, cst.Param):
                fn.env[star.name.value] = None

    # -- simple statements -----------------------------------------------------------------------

    def _small(self, small: cst.CSTNode, line: cst.SimpleStatementLine | None, scope: _Scope, ignored: bool,
               in_begin: bool):
        self._calls(small, line, scope, ignored, in_begin, header=False)
        if isinstance(small, (cst.Assign, cst.AnnAssign, cst.AugAssign)):
            value_node = small.value
            targets = (
                [t.target for t in small.targets] if isinstance(small, cst.Assign) else [small.target]
            )
            value = self.value_of(value_node, scope) if value_node is not None else None
            for target in targets:
                if isinstance(target, cst.Name):
                    if isinstance(small, cst.AugAssign):
                        continue
                    scope.env[target.value] = value
                elif isinstance(target, (cst.Tuple, cst.List)):
                    for element in target.elements:
                        if isinstance(element.value, cst.Name):
                            scope.env[element.value.value] = None
                elif isinstance(target, cst.Attribute):
                    self._attribute_assignment(target, line, scope, ignored, in_begin)

    def _attribute_assignment(self, target: cst.Attribute, line: cst.CSTNode, scope: _Scope, ignored: bool,
                              in_begin: bool):
        owner = self.value_of(target.value, scope)
        if owner is None or owner.kind != "entity" or owner.origin == "new":
            if owner is not None and owner.kind == "dbapi_conn" and target.attr.value == "autocommit":
                name = code_of(target.value)
                scope.env[name] = Value("dbapi_conn", flag=True) if name.isidentifier() else scope.env.get(name)
            return
        self._event(
            scope,
            "implicit",
            node=target,
            stmt=line,
            value=owner,
            entity=code_of(target.value),
            ignored=ignored,
            in_begin=in_begin,
        )

    def _event(self, scope: _Scope, kind: str, node=None, stmt=None, value=None, **data) -> _Event:
        self.order += 1
        event = _Event(order=self.order, kind=kind, node=node, stmt=stmt, value=value, data=data)
        scope.events.append(event)
        return event

    # -- calls -----------------------------------------------------------------------------------

    def _calls(self, node: cst.CSTNode, stmt: cst.CSTNode, scope: _Scope, ignored: bool, in_begin: bool, header: bool,
               loop: str = ""):
        """Find the calls in ``node``; ``loop`` names the loop whose header it is, if it runs repeatedly."""
        repeated: dict[cst.CSTNode, str] = {}
        for call in _calls_in(node, repeated):
            if isinstance(call, cst.Attribute):
                self._reference(call, stmt, scope, ignored, in_begin, header, node)
                continue
            self._call(call, stmt, scope, ignored, in_begin, header, node, loop or repeated.get(call, ""))

    def _reference(self, node: cst.Attribute, stmt, scope: _Scope, ignored: bool, in_begin: bool, header: bool,
                   small) -> None:
        """``map(session.delete, objs)``, ``callback=session.add``: a session write handed to other code.

        It runs wherever and however often that code calls it, so no emit here can
        follow it; reported so that a person writes the loop out.
        """
        method = node.attr.value
        receiver = self.value_of(node.value, scope)
        if receiver is None or receiver.kind != "session":
            return
        kind = SESSION_WRITES.get(method, "session-bulk")
        self._site(scope, kind, node, stmt, verb="deleted" if method == "delete" else "saved", cls=None,
                   target=_emit_target(code_of(node.value), receiver), entity_node=None,
                   confidence="medium" if receiver.flag else "high", ignored=ignored, in_begin=in_begin,
                   header=header, small=small, repeated="reference")

    def _call(self, call: cst.Call, stmt, scope: _Scope, ignored: bool, in_begin: bool, header: bool, small,
              repeated: str = ""):
        func = call.func
        common = dict(ignored=ignored, in_begin=in_begin, header=header, small=small, repeated=repeated)
        if isinstance(func, cst.Attribute):
            method = func.attr.value
            if method in ("populate_obj", "load"):
                self._loaded_into(call, method, stmt, scope, ignored)
                return
            if method == "run_sync":
                self._run_sync(call, scope)
                return
            if not (
                method in SESSION_WRITES
                or method in BULK
                or method in ("update", "delete", "commit", "execution_options")
                or method in EXECUTES
                or method in COLLECTION_METHODS
                or method in self.wrapper_names
                or method in ("save", "destroy", "create")
            ):
                return
            receiver = self.value_of(func.value, scope)
            if receiver is None and method in ("execute", "executemany", "executescript", "commit"):
                receiver = self._named_dbapi(func.value)
            if receiver is None:
                return
            self._method_call(call, method, receiver, stmt, scope, common)
            return
        if isinstance(func, cst.Name):
            name = func.value
            if name == "setattr" and call.args:
                owner = self.value_of(call.args[0].value, scope)
                if owner is not None and owner.kind == "entity" and owner.origin != "new":
                    self._event(scope, "implicit", node=call, stmt=stmt, value=owner,
                                entity=code_of(call.args[0].value), ignored=ignored)
                return
            callee = self.value_of(func, scope)
            if callee is None:
                return
            if callee.kind == "external" and callee.origin in EMIT_NAMES:
                self._record_emit(call, scope)
            elif callee.kind == "function" and callee.attr:
                wrapper = self.index.wrapper(callee.attr)
                if wrapper is not None:
                    self._wrapper_call(call, wrapper, None, stmt, scope, common)
                elif self.index.commits_inside(callee.attr):
                    self._event(scope, "commit", node=call, value=None, helper=callee.attr)

    def _loaded_into(self, call: cst.Call, method: str, stmt, scope: _Scope, ignored: bool) -> None:
        """``form.populate_obj(entity)``, ``schema.load(data, instance=entity)``: an implicit update."""
        if method == "populate_obj":
            target = call.args[0].value if call.args else None
        else:
            target = next((a.value for a in call.args if a.keyword is not None and a.keyword.value == "instance"), None)
        owner = self.value_of(target, scope) if target is not None else None
        if owner is not None and owner.kind == "entity" and owner.origin != "new":
            self._event(scope, "implicit", node=call, stmt=stmt, value=owner, entity=code_of(target),
                        ignored=ignored)

    def _run_sync(self, call: cst.Call, scope: _Scope) -> None:
        """``await conn.run_sync(emit, type, ...)``: the emit of an AsyncConnection's site, so it covers it."""
        first = call.args[0] if call.args else None
        if first is None or first.keyword is not None:
            return
        callee = self.value_of(first.value, scope)
        if callee is not None and callee.kind == "external" and callee.origin in EMIT_NAMES:
            # run_sync passes the Connection first: the arguments after `emit` are emit's after its
            # target, at the same positions as in `emit(conn, type, entity)`.
            self._record_emit(call, scope)

    def _named_dbapi(self, receiver: cst.BaseExpression) -> Value | None:
        """A receiver we cannot type but whose name says cursor or connection (checked with its SQL)."""
        name = receiver.attr.value if isinstance(receiver, cst.Attribute) else getattr(receiver, "value", None)
        if name in CURSOR_NAMES:
            return Value("cursor", flag=None, origin="name")
        if name in DBAPI_CONN_NAMES:
            return Value("dbapi_conn", flag=None, origin="name")
        return None

    def _method_call(self, call: cst.Call, method: str, receiver: Value, stmt, scope: _Scope, common: dict):
        kind = receiver.kind
        recv_node = call.func.value  # type: ignore[attr-defined]
        args = call.args
        if kind == "session":
            confidence = "medium" if receiver.flag else "high"
            target = _emit_target(code_of(recv_node), receiver)
            if method == "commit":
                self._event(scope, "commit", node=call, value=receiver, target=target)
            elif method in SESSION_WRITES and args:
                entity_node = args[0].value
                entity = self.value_of(entity_node, scope)
                site_kind = SESSION_WRITES[method]
                if method == "add" and entity is not None and entity.kind == "entity":
                    verb = {"new": "created", "loaded": "updated"}.get(entity.origin or "", "saved")
                elif method == "delete":
                    verb = "deleted"
                elif method == "add_all" and entity is not None and entity.kind == "entities":
                    verb = "created" if entity.origin == "new" else "saved"
                else:
                    verb = "saved"
                cls = entity.cls if entity is not None and entity.kind in ("entity", "entities") else None
                if method != "add_all" and (
                    (entity is not None and entity.kind in ("other", "str"))
                    or isinstance(entity_node, (cst.SimpleString, cst.Integer))
                ):
                    return  # a set's or a cache's .add/.delete, not a session's
                many = method == "add_all"
                built = self._built(entity_node, entity, scope) if method == "add" else None
                extra = {}
                if method == "merge":
                    # merge writes a copy and returns it; the object passed in stays outside the session
                    # (no key on a new row, is_modified() always true): only the returned copy can be emitted.
                    merged = _assigned_name(common["small"], call)
                    if merged is not None:
                        entity_node = merged
                    else:
                        name = code_of(entity_node) if isinstance(entity_node, cst.Name) else "merged"
                        # The call as the code must write it: an AsyncSession's merge is awaited, on itself.
                        merge = f"{'await ' if receiver.origin == 'async' else ''}{code_of(recv_node)}.merge"
                        extra["decide"] = (
                            "merge writes a copy and returns it, and its result is not assigned: assign it "
                            f"(`{name} = {merge}({code_of(entity_node)})`) and use that copy, so the "
                            "emit can name the object merge wrote"
                        )
                        # No emit of the object passed in covers it (an earlier rewrite inserted those).
                        entity_node = None
                self._site(scope, site_kind, call, stmt, verb=verb, cls=cls, target=target,
                           entity_node=entity_node, many=many, built=built, confidence=confidence, **common,
                           **extra)
            elif method in BULK and args:
                cls = None
                first = self.value_of(args[0].value, scope)
                if method != "bulk_save_objects" and first is not None and first.kind == "class":
                    cls = first.cls
                rows = args[1].value if method != "bulk_save_objects" and len(args) > 1 else args[0].value
                verb = {"bulk_insert_mappings": "created", "bulk_update_mappings": "updated"}.get(method, "saved")
                if method == "bulk_save_objects":
                    cls, verb = self._bulk_saved(first)
                data = self._plain(rows, "rows") if method != "bulk_save_objects" else None
                if method == "bulk_save_objects" and isinstance(rows, cst.Name):
                    data = f'{{"count": len({rows.value})}}'
                self._site(scope, "session-bulk", call, stmt, verb=verb, cls=cls, target=target,
                           data=data, confidence=confidence, **common)
            elif method in SESSION_EXECUTES and args:
                self._execute(call, receiver, target, scope, stmt, common, confidence)
            return
        if kind == "query" and method in ("update", "delete"):
            target = receiver.text
            verb = "updated" if method == "update" else "deleted"
            data = None
            if method == "update" and args:
                data = self._plain_dict(args[0].value)
            self._site(scope, "query-bulk", call, stmt, verb=verb, cls=receiver.cls, target=target,
                       data=data, key=receiver.key, confidence="high", **common)
            return
        if kind in ("core_conn",):
            target = code_of(recv_node)
            if method == "commit":
                self._event(scope, "commit", node=call, value=receiver, target=target)
            elif method in CORE_EXECUTES and args:
                self._execute(call, receiver, target, scope, stmt, common, "high")
            elif method == "execution_options" and _autocommit(args) and isinstance(recv_node, cst.Name):
                # Connection.execution_options() changes the connection itself, assigned or not.
                scope.env[recv_node.value] = dataclasses.replace(receiver, flag=True)
            return
        if kind in ("cursor", "dbapi_conn"):
            if method == "commit" and kind == "dbapi_conn":
                self._event(scope, "commit", node=call, value=receiver, target=code_of(recv_node))
                return
            if method not in DBAPI_EXECUTES or not args:
                return
            text = self.value_of(args[0].value, scope)
            dml = None
            decide = None
            if text is not None and text.kind == "str" and text.text:
                if method == "executescript":
                    found = sql.classify_script(text.text)
                    dml = found[0] if found else None
                    # sqlite3 commits the pending transaction first and runs the script outside it.
                    decide = ("executescript() commits the pending transaction first and runs the script in "
                              "autocommit: no emit can join its writes; run them with execute() and commit")
                else:
                    dml = sql.classify(text.text)
            if dml is None:
                return
            if kind == "cursor":
                target = receiver.text or f"{code_of(recv_node)}.connection"
            else:
                target = code_of(recv_node)
            params = args[1].value if len(args) > 1 else None
            data = self._plain(params, None) if params is not None else None
            confidence = "medium" if receiver.origin == "name" else "high"
            cls = self.index.class_for_table(dml.table)
            self._site(scope, "dbapi", call, stmt, verb=dml.verb, cls=cls, table=dml.table, target=target,
                       data=data, key=self._sql_key(dml, cls, params), confidence=confidence,
                       autocommit=receiver.flag, decide=decide, **common)
            return
        if kind == "collection" and method in COLLECTION_METHODS:
            owner_node = recv_node.value  # type: ignore[attr-defined]
            owner = self.value_of(owner_node, scope)
            if owner is not None and owner.origin == "new":
                return  # filling a new object's collection is part of creating it
            target = self._session_at_hand(scope)
            if self.index.owns(receiver.cls or "", receiver.attr or ""):
                # Its rows are part of the owner (an order's lines): the owner's aggregate changed.
                self._site(scope, "collection", call, stmt, verb="updated", cls=receiver.cls, target=target,
                           entity_node=owner_node, confidence="high", **common)
                return
            # A collection its parent does not own: the rows that change are the children's (their foreign
            # key, or their INSERT when new), so the event is the child's.
            element = args[-1].value if args and method in ("append", "remove", "add", "discard", "insert") else None
            child = self.value_of(element, scope) if element is not None else None
            child = child if child is not None and child.kind == "entity" else None
            decide = None
            if element is None or not _is_reference(element):
                decide = (f"{code_of(recv_node)} is a collection its parent does not own: the rows that change are "
                          "the children's, and this call does not name one; emit for each child")
            verb = {"new": "created", "loaded": "updated"}.get(child.origin or "", "saved") if child else "saved"
            self._site(scope, "collection", call, stmt, verb=verb, cls=child.cls if child else None, target=target,
                       entity_node=element, confidence="high", decide=decide, **common)
            return
        if kind in ("entity", "instance", "class") and receiver.cls:
            qualname = self.index.find_method(receiver.cls, method)
            if qualname is not None:
                wrapper = self.index.wrapper(qualname)
                if wrapper is not None:
                    self._wrapper_call(call, wrapper, recv_node, stmt, scope, common)
                elif self.index.commits_inside(qualname):
                    self._event(scope, "commit", node=call, value=None, helper=qualname)
            elif (
                kind == "entity"
                and method in ("save", "delete", "destroy", "create", "update")
                and self.index.has_external_base(receiver.cls)
            ):
                self._site(scope, "wrapper-call", call, stmt, verb="saved", cls=receiver.cls, target=None,
                           entity_node=recv_node, confidence="medium",
                           decide=f"{method}() is defined outside the scanned tree and may commit: "
                           "the emit cannot be placed inside its transaction", **common)

    @staticmethod
    def _bulk_saved(objects: Value | None) -> tuple[str | None, str]:
        """The class and verb of ``bulk_save_objects(objects)``: a list of new objects is INSERTed, loaded ones UPDATEd.

        The list is read as ``add_all``'s is (``[Product(...) for n in names]``). One
        call is one change (docs/codemods.md), so it gets one event for the aggregate
        type, with no entity and no key: a bulk save fills in no primary keys (unless
        ``return_defaults=True``) and leaves the objects outside the session.
        """
        if objects is None or objects.kind != "entities":
            return None, "saved"
        return objects.cls, {"new": "created", "loaded": "updated"}.get(objects.origin or "", "saved")

    def _built(self, node: cst.CSTNode, entity: Value | None, scope: _Scope) -> str | None:
        """Code of the class when ``node`` builds a new object of a mapped class (``StockLevel(...)``).

        Only a class named at module level (``StockLevel``, ``models.StockLevel``):
        a local or a parameter (``cls(...)``) may be any class at run time.
        """
        if not isinstance(node, cst.Call) or entity is None or entity.kind != "entity" or entity.origin != "new":
            return None
        if not entity.cls or not _is_reference(node.func):
            return None
        root = node.func
        while isinstance(root, cst.Attribute):
            root = root.value
        if isinstance(root, cst.Name) and scope.lookup(root.value)[0]:
            return None
        callee = self.value_of(node.func, scope)
        if callee is None or callee.kind != "class":
            return None  # a factory (`User.create(...)`) may return an object that is in the session already
        return code_of(node.func)

    def _execute(self, call, receiver: Value, target: str, scope: _Scope, stmt, common: dict, confidence: str):
        statement = self.value_of(call.args[0].value, scope)
        if statement is None:
            return
        params = call.args[1].value if len(call.args) > 1 else None
        if statement.kind == "stmt":
            verb, table, cls, key = statement.verb, statement.table, statement.cls, statement.key
        elif statement.kind in ("sql", "str") and statement.text:
            dml = sql.classify(statement.text)
            if dml is None:
                return
            verb, table, cls = dml.verb, dml.table, self.index.class_for_table(dml.table)
            key = self._sql_key(dml, cls, params)
        else:
            return
        data = statement.origin if statement.kind == "stmt" else None
        if data is None and params is not None:
            data = self._plain(params, None)
        autocommit = receiver.kind == "core_conn" and bool(receiver.flag)
        run_sync = receiver.kind == "core_conn" and receiver.origin == "async"
        extra = {}
        if run_sync and not scope.asynchronous:
            # A plain def only builds the coroutine; its emit could not be awaited there.
            extra["decide"] = (
                "a write of an AsyncConnection outside an `async def`: its emit (`await conn.run_sync(emit, ...)`) "
                "must be awaited, which only an `async def` can do; emit where the statement is awaited"
            )
        self._site(scope, "execute", call, stmt, verb=verb or "updated", cls=cls, table=table, target=target,
                   data=data, key=key, confidence=confidence, autocommit=autocommit, run_sync=run_sync,
                   **common, **extra)

    def _wrapper_call(self, call, wrapper, recv_node, stmt, scope: _Scope, common: dict):
        entity_node = recv_node
        if entity_node is None and call.args:
            fn = self.index.function(wrapper.qualname)
            position = fn.params.index(wrapper.entity) if fn and wrapper.entity in fn.params else 0
            entity_node = call.args[position].value if position < len(call.args) else call.args[0].value
        value = self.value_of(entity_node, scope) if entity_node is not None else None
        cls = value.cls if value is not None and value.kind in ("entity", "class") else None
        decide = None
        if wrapper.ignored:
            decide = f"{wrapper.qualname} is marked '# strangler: ignore'; its callers get no emit either"
        self._site(scope, "wrapper-call", call, stmt, verb=wrapper.verb, cls=cls, target=None,
                   entity_node=entity_node, confidence="high", wrapper=wrapper, decide=decide, **common)

    def _record_emit(self, call: cst.Call, scope: _Scope) -> None:
        positional = [a for a in call.args if a.keyword is None]
        keywords = {a.keyword.value: a.value for a in call.args if a.keyword is not None}
        entity = positional[2].value if len(positional) > 2 else keywords.get("entity")
        aggregate = keywords.get("aggregate")
        type_node = positional[1].value if len(positional) > 1 else keywords.get("type")
        type_text = literal(type_node) if type_node is not None else None
        self._event(
            scope,
            "emit",
            node=call,
            entity=code_of(entity) if entity is not None else None,
            # What the loop variable iterates: the emit covers the list's add_all as well as its own add.
            iterates=scope.aliases.get(code_of(entity)) if entity is not None else None,
            aggregate=literal(aggregate) if aggregate is not None else None,
            verb=type_text.rsplit(".", 1)[-1] if type_text else None,
        )

    def _site(self, scope: _Scope, kind: str, call, stmt, **info) -> None:
        self._event(scope, "site", node=call, stmt=stmt, site_kind=kind, **info)

    def _plain(self, node: cst.CSTNode, key: str | None) -> str | None:
        """Code for ``data=``: the bound parameters when they are plain names, else None."""
        if isinstance(node, cst.Name) and key:
            return f'{{"{key}": {node.value}}}'
        if isinstance(node, cst.Dict):
            return self._plain_dict(node)
        if isinstance(node, (cst.Tuple, cst.List)):
            names = [e.value.value for e in node.elements if isinstance(e.value, cst.Name)]
            if names and len(names) == len(node.elements):
                return "{" + ", ".join(f'"{n}": {n}' for n in names) + "}"
        return None

    def _plain_dict(self, node: cst.CSTNode) -> str | None:
        if not isinstance(node, cst.Dict) or not node.elements:
            return None
        pairs = []
        for element in node.elements:
            if not isinstance(element, cst.DictElement):
                return None
            key = literal(element.key)
            if key is None or not isinstance(element.value, (cst.Name, cst.Integer, cst.SimpleString)):
                return None
            pairs.append(f'"{key}": {code_of(element.value)}')
        return "{" + ", ".join(pairs) + "}"

    def _pinned_key(self, args: Sequence[cst.Arg], cls: str, scope: _Scope) -> str | None:
        """Code of the value a ``where``/``filter``/``filter_by`` pins the single primary key to."""
        keys = self.index.primary_keys(cls)
        if len(keys) != 1:
            return None
        for arg in args:
            value = None
            if arg.keyword is not None and arg.keyword.value == keys[0]:
                value = arg.value
            elif isinstance(arg.value, cst.Comparison) and len(arg.value.comparisons) == 1:
                target = arg.value.comparisons[0]
                left = arg.value.left
                if (isinstance(target.operator, cst.Equal) and isinstance(left, cst.Attribute)
                        and left.attr.value == keys[0]):
                    owner = self.value_of(left.value, scope)
                    if owner is not None and owner.kind == "class" and owner.cls == cls:
                        value = target.comparator
            if value is not None and _is_reference(value):
                return code_of(value)
        return None

    def _sql_key(self, dml: sql.Dml, cls: str | None, params: cst.CSTNode | None) -> str | None:
        """Code of the parameter value a SQL ``WHERE <primary key> = <param>`` pins, if plain."""
        keys = self.index.primary_keys(cls) if cls else []
        if len(keys) != 1 or params is None:
            return None
        pinned = next(((token, n) for column, token, n in dml.where_equals if column == keys[0]), None)
        if pinned is None:
            return None
        token, ordinal = pinned
        value = None
        if token in ("?", "%s") and isinstance(params, (cst.Tuple, cst.List)):
            if ordinal < len(params.elements):
                value = params.elements[ordinal].value
        elif isinstance(params, cst.Dict):
            name = token[1:] if token.startswith(":") else token[2:-2]
            for element in params.elements:
                if isinstance(element, cst.DictElement) and literal(element.key) == name:
                    value = element.value
        return code_of(value) if value is not None and _is_reference(value) else None

    def _session_at_hand(self, scope: _Scope) -> str | None:
        """Code of a session usable in this function: a local or parameter, else the module's ``db``."""
        current: _Scope | None = scope
        while current is not None:
            for name, value in current.env.items():
                if value is not None and value.kind == "session" and not value.flag:
                    return _emit_target(name, value)
            current = current.parent
        if scope.owner:
            for attr in SESSION_NAMES:
                value = self.index.attribute(Value("instance", cls=scope.owner), attr)
                if value is not None and value.kind == "session":
                    return f"self.{attr}"
        return self._module_session()

    def _module_session(self) -> str | None:
        facts = self.index.modules.get(self.modname)
        if facts is None:
            return None
        for name in (*facts.globals, *facts.imports):
            value = self.index.global_value(self.modname, name)
            if value is not None and value.kind == "fsa":
                return f"{name}.session"
            if value is not None and value.kind == "session":
                return name
        return None

    def _entered(self, node: cst.CSTNode, scope: _Scope) -> tuple[Value, bool] | None:
        """What ``with node as x`` binds when ``node`` calls a ``@contextmanager`` of the tree, and whether it commits.

        ``with session_scope() as s:`` holds the session the generator yields; one
        that commits it after the ``yield`` commits what the block wrote, like ``session.begin()``.
        """
        if not isinstance(node, cst.Call):
            return None
        qualname = None
        if isinstance(node.func, cst.Attribute):
            # `with self.session_scope() as s:`: a method of the instance's class.
            owner = self.value_of(node.func.value, scope)
            if owner is not None and owner.kind in ("instance", "entity", "class") and owner.cls:
                qualname = self.index.find_method(owner.cls, node.func.attr.value)
        if qualname is None:
            callee = self.value_of(node.func, scope)
            if callee is None or callee.kind not in ("function", "method") or not callee.attr:
                return None
            qualname = callee.attr
        value = self.index.entered_value(qualname)
        if value is None:
            return None
        fn = self.index.function(qualname)
        return value, value.kind == "session" and fn is not None and fn.commits_yielded

    def _is_begin(self, node: cst.CSTNode, scope: _Scope) -> bool:
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
            if node.func.attr.value in ("begin", "begin_nested"):
                receiver = self.value_of(node.func.value, scope)
                return receiver is not None and receiver.kind in ("session", "session_factory", "engine", "core_conn")
        return False

    # -- what an expression is -------------------------------------------------------------------

    def value_of(self, node: cst.CSTNode | None, scope: _Scope) -> Value | None:
        if node is None:
            return None
        if isinstance(node, cst.Name):
            found, value = scope.lookup(node.value)
            if found:
                return value
            value = self.index.global_value(self.modname, node.value)
            if value is None and node.value in ("set", "dict", "list", "frozenset"):
                return Value("external", origin=f"builtins.{node.value}")
            return value
        if isinstance(node, cst.Attribute):
            base = self.value_of(node.value, scope)
            attr = node.attr.value
            if base is not None and base.kind == "fsa" and attr == "session":
                return Value("session", text=f"{code_of(node.value)}.session")
            if base is not None and base.kind == "class" and attr == "query" and base.cls and self.index.is_mapped(base.cls):
                return Value("query", cls=base.cls, text=self._module_session())
            value = self.index.attribute(base, attr)
            if value is None and attr in SESSION_NAMES and (base is None or base.kind in ("instance", "entity")):
                if isinstance(node.value, cst.Name) and node.value.value in ("self", "cls"):
                    return WEAK_SESSION
            if value is not None and value.kind == "query" and value.text is None:
                return dataclasses.replace(value, text=self._module_session())
            return value
        if isinstance(node, (cst.SimpleString, cst.ConcatenatedString, cst.FormattedString)):
            return Value("str", text=literal(node))
        if isinstance(node, (cst.Set, cst.Dict, cst.SetComp, cst.DictComp)):
            return OTHER
        if isinstance(node, (cst.List, cst.ListComp)):
            elements = getattr(node, "elements", None)
            sample = elements[0].value if elements else getattr(node, "elt", None)
            if sample is not None:
                # The loop variables of a comprehension are unknown here, which is fine for `Model(...)`.
                first = self.value_of(sample, scope)
                if first is not None and first.kind == "entity":
                    return Value("entities", cls=first.cls, origin=first.origin)
            return OTHER
        if isinstance(node, cst.Subscript):
            base = self.value_of(node.value, scope)
            if base is not None and base.kind == "entities":
                return Value("entity", cls=base.cls, origin="loaded")
            return None
        if isinstance(node, cst.Call):
            return self._call_value(node, scope)
        if isinstance(node, cst.Await):
            value = self.value_of(node.expression, scope)
            if value is not None and value.kind == "core_conn" and value.origin != "async" and _is_method_call(
                node.expression, "connection"
            ):
                # `await session.connection()`: only an AsyncSession's is awaited, whatever its annotation says.
                return dataclasses.replace(value, origin="async")
            return value
        return None

    def _call_value(self, node: cst.Call, scope: _Scope) -> Value | None:
        func = node.func
        args = node.args
        first = args[0].value if args else None
        if isinstance(func, cst.Attribute):
            method = func.attr.value
            receiver = self.value_of(func.value, scope)
            if receiver is None:
                return None
            kind = receiver.kind
            if kind == "session":
                text = code_of(func.value)
                if method == "query" and first is not None:
                    cls = self.value_of(first, scope)
                    return Value("query", cls=cls.cls if cls and cls.kind == "class" else None, text=text)
                if method == "get" and first is not None:
                    cls = self.value_of(first, scope)
                    return Value("entity", cls=cls.cls if cls and cls.kind == "class" else None, origin="loaded")
                if method in ("scalars", "execute", "scalar"):
                    selected = self.value_of(first, scope)
                    cls = selected.cls if selected is not None and selected.kind == "select" else None
                    if method == "scalar":
                        return Value("entity", cls=cls, origin="loaded") if cls else None
                    return Value("result", cls=cls)
                if method == "merge" and first is not None:
                    merged = self.value_of(first, scope)
                    return Value("entity", cls=merged.cls if merged else None, origin="loaded")
                if method == "connection":
                    # An AsyncSession's connection() is an AsyncConnection.
                    return Value("core_conn", origin=receiver.origin if receiver.origin == "async" else None)
                return None
            if kind == "session_factory" and method == "begin":
                return ASYNC_SESSION if receiver.origin == "async" else SESSION
            if kind in ("query", "result"):
                if kind == "query" and method in ("where", "filter", "filter_by") and receiver.cls:
                    # `Order.query.filter_by(id=oid)`: the key the docs promise for `query-bulk` events.
                    key = self._pinned_key(args, receiver.cls, scope)
                    return dataclasses.replace(receiver, key=key) if key is not None else receiver
                if method in (QUERY_CHAIN if kind == "query" else ("scalars", "unique")):
                    return receiver
                if receiver.cls and method in QUERY_ONE:
                    return Value("entity", cls=receiver.cls, origin="loaded")
                if receiver.cls and method == "all":
                    return Value("entities", cls=receiver.cls, origin="loaded")
                return None
            if kind == "fsa" and method in ("get_or_404", "first_or_404", "one_or_404") and first is not None:
                target = self.value_of(first, scope)
                cls = target.cls if target is not None and target.kind in ("class", "select") else None
                return Value("entity", cls=cls, origin="loaded") if cls else None
            if kind == "dbapi_conn":
                if method == "cursor":
                    name = code_of(func.value)
                    return Value("cursor", flag=receiver.flag, text=name if name.isidentifier() else None,
                                 origin=receiver.origin)
                if method == "execute":
                    return Value("cursor", flag=receiver.flag)
                return None
            if kind == "engine":
                if method in ("connect", "begin"):
                    # flag: in AUTOCOMMIT; origin: an AsyncEngine's connections are AsyncConnections
                    return Value("core_conn", flag=receiver.flag, origin=receiver.origin)
                if method == "execution_options":
                    return dataclasses.replace(receiver, flag=receiver.flag or _autocommit(args))
                if method == "raw_connection":
                    return Value("dbapi_conn")
                return None
            if kind == "stmt" and method in ("where", "filter", "filter_by") and receiver.cls:
                key = self._pinned_key(args, receiver.cls, scope)
                if key is not None:
                    return dataclasses.replace(receiver, key=key)
                return receiver
            if kind == "stmt":
                if method == "values":
                    data = self._plain_dict(
                        cst.Dict([cst.DictElement(cst.SimpleString(f'"{a.keyword.value}"'), a.value)
                                  for a in args if a.keyword is not None])
                    ) if args and all(a.keyword is not None for a in args) else None
                    return dataclasses.replace(receiver, origin=data or receiver.origin)
                return receiver
            if kind == "select":
                return receiver
            if kind in ("external", "fsa") and method in SQLA_CONSTRUCTS:
                # `sa.update(...)`, and Flask-SQLAlchemy's `db.update(...)`, which re-exports sqlalchemy's.
                origin = f"{receiver.origin}.{method}" if kind == "external" else f"sqlalchemy.{method}"
                return self._external_call(Value("external", origin=origin), args, scope)
            if kind == "core_conn" and method == "execution_options":
                # Connection.execution_options() changes the connection and returns it.
                return dataclasses.replace(receiver, flag=receiver.flag or _autocommit(args))
            if kind == "table" and method in SQLA_DML:
                return Value("stmt", verb=SQLA_DML[method], table=receiver.table, cls=receiver.cls)
            if kind == "str" and method in ("format", "strip", "replace", "lstrip", "rstrip"):
                return receiver
            if kind == "class" and method in QUERY_ONE | {"query"}:
                return None
            value = self.index.attribute(receiver, method)
            return self.index.call_value(value, _constant_kwargs(args))
        callee = self.value_of(func, scope)
        if callee is None:
            return None
        return self._external_call(callee, args, scope)

    def _external_call(self, callee: Value, args: Sequence[cst.Arg], scope: _Scope) -> Value | None:
        """What calling ``callee`` (a name that resolved) with ``args`` returns."""
        first = args[0].value if args else None
        if callee.kind == "external":
            origin = callee.origin or ""
            short = origin.rpartition(".")[2]
            if origin.startswith(SQLA_MODULES) and short in SQLA_DML and first is not None:
                target = self.value_of(first, scope)
                cls = target.cls if target is not None and target.kind in ("class", "table") else None
                table = target.table if target is not None and target.kind == "table" else None
                if cls and not table:
                    table = self.index.tablename(cls)
                return Value("stmt", verb=SQLA_DML[short], table=table, cls=cls)
            if origin.startswith(SQLA_MODULES) and short == "select" and first is not None:
                target = self.value_of(first, scope)
                return Value("select", cls=target.cls if target is not None and target.kind == "class" else None)
            if origin.startswith(SQLA_MODULES) and short == "text" and first is not None:
                text = self.value_of(first, scope)
                return Value("sql", text=text.text if text is not None else None)
            if origin in ("contextlib.closing",) and first is not None:
                return self.value_of(first, scope)
        return self.index.call_value(callee, _constant_kwargs(args))

    # -- from events to findings ---------------------------------------------------------------------

    def _resolve(self, scope: _Scope) -> Iterator[tuple[_Scope, _Event, dict]]:
        events = scope.events
        commits = [e for e in events if e.kind == "commit"]
        emits = [e for e in events if e.kind == "emit"]
        claimed: set[int] = set()
        for event in events:
            if event.kind == "site":
                entity_node = event.data.get("entity_node")
                event.data["entity_code"] = code_of(entity_node) if entity_node is not None else None
                if event.data.get("built"):
                    event.data["entity_code"] = f"{self.names['added']}({event.data['target']}, {event.data['built']})"
        explicit_entities = {e.data["entity_code"] for e in events if e.kind == "site"}
        sites = [e for e in events if e.kind == "site"]
        for i, event in enumerate(sites):
            info = dict(event.data)
            later = [c for c in commits if c.order > event.order]
            info["commit_visible"] = bool(later) or info.get("in_begin", False)
            window = None
            if info.get("built"):
                # added() names whatever the last tracked add attached: only an emit between this add and
                # the next add of the same class can be this one's.
                following = [e.order for e in sites[i + 1:] if e.data.get("entity_code") == info["entity_code"]]
                window = (event.order, following[0] if following else self.order + 1)
            info["covered_by"] = self._claim(event, info, emits, claimed, window)
            yield scope, event, info
        # Implicit updates: one per entity per commit that follows them.
        seen: set[tuple[str, int]] = set()
        for event in events:
            if event.kind != "implicit":
                continue
            entity = event.data["entity"]
            if entity in explicit_entities:
                continue
            later = [c for c in commits if c.order > event.order]
            if not later and not event.data.get("in_begin"):
                continue
            key = (entity, later[0].order if later else -1)
            if key in seen:
                continue
            seen.add(key)
            info = dict(event.data)
            info.update(site_kind="implicit-update", verb="updated", cls=event.value.cls if event.value else None,
                        commit_visible=True, entity_code=entity, confidence="medium")
            info["covered_by"] = self._claim(event, info, emits, claimed)
            yield scope, event, info

    def _claim(self, event: _Event, info: dict, emits: list[_Event], claimed: set[int],
               window: tuple[int, int] | None = None) -> _Event | None:
        entity = info.get("entity_code")
        aggregate = self._aggregate(info)
        best = None
        for emit in emits:
            if emit.order in claimed or (window is not None and not window[0] < emit.order < window[1]):
                continue
            if entity is not None and emit.data.get("entity") != entity and not (
                    info.get("many") and emit.data.get("iterates") == entity):
                continue
            if entity is None and (emit.data.get("entity") is not None or emit.data.get("aggregate") != aggregate):
                continue
            if best is None or (emit.data.get("verb") == info.get("verb") and best.data.get("verb") != info.get("verb")):
                best = emit
        if best is not None:
            claimed.add(best.order)
        return best

    def _aggregate(self, info: dict) -> str | None:
        cls = info.get("cls")
        if cls:
            return self.index.aggregate_of(cls)
        table = info.get("table")
        if table:
            owner = self.index.class_for_table(table)
            return self.index.aggregate_of(owner) if owner else snake_case(table)
        return None

    def _finding(self, scope: _Scope, event: _Event, info: dict, line: int, column: int) -> Finding:
        kind = info["site_kind"]
        aggregate = self._aggregate(info)
        function = scope.qualname
        verb = naming.verb_for(info.get("verb") or "updated", function, self.settings.verbs)
        dynamic = aggregate is None and kind in ("session-add", "session-delete", "session-merge", "wrapper",
                                                 "collection")
        if kind == "session-add" and scope.owner and info.get("entity_code") == "self" and not aggregate:
            dynamic = True
        # A write of `self` (or a parameter) in a helper: the helper is a wrapper, emit inside it.
        wrapper_here = None
        if scope.qualname and kind in ("session-add", "session-delete", "session-merge"):
            qualname = f"{self.modname}.{scope.qualname}"
            wrapper_here = self.index.wrapper(qualname)
            if wrapper_here is not None and (wrapper_here.commits or info.get("entity_code") == "self"):
                kind = "wrapper"
                verb = naming.verb_for(wrapper_here.verb if info.get("verb") == "saved" else info.get("verb"),
                                       function, self.settings.verbs)
                if info.get("entity_code") == "self" and scope.owner:
                    aggregate = None  # subclasses share the wrapper: the class is known at run time
                    dynamic = True
        event_type = naming.event_type(
            self.settings.prefix, aggregate, verb, self.path, function, self.settings.event_types
        ) if aggregate else None
        covered = info.get("covered_by") is not None
        decide = info.get("decide")
        action = "rewrite"
        reason = ""
        if kind == "wrapper-call":
            if decide:
                action, reason = "decide", decide
            else:
                wrapper = info.get("wrapper")
                action = "covered"
                reason = f"emitted inside {wrapper.qualname}" if wrapper else "emitted inside the wrapper"
                covered = True
        elif kind == "implicit-update":
            action = "covered" if covered else "capture"
            reason = "an emit covers it" if covered else (
                "attribute assignment: enable outbox capture for this class (docs/codemods.md)"
            )
        elif covered:
            action, reason = "covered", "an emit already follows it"
        elif info.get("ignored"):
            action, reason = "ignored", "# strangler: ignore"
        elif decide:
            action, reason = "decide", decide
        elif info.get("repeated") == "while":
            action, reason = "decide", (
                "the write is in a while header, which runs once per iteration: one emit before the loop cannot "
                "follow each write (move the write into the loop body: `while True: result = ...; if not ...: "
                "break`)"
            )
        elif info.get("repeated"):
            action, reason = "decide", _REPEATED_REASONS[info["repeated"]]
        else:
            action, reason = self._decision(kind, info, aggregate, dynamic)
        edit = None
        if action == "rewrite":
            edit, refusal = self._edit(kind, info, event, aggregate, verb, event_type, dynamic)
            if edit is None:
                action, reason = "decide", f"the emit has no safe place: {refusal}"
        site = Site(
            path=self.path,
            line=line,
            column=column,
            kind=kind,
            aggregate=aggregate,
            function=function,
            commit_visible=bool(info.get("commit_visible")) or bool(wrapper_here and wrapper_here.commits),
            covered=covered,
            confidence=info.get("confidence", "high"),
            action=action,
            reason=reason,
            event_type=event_type if not dynamic else naming.dynamic_type_text(self.settings.prefix, verb),
            code=code_of(event.node).split("\n")[0] if event.node is not None else "",
        )
        return Finding(site=site, edit=edit)

    def _decision(self, kind: str, info: dict, aggregate: str | None, dynamic: bool) -> tuple[str, str]:
        if info.get("target") is None:
            return "decide", "no session at hand in this function to emit with"
        if kind == "execute" and info.get("autocommit"):
            return "decide", (
                'the connection is in AUTOCOMMIT (isolation_level="AUTOCOMMIT"): the write commits before any emit '
                "could join it; run it on a connection without AUTOCOMMIT, in `with engine.begin() as conn:`"
            )
        if kind == "dbapi":
            if info.get("autocommit"):
                return "decide", "the connection is in autocommit: the write commits before any emit could join it"
            if not info.get("commit_visible"):
                return "decide", "no commit of this connection is visible here: its transaction cannot be proven"
        if aggregate is None and not dynamic:
            return "decide", "the aggregate cannot be known (pass it by configuring an event type for this site)"
        return "rewrite", ""

    def _edit(self, kind, info, event: _Event, aggregate, verb, event_type, dynamic) -> tuple[Edit | None, str]:
        """The edit for a site, or None and why there is no safe place for its emit."""
        stmt = event.stmt
        if stmt is None:
            return None, "a one-line block (`if x: session.add(y)`) has no line of its own to put it after"
        target = info["target"]
        entity = info.get("entity_code")
        built = info.get("built")
        imports = [self._import("emit")]
        fn = self.emit_name
        entity_less = kind in ("session-bulk", "query-bulk", "execute", "dbapi")
        many = info.get("many")
        lead = ""
        if entity_less:
            args = [f'"{event_type}"', f'aggregate="{aggregate}"']
            if info.get("key"):
                args.append(f"key={info['key']}")
            if info.get("data"):
                args.append(f"data={info['data']}")
            code = _emit_call(fn, target, args, info.get("run_sync", False))
        else:
            entity_node = info.get("entity_node")
            if entity is None or not (built or _is_reference(entity_node)):
                if many:
                    return None, "the objects are built in the call: bind the list to a name first " \
                                 "(`items = [...]`), so the emit can loop over it"
                return None, "the entity is not a name: bind it to one first (`x = ...`)"
            element = "_entity" if many else entity
            if built:
                # An object built in the add has no name: track_added() before the add lets added() after
                # it return the very object the add attached.
                imports += [self._import("track_added"), self._import("added")]
                lead = f"{self.names['track_added']}({target}, {built})"
            if dynamic:
                imports.append(("outbox.emit", "aggregate_type_of"))
                type_code = naming.dynamic_type_code(self.settings.prefix, element, verb)
            else:
                type_code = f'"{event_type}"'
            code = f"{fn}({target}, {type_code}, {element})"
            if kind == "session-merge":
                # An upsert may change nothing (the same feed imported twice): no change, no event.
                code = f"if {target}.is_modified({element}):\n    {code}"
            if many:
                code = f"for _entity in {entity}:\n    {code}"
        header = info.get("header")
        small = info.get("small")
        before = bool(header)
        if isinstance(stmt, cst.SimpleStatementLine):
            body = list(stmt.body)
            if isinstance(small, cst.Return):
                before = True
            elif small in body:
                after = body[body.index(small) + 1 :]
                if any(_is_commit(s) for s in after):
                    before = True
            if before and built:
                return None, "the object is built on a line that also commits or returns: the emit can " \
                             "neither follow the add nor come before the object exists; split the line"
            if before and entity and not entity_less and self._binds(stmt, entity):
                return None, "the entity is bound by the very line that must be followed by a commit; split the line"
        elif header and entity and not entity_less:
            return None, "the write is in the header of a compound statement (`if`, `with`, `for`) and " \
                         "its entity may not exist before it"
        return Edit(anchor=stmt, before=before, code=code, imports=tuple(imports), lead=lead), ""

    def _binds(self, stmt: cst.SimpleStatementLine, name: str) -> bool:
        for small in stmt.body:
            if isinstance(small, cst.Assign):
                if any(isinstance(t.target, cst.Name) and t.target.value == name for t in small.targets):
                    return True
        return False


_REPEATED_REASONS = {
    "comprehension": "the write is inside a comprehension or generator: one emit after the line cannot follow "
                     "each write (write it as a for loop)",
    "conditional": "the write runs only if a condition holds (`a if c else b`, `and`, `or`): an emit after the "
                   "line would run either way (write it as an `if` statement with the emit in its branch)",
    "lambda": "the write is inside a lambda, which runs when it is called, if ever: no emit here can follow it "
              "(write a def and emit after the write in it)",
    "reference": "the session's write method is passed as a function (`map(s.delete, objs)`, a callback): it "
                 "runs wherever and however often it is called, so no emit here can follow it (write a for loop)",
}


def _annotation_name(node: cst.BaseExpression) -> str:
    """``Session``, ``orm.Session``, ``Optional[Session]``, ``Session | None`` → the dotted name of the type.

    Read the index's way (``annotation_text``), so a parameter is typed alike in
    both passes; an annotation that names no single type is ``UNREADABLE_ANNOTATION``,
    never None, because an annotated parameter is not typed by its name.
    """
    if isinstance(node, (cst.Name, cst.Attribute)) and _is_reference(node):
        return code_of(node)
    try:
        tree = ast.parse(code_of(node).strip(), mode="eval")
    except SyntaxError:
        return UNREADABLE_ANNOTATION
    return annotation_text(tree.body) or UNREADABLE_ANNOTATION


def _constant_kwargs(args: Sequence[cst.Arg]) -> dict:
    """Keyword arguments that are True/False/None or a string, and a string first argument as ``__first__``."""
    kwargs: dict = {}
    for arg in args:
        if arg.keyword is not None and isinstance(arg.value, cst.Name) and arg.value.value in _CONSTANTS:
            kwargs[arg.keyword.value] = _CONSTANTS[arg.value.value]
        elif arg.keyword is not None and isinstance(arg.value, cst.SimpleString):
            kwargs[arg.keyword.value] = literal(arg.value)
    if args and args[0].keyword is None and (text := literal(args[0].value)) is not None:
        kwargs["__first__"] = text
    return kwargs


_CONSTANTS = {"True": True, "False": False, "None": None}


def _autocommit(args: Sequence[cst.Arg]) -> bool:
    """``isolation_level="AUTOCOMMIT"`` among ``args`` (of ``create_engine`` or ``execution_options``)."""
    return any(
        a.keyword is not None and a.keyword.value == "isolation_level" and literal(a.value) == "AUTOCOMMIT"
        for a in args
    )


def _assigned_name(small: cst.CSTNode | None, call: cst.Call) -> cst.Name | None:
    """The name ``call``'s result is bound to when ``small`` is ``name = call`` (or ``name: T = call``).

    An awaited call (``m = await s.merge(o)``, an AsyncSession) binds its result the same way.
    """
    value = getattr(small, "value", None)
    if isinstance(value, cst.Await):
        value = value.expression
    if isinstance(small, cst.Assign) and value is call and len(small.targets) == 1:
        target = small.targets[0].target
    elif isinstance(small, cst.AnnAssign) and value is call:
        target = small.target
    else:
        return None
    return target if isinstance(target, cst.Name) else None


def _emit_target(code: str, session: Value) -> str:
    """What to pass emit for the session ``code``: an AsyncSession's ``sync_session``, the Session it drives."""
    return f"{code}.sync_session" if session.origin == "async" else code


def _emit_call(fn: str, target: str, args: list[str], run_sync: bool) -> str:
    """``emit(target, *args)``; for an AsyncConnection ``await target.run_sync(emit, *args)``.

    emit writes through a Connection at once, and an async driver does IO only inside
    ``run_sync``, which calls emit with the ``Connection`` it drives, in the same transaction
    (``emit(conn.sync_connection, ...)`` would pass emit's type check, then raise MissingGreenlet).
    """
    if run_sync:
        return f"await {target}.run_sync({', '.join([fn, *args])})"
    return f"{fn}({', '.join([target, *args])})"


def _is_reference(node: cst.CSTNode | None) -> bool:
    """A name or ``a.b.c``: safe to evaluate again in the emit."""
    while isinstance(node, cst.Attribute):
        node = node.value
    return isinstance(node, cst.Name)


def _is_commit(small: cst.CSTNode) -> bool:
    return any(
        isinstance(c.func, cst.Attribute) and c.func.attr.value in DBAPI_TRANSACTION_NAMES
        for c in _calls_in(small)
    )


def detect(module: cst.Module, path: str, modname: str, index: Index, settings: Settings) -> list[Finding]:
    """Return the findings of one parsed module."""
    return Detector(module, path, modname, index, settings).run()
