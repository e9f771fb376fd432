"""Classify a SQL string as INSERT, UPDATE or DELETE of a table, by tokens, not by pattern.

Only as much SQL as a codemod needs: the statement's verb and target table, and
the column list of an INSERT. Comments, string literals and quoted identifiers
are tokenized properly, so ``SELECT 'DELETE FROM x'`` is a read, not a delete.
"""

from __future__ import annotations

import dataclasses

VERBS = {"INSERT": "created", "REPLACE": "created", "UPDATE": "updated", "DELETE": "deleted", "MERGE": "updated"}


@dataclasses.dataclass(frozen=True)
class Dml:
    """A data-changing statement: its keyword, event verb, table and (INSERT) columns."""

    keyword: str
    verb: str
    table: str
    columns: tuple[str, ...] = ()
    #: ``WHERE col = <param>`` at the top level of the WHERE clause: (column, parameter, its ordinal).
    where_equals: tuple[tuple[str, str, int], ...] = ()
    #: Every parameter token in order (``?``, ``%s``, ``:name``, ``%(name)s``).
    params: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Token:
    kind: str  # "word", "ident" (quoted identifier), "string", "punct", "param"
    text: str


def tokenize(sql: str) -> list[_Token]:
    """Split ``sql`` into words, quoted identifiers, strings, parameters and punctuation; drop comments."""
    tokens: list[_Token] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("--", i) or c == "#":
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c in "'":
            j = i + 1
            while j < n:
                if sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # doubled quote
                        j += 2
                        continue
                    break
                j += 1
            tokens.append(_Token("string", sql[i + 1 : j]))
            i = j + 1
        elif c in '"`[':
            close = {"[": "]"}.get(c, c)
            j = sql.find(close, i + 1)
            j = n if j < 0 else j
            tokens.append(_Token("ident", sql[i + 1 : j]))
            i = j + 1
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] in "_$"):
                j += 1
            tokens.append(_Token("word", sql[i:j]))
            i = j
        elif c == "?" or (c == ":" and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_")):
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] == "_"):
                j += 1
            tokens.append(_Token("param", sql[i:j]))
            i = j
        elif c == "%" and i + 1 < n and sql[i + 1] in "s(":
            j = sql.find("s", i + 1) + 1 if sql[i + 1] == "(" else i + 2
            tokens.append(_Token("param", sql[i:j]))
            i = j
        else:
            tokens.append(_Token("punct", c))
            i += 1
    return tokens


def _is(token: _Token | None, *words: str) -> bool:
    return token is not None and token.kind == "word" and token.text.upper() in words


def _name_at(tokens: list[_Token], i: int) -> tuple[str | None, int]:
    """Read a possibly schema-qualified name at ``i``; return its last part and the next index."""
    name = None
    while i < len(tokens) and tokens[i].kind in ("word", "ident"):
        name = tokens[i].text
        if i + 1 < len(tokens) and tokens[i + 1].text == ".":
            i += 2
            continue
        i += 1
        break
    return name, i


def _skip_parens(tokens: list[_Token], i: int) -> int:
    depth = 0
    while i < len(tokens):
        if tokens[i].text == "(" and tokens[i].kind == "punct":
            depth += 1
        elif tokens[i].text == ")" and tokens[i].kind == "punct":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def classify(sql: str) -> Dml | None:
    """Return the DML ``sql`` performs, or None for reads, DDL and anything not understood."""
    return _classify(tokenize(sql))


def classify_script(script: str) -> list[Dml]:
    """The DML statements of a ``;``-separated script (sqlite3's ``executescript``), in order."""
    statements: list[list[_Token]] = [[]]
    for token in tokenize(script):
        if token.kind == "punct" and token.text == ";":
            statements.append([])
        else:
            statements[-1].append(token)
    return [dml for dml in map(_classify, statements) if dml is not None]


def _classify(tokens: list[_Token]) -> Dml | None:
    i = 0
    if _is(tokens[0] if tokens else None, "WITH"):  # common table expressions before the verb
        i = 1
        while i < len(tokens) and not _is(tokens[i], "INSERT", "UPDATE", "DELETE", "SELECT", "MERGE"):
            i = _skip_parens(tokens, i) if tokens[i].text == "(" else i + 1
    if i >= len(tokens) or tokens[i].kind != "word":
        return None
    keyword = tokens[i].text.upper()
    if keyword not in VERBS:
        return None
    i += 1
    if keyword in ("INSERT", "UPDATE", "REPLACE") and _is(tokens[i] if i < len(tokens) else None, "OR"):
        i += 2  # INSERT OR REPLACE / UPDATE OR IGNORE (SQLite)
    while i < len(tokens) and _is(tokens[i], "LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "ONLY"):
        i += 1
    if keyword in ("INSERT", "REPLACE", "MERGE"):
        if not _is(tokens[i] if i < len(tokens) else None, "INTO"):
            if keyword != "REPLACE":
                return None
        else:
            i += 1
    elif keyword == "DELETE":
        if not _is(tokens[i] if i < len(tokens) else None, "FROM"):
            return None
        i += 1
    table, i = _name_at(tokens, i)
    if not table:
        return None
    columns: tuple[str, ...] = ()
    if keyword in ("INSERT", "REPLACE") and i < len(tokens) and tokens[i].text == "(":
        end = _skip_parens(tokens, i)
        columns = tuple(t.text for t in tokens[i + 1 : end - 1] if t.kind in ("word", "ident"))
    if keyword == "UPDATE" and not any(_is(t, "SET") for t in tokens[i:]):
        return None
    return Dml(keyword=keyword, verb=VERBS[keyword], table=table, columns=columns,
               where_equals=_where_equals(tokens), params=tuple(t.text for t in tokens if t.kind == "param"))


def _where_equals(tokens: list[_Token]) -> tuple[tuple[str, str, int], ...]:
    """``col = param`` comparisons joined by AND right under WHERE (not inside parentheses)."""
    start = next((i for i, t in enumerate(tokens) if _is(t, "WHERE")), None)
    if start is None:
        return ()
    pairs = []
    depth = 0
    i = start + 1
    while i < len(tokens):
        token = tokens[i]
        if token.text == "(" and token.kind == "punct":
            depth += 1
        elif token.text == ")" and token.kind == "punct":
            depth -= 1
        elif depth == 0 and _is(token, "OR", "RETURNING", "ORDER", "LIMIT"):
            return ()  # an OR makes no single row certain
        elif (depth == 0 and token.kind in ("word", "ident") and i + 2 < len(tokens)
              and tokens[i + 1].text == "=" and tokens[i + 2].kind == "param"):
            ordinal = sum(1 for t in tokens[: i + 2] if t.kind == "param")
            pairs.append((token.text, tokens[i + 2].text, ordinal))
            i += 3
            continue
        i += 1
    return tuple(pairs)
