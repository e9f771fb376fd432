"""Process-wide outbox settings: the producer's identity and how payloads are sealed.

A monolith calls ``outbox.configure(...)`` once at start-up, or leaves it to
the environment: ``STRANGLER_SOURCE``, ``STRANGLER_OUTBOX_TABLE`` and the
``STRANGLER_CRYPTO_*`` variables, the same names the ``strangler`` command reads.
"""

from __future__ import annotations

import dataclasses
import os
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


def _from_environment() -> OutboxSettings:
    """Settings from the same variables the ``strangler`` command reads.

    With ``STRANGLER_CRYPTO_POLICY`` set, events are sealed per
    ``STRANGLER_CRYPTO_ENCRYPT_AT`` (``emit`` by default) with the keys in
    ``STRANGLER_CRYPTO_KEYS_DIR``, so a monolith is switched to encrypted
    events by its deployment, without a code change.
    """
    sealer = None
    policy = os.environ.get("STRANGLER_CRYPTO_POLICY")
    encrypt_at = os.environ.get("STRANGLER_CRYPTO_ENCRYPT_AT", "emit")
    if policy and encrypt_at != "off":
        from .crypto import producer_crypto

        sealer = producer_crypto(
            encrypt_at,
            os.environ.get("STRANGLER_CRYPTO_KEYS_DIR", ".strangler/keys"),
            policy,
            producer=os.environ.get("STRANGLER_CRYPTO_PRODUCER", ""),
            reuse_events=int(os.environ.get("STRANGLER_CRYPTO_REUSE_EVENTS", "1000")),
            reuse_seconds=float(os.environ.get("STRANGLER_CRYPTO_REUSE_SECONDS", "60")),
        ).sealer
    return OutboxSettings(
        source=os.environ.get("STRANGLER_SOURCE", "/monolith"),
        table_name=os.environ.get("STRANGLER_OUTBOX_TABLE", DEFAULT_TABLE_NAME),
        sealer=sealer,
    )


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
    """Forget configured settings (tests), so the environment is read again."""
    global _current
    _current = None


def current() -> OutboxSettings:
    """Return the settings in force."""
    global _current
    if _current is None:
        _current = _from_environment()
    return _current
