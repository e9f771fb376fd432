"""Turn the ``[crypto]`` settings into what emit and the relay use."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

from ..envelope import Envelope
from ..settings import PayloadSealer
from .keys import KeyRing
from .policy import load_policy
from .seal import PolicyCheck, Sealer, relay_transform

MODES = ("emit", "relay", "off")


@dataclasses.dataclass
class ProducerCrypto:
    """The sealer for ``outbox.configure(sealer=...)`` and the relay's ``envelope_transform``, per mode."""

    sealer: PayloadSealer | None
    envelope_transform: Callable[[Envelope], Envelope] | None


def producer_crypto(
    encrypt_at: str,
    keys_dir: str | os.PathLike[str],
    policy: str | os.PathLike[str],
    *,
    producer: str = "",
    reuse_events: int = 1000,
    reuse_seconds: float = 60.0,
) -> ProducerCrypto:
    """Return what emit and the relay need for ``encrypt_at``.

    * ``emit``: the monolith seals at emit (it holds the signing key and the
      consumers' public keys); the relay forwards ciphertext untouched.
    * ``relay``: the monolith only checks the policy at emit; the relay seals.
    * ``off``: no policy, no encryption (development only).
    """
    if encrypt_at not in MODES:
        raise ValueError(f"crypto.encrypt_at = {encrypt_at!r}: expected one of {', '.join(MODES)}")
    if encrypt_at == "off":
        return ProducerCrypto(None, None)
    rules = load_policy(policy)
    if encrypt_at == "relay":
        sealer = Sealer(KeyRing.load(keys_dir), rules, producer=producer or None,
                        reuse_events=reuse_events, reuse_seconds=reuse_seconds)
        return ProducerCrypto(PolicyCheck(rules), relay_transform(sealer))
    sealer = Sealer(KeyRing.load(keys_dir), rules, producer=producer or None,
                    reuse_events=reuse_events, reuse_seconds=reuse_seconds)
    return ProducerCrypto(sealer, None)
