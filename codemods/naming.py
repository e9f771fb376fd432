"""The event type rule: ``<prefix>.<aggregate>.<verb>``, with per-site templates from the config.

Verbs are ``created``, ``updated``, ``deleted``, and ``saved`` where the code
cannot tell a new object from a loaded one (``session.add(obj)`` of a
parameter, a ``save()`` wrapper). With ``verbs = "function"`` the verb is
taken from the enclosing function's name instead (``cancel_order`` →
``cancelled``), when that name starts with a verb that is not a plain CRUD word.
"""

from __future__ import annotations

import fnmatch
import string

PLACEHOLDERS = ("prefix", "aggregate", "verb")

_CRUD_WORDS = {
    "get", "set", "save", "add", "create", "update", "delete", "remove", "handle", "process", "do",
    "run", "main", "index", "view", "api", "new", "edit", "post", "put", "patch", "make", "insert",
    "store", "persist", "commit", "test", "setup", "init", "on", "before", "after", "load", "bulk",
}
# Event types are a contract: a verb's form must not change once consumers route on it. The past
# participle, as an event says what the aggregate was (`order.frozen`, `order.submitted`).
_IRREGULAR = {
    "pay": "paid", "send": "sent", "buy": "bought", "sell": "sold", "cancel": "cancelled",
    "reset": "reset", "set": "set", "put": "put", "cut": "cut", "shut": "shut", "quit": "quit",
    "hit": "hit", "let": "let", "upset": "upset", "run": "run", "rerun": "rerun", "begin": "begun",
    "write": "written", "rewrite": "rewritten", "give": "given", "take": "taken", "hold": "held",
    "lose": "lost", "find": "found", "build": "built", "rebuild": "rebuilt", "spend": "spent",
    "lend": "lent", "bind": "bound", "unbind": "unbound", "freeze": "frozen", "unfreeze": "unfrozen",
    "choose": "chosen", "win": "won", "leave": "left", "keep": "kept", "bring": "brought",
    "seek": "sought", "teach": "taught", "catch": "caught", "forget": "forgotten", "withdraw": "withdrawn",
    "draw": "drawn", "undo": "undone", "redo": "redone",
}
# Verbs of more than one syllable stressed on the last one double their final consonant.
_STRESSED_LAST = {
    "submit", "resubmit", "refer", "commit", "admit", "permit", "omit", "emit", "transmit", "remit",
    "transfer", "prefer", "occur", "recur", "incur", "defer", "confer", "deter", "control", "patrol",
    "compel", "expel", "propel", "regret", "rebut", "equip", "acquit", "allot", "unplug", "unpin",
    "unwrap", "unzip", "unship", "rearm", "outbid", "forbid", "overrun",
}
_VOWELS = "aeiou"


def _syllables(word: str) -> int:
    groups, previous = 0, False
    for char in word:
        vowel = char in _VOWELS
        groups += vowel and not previous
        previous = vowel
    return groups


def past_tense(word: str) -> str:
    """The past participle of a verb, for event names (``approve`` → ``approved``, ``stop`` → ``stopped``)."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("e"):
        return word + "d"
    if word.endswith("y") and len(word) > 1 and word[-2] not in _VOWELS:
        return word[:-1] + "ied"
    cvc = (len(word) >= 3 and word[-1] not in _VOWELS + "wxy" and word[-2] in _VOWELS
           and word[-3] not in _VOWELS)
    if word in _STRESSED_LAST or (cvc and _syllables(word) == 1):
        return word + word[-1] + "ed"  # stop → stopped, submit → submitted
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


def template_problem(entry: str) -> str | None:
    """Why a ``PATH::FUNCTION=TEMPLATE`` entry cannot name events, or None when it can."""
    where, equals, template = entry.partition("=")
    if not equals or not template.strip():
        return "expected PATH_GLOB::FUNCTION_GLOB=TEMPLATE"
    known = ", ".join("{%s}" % name for name in PLACEHOLDERS)
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template.strip()) if field is not None]
    except ValueError as exc:  # a lone "{" or "}"
        return f"{exc} (write a literal brace as {{{{ or }}}}; placeholders: {known})"
    for field in fields:
        if field not in PLACEHOLDERS:
            return f"unknown placeholder {{{field}}}; known: {known}"
    return None


def dynamic_type_code(prefix: str, entity: str, verb: str) -> str:
    """Code for an event type whose aggregate is the entity's class, known only at run time."""
    return f'f"{prefix}.{{aggregate_type_of(type({entity}))}}.{verb}"'


def dynamic_type_text(prefix: str, verb: str) -> str:
    """How a run-time event type is shown in reports."""
    return f"{prefix}.<aggregate of the entity's class>.{verb}"
