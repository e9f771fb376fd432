"""The event type rule: ``<prefix>.<aggregate>.<verb>``, with per-site templates from the config.

Verbs are ``created``, ``updated``, ``deleted``, and ``saved`` where the code
cannot tell a new object from a loaded one (``session.add(obj)`` of a
parameter, a ``save()`` wrapper). With ``verbs = "function"`` the verb is
taken from the enclosing function's name instead (``cancel_order`` →
``cancelled``), when that name starts with a verb that is not a plain CRUD word.
"""

from __future__ import annotations

import fnmatch

_CRUD_WORDS = {
    "get", "set", "save", "add", "create", "update", "delete", "remove", "handle", "process", "do",
    "run", "main", "index", "view", "api", "new", "edit", "post", "put", "patch", "make", "insert",
    "store", "persist", "commit", "test", "setup", "init", "on", "before", "after", "load", "bulk",
}
_IRREGULAR = {"pay": "paid", "send": "sent", "buy": "bought", "sell": "sold", "ship": "shipped",
              "refund": "refunded", "cancel": "cancelled", "log": "logged", "plan": "planned"}


def past_tense(word: str) -> str:
    """A regular English past tense, good enough for event names (``approve`` → ``approved``)."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("e"):
        return word + "d"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ied"
    return word + "ed"


def verb_for(crud_verb: str, function: str | None, mode: str) -> str:
    """The verb of an event: the CRUD verb, or in ``function`` mode the function name's verb."""
    if mode != "function" or not function:
        return crud_verb
    name = function.rsplit(".", 1)[-1].lstrip("_")
    word = name.split("_", 1)[0].lower()
    if not word.isalpha() or word in _CRUD_WORDS or len(word) < 3:
        return crud_verb
    return past_tense(word)


def event_type(prefix: str, aggregate: str, verb: str, path: str, function: str | None,
               patterns: tuple[str, ...] = ()) -> str:
    """``<prefix>.<aggregate>.<verb>``, unless a ``PATH::FUNCTION=TEMPLATE`` pattern matches the site."""
    for entry in patterns:
        where, _, template = entry.partition("=")
        path_glob, _, function_glob = where.strip().partition("::")
        if fnmatch.fnmatch(path, path_glob) and fnmatch.fnmatch(function or "", function_glob or "*"):
            return template.strip().format(prefix=prefix, aggregate=aggregate, verb=verb)
    return f"{prefix}.{aggregate}.{verb}"


def dynamic_type_code(prefix: str, entity: str, verb: str) -> str:
    """Code for an event type whose aggregate is the entity's class, known only at run time."""
    return f'f"{prefix}.{{aggregate_type_of(type({entity}))}}.{verb}"'


def dynamic_type_text(prefix: str, verb: str) -> str:
    """How a run-time event type is shown in reports."""
    return f"{prefix}.<aggregate of the entity's class>.{verb}"
