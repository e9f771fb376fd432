"""Watch rules: declared in TOML, checked on load; every error names the file, the rule and the key.

A rules file is a list of ``[[rule]]`` tables, each with a ``name``, a
``kind`` and the kind's own keys (see docs/observability.md)::

    [[rule]]
    name = "mass-deletion"
    kind = "rate"                 # more than `max` events of `type` in `window`
    type = "shop.customer.deleted"
    max = 100
    window = "1m"

Durations are seconds (a number) or text with a unit: ``"500ms"``, ``"30s"``,
``"5m"``, ``"1h"``. Paths (``keys_dir``, ``policy``) are relative to the rules
file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Mapping


class RulesError(Exception):
    """The rules file is malformed; the message names the file, the rule and the key, and what to write."""


_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclasses.dataclass(frozen=True)
class Rule:
    """Common to every rule: its name, and what to tell whoever reads its alert."""

    name: str
    look_at: str = ""

    kind = "rule"


@dataclasses.dataclass(frozen=True)
class RateRule(Rule):
    """More than ``max`` events whose type matches ``type`` within ``window`` seconds."""

    type: str = "*"
    max: int = 0
    window: float = 60.0
    kind = "rate"


@dataclasses.dataclass(frozen=True)
class BurstRule(Rule):
    """More than ``max`` events about one subject (aggregate) within ``window`` seconds."""

    type: str = "*"
    max: int = 0
    window: float = 60.0
    kind = "burst"


@dataclasses.dataclass(frozen=True)
class SourceRule(Rule):
    """Events of ``type`` come only from ``sources`` and, when the producer key is known, ``producers``."""

    type: str = "*"
    sources: tuple[str, ...] = ()
    producers: tuple[str, ...] = ()
    repeat: float = 3600.0
    kind = "source"


@dataclasses.dataclass(frozen=True)
class KeyRule(Rule):
    """Every key id an event names (recipients, and the producer when known) is on file and not retired."""

    keys_dir: str = ""
    grace: float = 300.0  # events sealed this long after a key's retirement are still in flight
    repeat: float = 3600.0
    kind = "key"


@dataclasses.dataclass(frozen=True)
class GroupRule(Rule):
    """Every consumer group reads only destinations whose types the policy gives its service."""

    policy: str = ""
    ignore: tuple[str, ...] = ()
    every: float = 30.0
    repeat: float = 3600.0
    kind = "groups"


@dataclasses.dataclass(frozen=True)
class GapRule(Rule):
    """Every event the outbox marked published is on the broker, and every event there is in the outbox."""

    grace: float = 30.0
    window: float = 600.0
    every: float = 30.0
    sources: tuple[
        str, ...
    ] = ()  # events claiming these sources must be in the outbox; empty: every event
    kind = "gap"


KINDS: dict[str, type[Rule]] = {
    cls.kind: cls for cls in (RateRule, BurstRule, SourceRule, KeyRule, GroupRule, GapRule)
}

# Per kind: key -> (parser, required). Parsers take (value, where) and return the value or raise.
_COMMON = {"name", "kind", "look_at"}


def parse_duration(value: Any, where: str) -> float:
    """Return seconds from a number or text such as ``"30s"``, ``"5m"``; raise ``RulesError`` naming ``where``."""
    if isinstance(value, bool):
        raise RulesError(
            f'{where}: expected a duration such as 60, "30s", "5m" or "1h", not {value!r}'
        )
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match[1]) * _UNITS[match[2]]
    else:
        raise RulesError(
            f'{where}: expected a duration such as 60, "30s", "5m" or "1h", not {value!r}'
        )
    if seconds <= 0:
        raise RulesError(f"{where}: a duration must be more than 0, not {value!r}")
    return seconds


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RulesError(f"{where}: expected a whole number of at least 1, not {value!r}")
    return value


def _pattern(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise RulesError(
            f'{where}: expected an event-type pattern such as "shop.order.*", not {value!r}'
        )
    return value


def _strings(value: Any, where: str, example: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RulesError(f"{where}: expected a list of strings, e.g. {example}, not {value!r}")
    return tuple(value)


def _path(value: Any, where: str, base: Path) -> str:
    if not isinstance(value, str) or not value:
        raise RulesError(f"{where}: expected a path, not {value!r}")
    path = Path(value)
    return str(path if path.is_absolute() else base / path)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RulesError(f"{where}: expected text, not {value!r}")
    return value


_SPEC: dict[str, dict[str, tuple[Any, bool]]] = {
    "rate": {
        "type": (_pattern, True),
        "max": (_positive_int, True),
        "window": (parse_duration, True),
    },
    "burst": {
        "type": (_pattern, False),
        "max": (_positive_int, True),
        "window": (parse_duration, True),
    },
    "source": {
        "type": (_pattern, True),
        "sources": (lambda v, w: _strings(v, w, '["/shop"]'), False),
        "producers": (lambda v, w: _strings(v, w, '["shop"] or ["shop-2"]'), False),
        "repeat": (parse_duration, False),
    },
    "key": {
        "keys_dir": ("path", True),
        "grace": (parse_duration, False),
        "repeat": (parse_duration, False),
    },
    "groups": {
        "policy": ("path", True),
        "ignore": (lambda v, w: _strings(v, w, '["strangler-watch*"]'), False),
        "every": (parse_duration, False),
        "repeat": (parse_duration, False),
    },
    "gap": {
        "grace": (parse_duration, False),
        "window": (parse_duration, False),
        "every": (parse_duration, False),
        "sources": (lambda v, w: _strings(v, w, '["/shop"]'), False),
    },
}


def parse_rules(
    doc: Mapping[str, Any], origin: str = "rules", base: Path | None = None
) -> list[Rule]:
    """Build the rules of a parsed TOML document; errors name ``origin``, the rule and the key."""
    base = base or Path.cwd()
    for key in doc:
        if key != "rule":
            raise RulesError(
                f"{origin}: unknown table {key!r}; a rules file holds only [[rule]] tables"
            )
    entries = doc.get("rule", [])
    if not isinstance(entries, list):
        raise RulesError(f"{origin}: 'rule' must be an array of tables: write [[rule]], not [rule]")
    if not entries:
        raise RulesError(
            f"{origin}: no rules; add a [[rule]] table with a name and a kind (see docs/observability.md)"
        )
    rules: list[Rule] = []
    names: set[str] = set()
    for number, entry in enumerate(entries, 1):
        label = f"{origin}: rule {number}"
        if not isinstance(entry, Mapping):
            raise RulesError(f"{label}: expected a table")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise RulesError(
                f"{label}: 'name' is required: 1-63 letters, digits, '.', '_' or '-', e.g. name = \"mass-deletion\""
            )
        label = f"{origin}: rule {name!r}"
        if name in names:
            raise RulesError(f"{label}: the name is used by an earlier rule; names must be unique")
        names.add(name)
        kind = entry.get("kind")
        if kind not in KINDS:
            raise RulesError(
                f"{label}: kind {kind!r} is not one of {', '.join(repr(k) for k in KINDS)}"
            )
        spec = _SPEC[kind]
        values: dict[str, Any] = {"name": name}
        for key, value in entry.items():
            if key in ("name", "kind"):
                continue
            where = f"{label}: key {key!r}"
            if key == "look_at":
                values[key] = _text(value, where)
                continue
            if key not in spec:
                known = ", ".join(sorted({*spec, *_COMMON}))
                raise RulesError(
                    f"{label}: unknown key {key!r} for kind {kind!r}; known keys: {known}"
                )
            parser = spec[key][0]
            values[key] = _path(value, where, base) if parser == "path" else parser(value, where)
        for key, (_, required) in spec.items():
            if required and key not in values:
                raise RulesError(f"{label}: key {key!r} is required for kind {kind!r}")
        if kind == "source" and not (values.get("sources") or values.get("producers")):
            raise RulesError(
                f"{label}: kind 'source' needs 'sources' (e.g. [\"/shop\"]), 'producers', or both"
            )
        rules.append(KINDS[kind](**values))
    return rules


def load_rules(path: str | os.PathLike[str]) -> list[Rule]:
    """Read and check the rules file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError(
            f"{path}: no such rules file; see docs/observability.md for an example"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: cannot read: {exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{path}: not valid TOML: {exc}") from None
    return parse_rules(doc, str(path), path.parent)
