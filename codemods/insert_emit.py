"""Insert ``emit`` next to each state change, and wire the outbox table into the app's metadata.

DESCRIPTION: add ``emit(session, "<prefix>.<aggregate>.<verb>", entity)`` after each site found
by ``detect``, inside the same transaction, and ``from outbox import emit`` once.

Only new lines are added: every other byte of the module (comments, blank
lines, formatting) comes back unchanged, because untouched nodes are reused.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import libcst as cst
from libcst.codemod import CodemodContext
from libcst.codemod.visitors import AddImportsVisitor

from .detect import Edit
from .index import Index

DESCRIPTION = "Insert emit() after each state change, in its transaction, and import it once."


@dataclasses.dataclass(frozen=True)
class TableHook:
    """``create_with(<target>.metadata)`` after the statement that creates the app's metadata."""

    anchor: cst.CSTNode
    target: str
    table: str | None


class _Inserter(cst.CSTTransformer):
    def __init__(self, edits: Sequence[Edit], hooks: Sequence[TableHook]):
        self.before: dict[int, list[cst.BaseStatement]] = {}
        self.after: dict[int, list[cst.BaseStatement]] = {}
        for edit in edits:
            if edit.lead:
                self.before.setdefault(id(edit.anchor), []).append(cst.parse_statement(edit.lead))
            slot = self.before if edit.before else self.after
            slot.setdefault(id(edit.anchor), []).append(cst.parse_statement(edit.code))
        for hook in hooks:
            args = f"{hook.target}.metadata" + (f', "{hook.table}"' if hook.table else "")
            self.after.setdefault(id(hook.anchor), []).append(cst.parse_statement(f"create_with({args})"))

    def _expand(self, original: Sequence[cst.CSTNode], updated: Sequence[cst.CSTNode]) -> list:
        out: list = []
        for old, new in zip(original, updated):
            before = self.before.get(id(old), [])
            if before:
                # The anchor's own comments and blank lines stay above the whole group.
                first = before[0].with_changes(leading_lines=new.leading_lines)
                out.extend([first, *before[1:]])
                new = new.with_changes(leading_lines=())
            out.append(new)
            out.extend(self.after.get(id(old), []))
        return out

    def leave_IndentedBlock(self, original: cst.IndentedBlock, updated: cst.IndentedBlock) -> cst.IndentedBlock:
        return updated.with_changes(body=self._expand(original.body, updated.body))

    def leave_Module(self, original: cst.Module, updated: cst.Module) -> cst.Module:
        return updated.with_changes(body=self._expand(original.body, updated.body))


def table_hooks(module: cst.Module, modname: str, index: Index, table: str | None) -> list[TableHook]:
    """Where this module creates the app's MetaData (``SQLAlchemy()``, a declarative base), unless wired.

    ``create_with`` rather than ``attach_to``: ``create_all()`` makes the outbox too, while the
    app's MetaData (and so its migration checks and autogenerate) stays its own.
    """
    if "create_with(" in module.code or "attach_to(" in module.code:
        return []
    hooks = []
    for stmt in module.body:
        if isinstance(stmt, cst.SimpleStatementLine):
            small = stmt.body[0]
            if isinstance(small, cst.Assign) and len(small.targets) == 1 and isinstance(small.targets[0].target, cst.Name):
                name = small.targets[0].target.value
                value = index.global_value(modname, name)
                if value is not None and value.kind in ("fsa", "base") and isinstance(small.value, cst.Call):
                    hooks.append(TableHook(anchor=stmt, target=name, table=table))
        elif isinstance(stmt, cst.ClassDef) and index.is_declarative_base(f"{modname}.{stmt.name.value}"):
            hooks.append(TableHook(anchor=stmt, target=stmt.name.value, table=table))
    return hooks


def apply(module: cst.Module, edits: Sequence[Edit], hooks: Sequence[TableHook] = ()) -> cst.Module:
    """Return ``module`` with the edits inserted and the needed imports added (once)."""
    if not edits and not hooks:
        return module
    changed = module.visit(_Inserter(edits, hooks))
    context = CodemodContext()
    seen = set()
    for edit in edits:
        for origin, name in edit.imports:
            if (origin, name) in seen:
                continue
            seen.add((origin, name))
            obj, _, alias = name.partition(" as ")
            AddImportsVisitor.add_needed_import(context, origin, obj, asname=alias or None)
    if hooks:
        AddImportsVisitor.add_needed_import(context, "outbox.table", "create_with")
    return AddImportsVisitor(context).transform_module(changed)

