"""The access policy: which services read which event types, what may travel in plaintext, whom consumers trust.

A TOML file (``strangler-policy.toml`` by default)::

    # Event-type patterns (fnmatch) -> services allowed to read them.
    # Every matching pattern adds its readers.
    [readers]
    "shop.order.*" = ["billing", "shipping"]
    "shop.customer.registered" = ["crm"]

    # Types that may be published unencrypted. Only for types no [readers]
    # pattern matches: a type with readers is always encrypted.
    [plaintext]
    types = ["shop.heartbeat"]

    # Producer keys each consumer trusts: a producer name (any of its key
    # versions, e.g. "shop" for shop-1, shop-2) or one exact kid ("shop-2").
    [trust]
    billing = ["shop"]
    crm = ["shop-2"]

    # Optional: the CloudEvent sources (fnmatch) each producer may sign for.
    # With this table a consumer refuses an event whose signer is not listed,
    # or whose source is not one of its signer's: one trusted producer cannot
    # pass its events off as another's.
    [sources]
    shop = ["/shop"]
    warehouse = ["/warehouse", "/warehouse/*"]

A type no ``[readers]`` pattern and no ``[plaintext]`` entry matches is refused
at emit: a new event type is private until someone says who may read it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import tomllib
from pathlib import Path
from typing import Any, Mapping

from .keys import KeyFileError, check_name, parse_kid

_SECTIONS = ("readers", "plaintext", "trust", "sources")


class PolicyError(Exception):
    """The policy file is malformed, or an event type has no policy; the message says what to write."""


@dataclasses.dataclass
class Policy:
    """Who may read what, in which form, trusting whom."""

    readers: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    plaintext: list[str] = dataclasses.field(default_factory=list)
    trust: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: Producer name -> the source patterns it may sign for; empty: any source (no [sources] table).
    sources: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    origin: str = "policy"
    _cache: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def readers_for(self, event_type: str) -> tuple[str, ...]:
        """Return the services that may read ``event_type``, sorted; empty if none."""
        cached = self._cache.get(event_type)
        if cached is None:
            found: set[str] = set()
            for pattern, services in self.readers.items():
                if fnmatch.fnmatchcase(event_type, pattern):
                    found.update(services)
            cached = self._cache[event_type] = tuple(sorted(found))
        return cached

    def reader_services(self) -> dict[str, list[str]]:
        """Each service the policy names as a reader, with the ``[readers]`` patterns that name it."""
        out: dict[str, list[str]] = {}
        for pattern, services in self.readers.items():
            for service in services:
                out.setdefault(service, []).append(pattern)
        return out

    def plaintext_allowed(self, event_type: str) -> bool:
        """True when ``event_type`` has no readers and the policy lets it travel unencrypted."""
        if self.readers_for(event_type):
            return False
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.plaintext)

    def check_type(self, event_type: str) -> None:
        """Raise ``PolicyError`` unless ``event_type`` has readers or a plaintext allowance."""
        if self.readers_for(event_type) or self.plaintext_allowed(event_type):
            return
        raise PolicyError(
            f"event type {event_type!r} has no entry in {self.origin}: add a pattern for it under "
            f'[readers] (e.g. "{event_type}" = ["billing"]), or list it in [plaintext] types to '
            "publish it unencrypted"
        )

    def trusts(self, service: str, producer_kid: str) -> bool:
        """True when ``service`` accepts events signed by ``producer_kid``."""
        try:
            name, _ = parse_kid(producer_kid)
        except KeyFileError:
            return False
        entries = self.trust.get(service, ())
        return producer_kid in entries or name in entries

    def source_refused(self, producer_kid: str, source: str) -> str | None:
        """Why a producer may not sign for ``source`` under ``[sources]``; None when it may (or there is no table)."""
        if not self.sources:
            return None
        try:
            name, _ = parse_kid(producer_kid)
        except KeyFileError:
            return f"{producer_kid!r} is not a producer kid"
        patterns = self.sources.get(name)
        if patterns is None:
            return f"[sources] in {self.origin} names no source for producer {name!r}"
        if not any(fnmatch.fnmatchcase(source, pattern) for pattern in patterns):
            return f"[sources] in {self.origin} lets producer {name!r} sign for {', '.join(patterns)}, not {source!r}"
        return None

    def trusted_by(self, service: str) -> list[str]:
        """Return the producer names and kids ``service`` trusts."""
        return list(self.trust.get(service, ()))


def parse_policy(doc: Mapping[str, Any], origin: str = "policy") -> Policy:
    """Build a ``Policy`` from a parsed TOML document; errors name ``origin`` and the key."""
    for key in doc:
        if key not in _SECTIONS:
            raise PolicyError(f"{origin}: unknown table [{key}]; known: {', '.join('[' + s + ']' for s in _SECTIONS)}")
    readers: dict[str, list[str]] = {}
    for pattern, services in _table(doc, "readers", origin).items():
        readers[pattern] = _names(services, f"[readers] {pattern!r}", origin, example='["billing"]')
    plaintext_table = _table(doc, "plaintext", origin)
    for key in plaintext_table:
        if key != "types":
            raise PolicyError(f"{origin}: unknown key [plaintext] {key!r}; the only key is 'types'")
    plaintext = plaintext_table.get("types", [])
    if not isinstance(plaintext, list) or not all(isinstance(p, str) and p for p in plaintext):
        raise PolicyError(f'{origin}: [plaintext] types must be a list of event-type patterns, e.g. ["shop.heartbeat"]')
    trust: dict[str, list[str]] = {}
    for service, producers in _table(doc, "trust", origin).items():
        _name(service, f"[trust] key {service!r}", origin)
        trust[service] = _names(producers, f"[trust] {service!r}", origin, example='["shop"] or ["shop-2"]')
    sources: dict[str, list[str]] = {}
    for producer, patterns in _table(doc, "sources", origin).items():
        _name(producer, f"[sources] key {producer!r}", origin)
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
            raise PolicyError(f'{origin}: [sources] {producer!r} must be a list of source patterns, e.g. ["/shop"]')
        sources[producer] = list(patterns)
    return Policy(readers=readers, plaintext=list(plaintext), trust=trust, sources=sources, origin=origin)


def _table(doc: Mapping[str, Any], name: str, origin: str) -> Mapping[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, Mapping):
        raise PolicyError(f"{origin}: {name} must be a table ([{name}])")
    return value


def _name(value: Any, where: str, origin: str) -> str:
    try:
        return check_name(value if isinstance(value, str) else "")
    except KeyFileError:
        raise PolicyError(
            f"{origin}: {where}: {value!r} is not a service name (letters, digits, '.', '_', '-')"
        ) from None


def _names(value: Any, where: str, origin: str, *, example: str) -> list[str]:
    if not isinstance(value, list):
        raise PolicyError(f"{origin}: {where} must be a list of names, e.g. {example}")
    return [_name(v, where, origin) for v in value]


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and check the policy file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(
            f"{path}: no such policy file; write one (see docs/security.md) or set crypto.policy"
        ) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from None
    return parse_policy(doc, str(path))
