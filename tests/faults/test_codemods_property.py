"""The rewrite on generated and mutated sources: parseable output that only inserts lines, or the file untouched.

Sources are built from the statements that change state in a SQLAlchemy
monolith (session add/delete/merge, attribute writes, bulk updates, commits),
nested in functions, methods, branches, loops and with-blocks, and then
mutated (lines dropped, duplicated, re-indented, cut short, junk inserted).
Whatever comes in, ``rewrite`` either writes code that parses and differs from
the original only by inserted lines (plus the ``from outbox import emit``
import), or leaves the file exactly as it was and says why.
"""

from __future__ import annotations

import ast
import difflib
import textwrap

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ..codemods.helpers import rewrite_code

STATEMENTS = [
    "user = User(name=name)",
    "db.session.add(user)",
    "db.session.add_all([User(name=n) for n in names])",
    "db.session.delete(user)",
    "user = db.session.merge(user)",
    "user.name = name",
    "order.status = 'paid'",
    "setattr(user, 'name', name)",
    "User.query.filter_by(id=uid).update({'name': name})",
    "db.session.execute(db.update(User).where(User.id == uid).values(name=name))",
    "db.session.commit()",
    "db.session.flush()",
    "user.save()",
    "order = db.session.get(Order, oid)",
    "user = User.query.get(uid)",
    "db.session.rollback()",
    "print(user)",
    "x = 1",
    "return user",
    "pass",
]

HEADERS = ["if name:", "for n in names:", "while x:", "with lock:", "try:", "if a: pass\nelse:"]


@st.composite
def blocks(draw, depth: int = 0) -> list[str]:
    lines: list[str] = []
    for _ in range(draw(st.integers(1, 5))):
        if depth < 2 and draw(st.integers(0, 4)) == 0:
            header = draw(st.sampled_from(HEADERS))
            body = draw(blocks(depth + 1))
            lines.extend(header.splitlines())
            lines.extend("    " + line for line in body)
            if header == "try:":
                lines.extend(["except Exception:", "    db.session.rollback()"])
        else:
            lines.append(draw(st.sampled_from(STATEMENTS)))
    return lines


@st.composite
def modules(draw) -> str:
    out = ["from .models import db, User, Order", ""]
    for index in range(draw(st.integers(1, 3))):
        body = draw(blocks())
        if draw(st.booleans()):
            out += ["", f"class Service{index}:", f"    def run{index}(self, name, names, uid, oid, user, order, x, a, lock):"]
            out += ["        " + line for line in body]
        else:
            out += ["", f"def handler{index}(name, names, uid, oid, user, order, x, a, lock):"]
            out += ["    " + line for line in body]
    return "\n".join(out) + "\n"


@st.composite
def mutated(draw) -> str:
    lines = draw(modules()).splitlines()
    for _ in range(draw(st.integers(0, 3))):
        if not lines:
            break
        at = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["drop", "dup", "indent", "dedent", "cut", "junk", "tab", "semicolon"]))
        line = lines[at]
        if kind == "drop":
            del lines[at]
        elif kind == "dup":
            lines.insert(at, line)
        elif kind == "indent":
            lines[at] = "    " + line
        elif kind == "dedent":
            lines[at] = line[4:] if line.startswith("    ") else line
        elif kind == "cut":
            lines[at] = line[: draw(st.integers(0, max(0, len(line) - 1)))]
        elif kind == "junk":
            lines.insert(at, draw(st.text(alphabet="()[]{}:=.,'\"#\\ abc\t", max_size=12)))
        elif kind == "tab":
            lines[at] = line.replace("    ", "\t", 1)
        else:
            lines[at] = line + "; db.session.add(user)"
    return "\n".join(lines) + "\n"


def only_inserted_lines(before: str, after: str) -> list[str]:
    """Return the changes that are not insertions (or an outbox import line); empty when all are."""
    a, b = before.splitlines(), after.splitlines()
    problems = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op in ("equal", "insert"):
            continue
        removed = [line for line in a[i1:i2] if not line.startswith("from outbox import")]
        if removed:
            problems.append(f"{op}: {a[i1:i2]!r} -> {b[j1:j2]!r}")
    return problems


@settings(max_examples=int(__import__("os").environ.get("STRANGLER_PROPERTY_EXAMPLES", "80")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(source=st.one_of(modules(), mutated()))
def test_rewrite_inserts_lines_into_code_that_parses_or_leaves_the_file_alone(source):
    (result,), after = rewrite_code(source)
    event(f"{result.status}, {'changed' if result.changed else 'unchanged'}")

    if result.status == "skipped":
        assert result.reason, "a skipped file says why"
        assert after == source
        return
    assert result.status == "ok"
    if not result.changed:
        assert after == source
        return
    try:
        ast.parse(source)
    except SyntaxError:
        raise AssertionError("a file that does not parse was rewritten") from None
    ast.parse(after)  # the rewrite parses
    assert only_inserted_lines(source, after) == [], textwrap.indent(after, "  ")
    assert "from outbox import" in after
