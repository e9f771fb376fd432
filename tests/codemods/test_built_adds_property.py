"""Objects built in the add, wherever they stand: the rewrite only inserts lines, and each one it rewrites is tracked.

The statements are the forms ``session.add(Model(...))`` takes in legacy code
(one line or several, through a module attribute, with comments, beside a
commit, inside comprehensions and one-line blocks), nested in branches, loops,
``with`` and ``try``. Whatever the mix, the rewritten module parses, differs
from the original only by inserted lines (and the outbox import), and every
rewritten site reads ``track_added`` / the add / ``emit(..., added(...))``
in that order, with the add's own lines untouched in between.
"""

from __future__ import annotations

import ast
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..faults.test_codemods_property import only_inserted_lines
from .helpers import rewrite_code

BUILT = [
    "db.session.add(User(name=name))",
    "db.session.add(User(name=name))  # a note",
    "db.session.add(models.Order(status='new'))",
    "db.session.add(\n    User(\n        name=name,\n    )\n)",
    "db.session.add(User(name=name, orders=[Order(status='new')]))",
]
OTHER = [
    "db.session.add(User(name=name)); db.session.commit()",
    "[db.session.add(User(name=n)) for n in names]",
    "if name: db.session.add(User(name=name))",
    "db.session.commit()",
    "# a comment line\nx = 1",
]
HEADERS = ["if name:", "for n in names:", "with lock:", "try:"]


@st.composite
def blocks(draw, depth: int = 0) -> list[str]:
    lines: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        if depth < 2 and draw(st.integers(0, 3)) == 0:
            header = draw(st.sampled_from(HEADERS))
            lines.append(header)
            lines.extend("    " + line for line in draw(blocks(depth + 1)))
            if header == "try:":
                lines += ["except Exception:", "    db.session.rollback()"]
        else:
            lines.extend(draw(st.sampled_from(BUILT + OTHER)).splitlines())
    return lines


@st.composite
def modules(draw) -> str:
    body = draw(blocks())
    return "\n".join(["from . import models", "from .models import db, Order, User", "", "",
                      "def handler(name, names, lock):", *("    " + line for line in body)]) + "\n"


@settings(max_examples=int(os.environ.get("STRANGLER_PROPERTY_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(source=modules())
def test_built_adds_are_rewritten_by_inserting_lines_only(source):
    (result, again), after = rewrite_code(source, runs=2)

    assert result.status == "ok", result.reason
    assert not again.changed, "a second rewrite changed the file"
    ast.parse(after)
    assert only_inserted_lines(source, after) == []
    rewritten = [s for s in result.sites if s.action == "rewrite"]
    assert all(s.code.startswith("db.session.add(") for s in rewritten)
    lines = after.splitlines()
    tracked = [i for i, line in enumerate(lines) if "track_added(" in line and not line.startswith("from")]
    assert len(tracked) == len(rewritten)
    for i in tracked:
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        end = i + 1
        while not lines[end].startswith(indent + "emit("):
            end += 1
        add = "\n".join(line[len(indent):] for line in lines[i + 1 : end])
        assert add.split("  #")[0] in BUILT or add in BUILT, add
        cls = "models.Order" if "models.Order" in add else "User"
        assert lines[i].strip() == f"track_added(db.session, {cls})"
        assert lines[end].strip().endswith(f"added(db.session, {cls}))")
    reasons = ("one-line block", "inside a comprehension", "built on a line that also commits")
    assert all(any(r in s.reason for r in reasons) for s in result.sites if s.action == "decide")
