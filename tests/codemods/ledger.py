"""The ledger's rule: in one transaction, each state change pairs with exactly one outbox row.

Pure functions over the ledger ``ledger_plugin`` records (docs/codemods.md,
*One change, one event*), and the reading of outbox rows from SQL that SQLite's
trace shows with its values inlined.
"""

from __future__ import annotations

from typing import Any

from codemods import sql

#: The verbs an event may carry for each change; a domain verb (``cancelled``) fits any change.
ACCEPTS = {"INSERT": {"created", "saved"}, "UPDATE": {"updated", "saved"}, "DELETE": {"deleted"}}
CRUD_VERBS = {"created", "updated", "deleted", "saved"}


def fits(change: dict, event_row: list) -> bool:
    """True when ``event_row`` ([type, aggregatetype, aggregateid, id]) can be the event of ``change``."""
    type_, aggregatetype, aggregateid = event_row[:3]
    verb = type_.rsplit(".", 1)[-1]
    if aggregatetype != change["aggregate"]:
        return False
    if verb in CRUD_VERBS and verb not in ACCEPTS[change["change"]]:
        return False
    return change["key"] is None or aggregateid == change["key"]


def unmatched(transaction: dict) -> list[str]:
    """What keeps the transaction's changes and events from pairing one to one; empty when they do.

    A maximum bipartite matching (augmenting paths), so the pairing found is
    never worse than the best one: what is left over is a write with no event,
    an event with no write, or a second event for a change that has one.
    """
    changes, events = transaction["changes"], transaction["events"]
    change_of: dict[int, int] = {}  # event index -> change index

    def augment(c: int, tried: set[int]) -> bool:
        for e, row in enumerate(events):
            if e in tried or not fits(changes[c], row):
                continue
            tried.add(e)
            if e not in change_of or augment(change_of[e], tried):
                change_of[e] = c
                return True
        return False

    for c in range(len(changes)):
        augment(c, set())
    paired = set(change_of.values())
    problems = [f"a write with no event: {_describe(change)}" for c, change in enumerate(changes) if c not in paired]
    for e, row in enumerate(events):
        if e in change_of:
            continue
        twins = [changes[c] for c in paired if fits(changes[c], row)]
        if twins:
            problems.append(f"two events for one change: {row[:3]} besides the one of {_describe(twins[0])}")
        else:
            problems.append(f"an event with no write: {row[:3]}")
    return problems


def _describe(change: dict) -> str:
    key = f" {change['key']}" if change["key"] is not None else ""
    return f"{change['change']} of {change['aggregate']}{key} ({change['what']})"



def inserted_values(statement: str) -> list[dict]:
    """The rows of an ``INSERT INTO t (columns) VALUES (...), ...`` with its values inlined (strings and NULL)."""
    tokens = sql.tokenize(statement)
    at = next(i for i, t in enumerate(tokens) if t.kind == "word" and t.text.upper() == "VALUES")
    opening = next(i for i, t in enumerate(tokens) if t.text == "(")
    columns = [t.text for t in tokens[opening + 1 : at] if t.kind in ("word", "ident")]
    rows, row, value, depth = [], [], [], 0
    for token in tokens[at + 1 :]:
        if token.kind == "punct" and token.text == "(":
            depth += 1
            if depth == 1:
                row, value = [], []
                continue
        elif token.kind == "punct" and token.text == ")":
            depth -= 1
            if depth == 0:
                row.append(value)
                rows.append(dict(zip(columns, [literal_value(v) for v in row])))
                continue
        elif token.kind == "punct" and token.text == "," and depth == 1:
            row.append(value)
            value = []
            continue
        if depth >= 1:
            value.append(token)
    return rows


def literal_value(tokens: list) -> Any:
    if len(tokens) == 1 and tokens[0].kind == "string":
        return tokens[0].text.replace("''", "'")
    if len(tokens) == 1 and tokens[0].kind == "word" and tokens[0].text.upper() == "NULL":
        return None
    return "".join(t.text for t in tokens)
