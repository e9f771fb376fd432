"""Ed25519 signatures at emit, through libsodium (PyNaCl).

Ed25519 (RFC 8032) is deterministic: a key and a message give one signature,
whatever computes it, so this is the same JWS signature ``cryptography`` makes,
only made in less of the emitting transaction's time. ``cryptography`` signs
through OpenSSL 3, which looks up its algorithm provider and builds a context
on every call: 32 µs alone on the benchmark machine, and 54–77 µs of the time of
a PostgreSQL transaction that emits, because it evicts the caches the rest of
the transaction then misses. libsodium's ``crypto_sign`` is one call on a
64-byte secret key: 20 µs alone, 13–16 µs of the transaction
(``docs/performance.md``, Encryption).
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.bindings import crypto_sign, crypto_sign_BYTES, crypto_sign_seed_keypair


def signer(private_key: Ed25519PrivateKey) -> Callable[[bytes], bytes]:
    """Return ``sign(message) -> 64-byte signature`` for ``private_key``."""
    seed = private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    _, secret = crypto_sign_seed_keypair(seed)

    def sign(message: bytes) -> bytes:
        return crypto_sign(message, secret)[:crypto_sign_BYTES]  # signature ‖ message

    return sign
