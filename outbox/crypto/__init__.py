"""End-to-end event encryption: keys, the access policy, sealing at the producer, opening at the consumer.

The wire format (``docs/security.md``): the event data is signed as a compact
JWS (``Ed25519``, the producer's ``kid``, the CloudEvent attributes in the
protected header), then encrypted as a JWE in General JSON serialization
(``A256GCM``, one ``ECDH-ES+A256KW`` recipient per key of every service the
policy lets read the type), with the JWE ``aad`` binding ``id``, ``type``,
``source`` and ``subject``.

Needs the ``crypto`` extra (``joserfc``, ``cryptography``, and ``pynacl`` for
libsodium's Ed25519 signing at emit); the rest of ``outbox`` imports without it.
"""

from __future__ import annotations

try:
    import cryptography  # noqa: F401
    import joserfc  # noqa: F401
    import nacl  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"outbox.crypto needs the 'crypto' extra ({exc.name} is missing): pip install 'strangler[crypto]'"
    ) from None

from .keys import KeyFileError, KeyInfo, KeyRing, load_key_file, new_key, retire_key, rotate_key
from .open import Opened, Opener, RejectedEvent
from .policy import Policy, PolicyError, load_policy
from .seal import PlaintextRefused, PolicyCheck, SealError, Sealer, plaintext_guard, relay_transform
from .setup import ProducerCrypto, producer_crypto

__all__ = [
    "KeyFileError",
    "KeyInfo",
    "KeyRing",
    "Opened",
    "Opener",
    "PlaintextRefused",
    "Policy",
    "PolicyCheck",
    "PolicyError",
    "ProducerCrypto",
    "RejectedEvent",
    "SealError",
    "Sealer",
    "load_key_file",
    "load_policy",
    "new_key",
    "plaintext_guard",
    "producer_crypto",
    "relay_transform",
    "retire_key",
    "rotate_key",
]
