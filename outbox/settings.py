"""Process-wide outbox settings: the producer's identity and how payloads are sealed.

A monolith reads the configuration the ``strangler`` command reads
(``strangler.toml`` or ``[tool.strangler]`` from the working folder upwards,
then the ``STRANGLER_*`` variables): ``source``, ``outbox_table`` and
``[crypto]``. ``outbox.configure(...)`` in code overrides it. One file for both
matters: a monolith that read only its environment wrote plaintext events
while the project's ``strangler.toml`` said they were encrypted.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Protocol

from .table import DEFAULT_TABLE_NAME

_SOURCE = re.compile(r"^\S+$")


class PayloadSealer(Protocol):
    """Turns an event's plaintext into what the outbox row stores (e.g. a JWE)."""

    def check_type(self, event_type: str) -> None:
        """Raise if events of ``event_type`` may not be emitted (no policy entry)."""

    def seal(self, attributes: dict[str, str], plaintext: bytes) -> tuple[str, bytes]:
        """Return ``(content_type, payload)`` for one event; ``attributes`` are its CloudEvent context."""


@dataclasses.dataclass
class OutboxSettings:
    """What ``emit`` needs to know: who produces, which table, how to seal payloads."""

    source: str = "/monolith"
    table_name: str = DEFAULT_TABLE_NAME
    sealer: PayloadSealer | None = None

    def __post_init__(self):
        if not self.source or not _SOURCE.match(self.source):
            raise ValueError(f"source {self.source!r} must be a non-empty URI-reference, e.g. '/shop'")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,50}$", self.table_name):
            raise ValueError(
                f"outbox table name {self.table_name!r} must be a plain SQL identifier "
                "(letters, digits, underscore; at most 51 characters)"
            )


def _from_configuration() -> OutboxSettings:
    """Settings from the ``strangler`` command's configuration (file, then environment).

    A bad file or variable raises ``toolkit.config.ConfigError`` here, at the
    first emit, with the message the command would print: failing loudly
    beats writing events the configuration says must not be written.
    """
    from toolkit.config import load_config  # the standard library only: no CLI dependency

    config = load_config()
    return OutboxSettings(
        source=config.source, table_name=config.outbox_table, sealer=_sealer_for(config)
    )


def _sealer_for(config) -> PayloadSealer | None:
    """The sealer ``crypto.encrypt_at`` asks for, or None where events stay in plaintext.

    Sealing is on when the policy file exists (``Config.policy_file``): a
    project without one at the default path is in development and writes
    plaintext, as before it adopted encryption.
    """
    crypto = config.crypto
    if crypto.encrypt_at == "off":
        return None
    policy = config.policy_file()
    if policy is None:
        return None
    from .crypto import producer_crypto

    return producer_crypto(
        crypto.encrypt_at, crypto.keys_dir, policy, producer=crypto.producer,
        reuse_events=crypto.reuse_events, reuse_seconds=crypto.reuse_seconds,
    ).sealer


_current: OutboxSettings | None = None


def configure(
    *, source: str | None = None, table_name: str | None = None, sealer: PayloadSealer | None = None
) -> OutboxSettings:
    """Set the process-wide outbox settings; arguments left out keep their current value."""
    global _current
    base = current()
    _current = OutboxSettings(
        source=source if source is not None else base.source,
        table_name=table_name if table_name is not None else base.table_name,
        sealer=sealer if sealer is not None else base.sealer,
    )
    return _current


def reset() -> None:
    """Forget configured settings (tests), so the configuration is read again."""
    global _current
    _current = None


def current() -> OutboxSettings:
    """Return the settings in force."""
    global _current
    if _current is None:
        _current = _from_configuration()
    return _current
