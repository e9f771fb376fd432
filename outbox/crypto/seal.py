"""Sealing at the producer: sign (JWS, Ed25519) then encrypt (JWE General JSON, A256GCM, ECDH-ES+A256KW).

``Sealer`` implements ``outbox.settings.PayloadSealer`` (encrypt at emit, the
default): ``outbox.configure(sealer=Sealer.from_files(keys_dir, policy))``.
``relay_transform(sealer)`` is the same work as an ``Envelope -> Envelope``
function for ``encrypt_at = "relay"``.

Content-key reuse. Wrapping a fresh content key (CEK) to every recipient costs
one ephemeral ECDH per recipient per event; like SQS data-key reuse and
Kroxylicious, the sealer may reuse one CEK and its recipients block for a
bounded window per recipient set (``reuse_events`` events and
``reuse_seconds`` seconds, whichever ends first; 0 means a new CEK per event).
Each event still gets its own random 96-bit IV and its own aad, and the JWE
stays a standard General JSON JWE: any JOSE library decrypts each event on its
own. joserfc always draws a new CEK per ``encrypt_json`` call, so the recipients
block is built with joserfc's ECDH-ES+A256KW key-agreement objects and the
content encrypted with ``cryptography``'s AES-GCM, following RFC 7516 §5.1.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import threading
import time
from typing import Callable, Mapping

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc.jwe import GeneralJSONEncryption, JWERegistry

from ..envelope import JOSE_CONTENT_TYPE, JSON_CONTENT_TYPE, Envelope
from . import ed25519
from .keys import ENC_ALG, SIG_ALG, KeyFileError, KeyInfo, KeyRing
from .policy import Policy, PolicyError, load_policy

ENC = "A256GCM"
#: The JWE protected header: the same for every event, so it is encoded once.
PROTECTED = {"enc": ENC, "cty": "JOSE"}
PROTECTED_B64 = base64.urlsafe_b64encode(
    json.dumps(PROTECTED, separators=(",", ":")).encode()
).rstrip(b"=").decode("ascii")
#: The CloudEvent attributes bound by the JWE aad, and those signed in the JWS header.
AAD_ATTRIBUTES = ("id", "type", "source", "subject")
SIGNED_ATTRIBUTES = ("id", "type", "source", "subject", "time")

_REGISTRY = JWERegistry(algorithms=[ENC_ALG, ENC])


def b64(data: bytes) -> str:
    """Base64url without padding, as JOSE writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    """Decode base64url with or without padding."""
    if not isinstance(text, str):
        raise ValueError("expected a base64url string")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def aad_bytes(attributes: Mapping[str, str]) -> bytes:
    """Return the JWE aad of an event: compact JSON of id, type, source, subject, keys sorted."""
    return json.dumps(
        {name: attributes.get(name, "") for name in AAD_ATTRIBUTES}, separators=(",", ":"), sort_keys=True
    ).encode()


class SealError(Exception):
    """An event cannot be sealed (no key for an allowed reader, no signing key); the message says why."""


@dataclasses.dataclass
class _ContentKey:
    aead: AESGCM
    recipients: list[dict]
    born: float
    uses: int = 0
    #: The JWE's leading members, identical for every event of the window: serialised once.
    prefix: bytes = b""

    def __post_init__(self):
        self.prefix = (
            '{"protected":"' + PROTECTED_B64 + '","recipients":'
            + json.dumps(self.recipients, separators=(",", ":")) + ',"aad":"'
        ).encode("ascii")


def wrap_content_key(cek: bytes, recipients: list[KeyInfo]) -> list[dict]:
    """Return the JWE ``recipients`` array carrying ``cek`` to each key (ECDH-ES+A256KW, fresh ephemeral key each)."""
    obj = GeneralJSONEncryption(dict(PROTECTED), None)
    for key in recipients:
        obj.add_recipient({"alg": ENC_ALG, "kid": key.kid}, key.public)
    alg = _REGISTRY.get_alg(ENC_ALG)
    enc = _REGISTRY.get_enc(ENC)
    out = []
    for recipient in obj.recipients:
        alg.prepare_ephemeral_key(recipient)
        agreed = alg.encrypt_agreed_upon_key(enc, recipient)
        wrapped = alg.wrap_cek_with_auk(cek, agreed)
        header = dict(recipient.header)
        out.append({"header": header, "encrypted_key": b64(wrapped)})
    return out


def _no_key_for(service: str, keyring: KeyRing, policy: Policy) -> str:
    """Why an event for ``service`` cannot be sealed, and the fixes: a key to make, or a name misspelt in the policy."""
    where = keyring.folder or "the key ring"
    known = sorted({k.name for k in keyring.keys.values() if k.use == "enc" and k.active})
    retired = [k.kid for k in keyring.of(service, use="enc")]
    if retired:
        why = f"its keys there are all retired ({', '.join(retired)}): run: strangler keys rotate {service}"
    else:
        why = (f"if {service!r} is a typo in {policy.origin}, correct it there (services with keys: "
               f"{', '.join(known) or 'none'}); else run: strangler keys new {service}")
    return (f"service {service!r} may read this event type ({policy.origin}) but {where} holds no active "
            f"key for it; {why}")


class Sealer:
    """Signs and encrypts event payloads for the services the policy lets read them.

    Thread-safe: one sealer serves every session of a process.
    """

    def __init__(
        self,
        keyring: KeyRing,
        policy: Policy,
        *,
        producer: str | None = None,
        reuse_events: int = 1000,
        reuse_seconds: float = 60.0,
        reload_seconds: float = 1.0,
    ):
        if reuse_events < 0 or reuse_seconds < 0:
            raise ValueError("reuse_events and reuse_seconds must be 0 (a new content key per event) or more")
        self.keyring = keyring
        self.policy = policy
        self.producer = producer
        self.reuse_events = reuse_events
        self.reuse_seconds = reuse_seconds
        self.reload_seconds = reload_seconds
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, ...], _ContentKey] = {}
        self._checked_at = time.monotonic()
        self._signer = self._load_signer()

    @classmethod
    def from_files(
        cls, keys_dir: str | os.PathLike[str], policy: str | os.PathLike[str], **options
    ) -> "Sealer":
        """Build a sealer from a keys folder and a policy file."""
        return cls(KeyRing.load(keys_dir), load_policy(policy), **options)

    def _load_signer(self) -> tuple[str, Callable[[bytes], bytes], str]:
        info = self.keyring.signing_key(self.producer)
        header = {"alg": SIG_ALG, "kid": info.kid}
        return info.kid, ed25519.signer(info.private.private_key), json.dumps(header, separators=(",", ":"))[:-1]

    def _maybe_reload(self) -> None:
        # Rotation: a key added or retired in the folder is picked up within reload_seconds.
        now = time.monotonic()
        if now - self._checked_at < self.reload_seconds:
            return
        self._checked_at = now
        if self.keyring.reload_if_changed():
            with self._lock:
                self._keys.clear()
                self._signer = self._load_signer()

    # -- PayloadSealer ------------------------------------------------------------------

    def check_type(self, event_type: str) -> None:
        """Raise ``PolicyError`` if ``event_type`` has no readers and no plaintext allowance."""
        self.policy.check_type(event_type)

    def seal(self, attributes: dict[str, str], plaintext: bytes) -> tuple[str, bytes]:
        """Return ``(content_type, payload)``: the JWE for the type's readers, or plaintext where allowed."""
        event_type = attributes["type"]
        readers = self.policy.readers_for(event_type)
        if not readers:
            if self.policy.plaintext_allowed(event_type):
                return JSON_CONTENT_TYPE, plaintext
            self.policy.check_type(event_type)  # raises with the fix
        self._maybe_reload()
        return JOSE_CONTENT_TYPE, self.encrypt(attributes, plaintext, readers)

    # -- the work -------------------------------------------------------------------------

    def sign(self, attributes: Mapping[str, str], plaintext: bytes) -> bytes:
        """Return the compact JWS of ``plaintext``, the signed CloudEvent attributes in its header."""
        kid, sign, header_prefix = self._signer
        ce = {name: attributes.get(name, "") for name in SIGNED_ATTRIBUTES}
        header = header_prefix + ',"ce":' + json.dumps(ce, separators=(",", ":")) + "}"
        signing_input = b64(header.encode()) + "." + b64(plaintext)
        signature = sign(signing_input.encode("ascii"))
        return (signing_input + "." + b64(signature)).encode("ascii")

    def encrypt(self, attributes: Mapping[str, str], plaintext: bytes, readers: tuple[str, ...]) -> bytes:
        """Sign ``plaintext`` and encrypt it to every active key of ``readers``; return the JWE JSON bytes."""
        jws = self.sign(attributes, plaintext)
        content_key = self._content_key(readers)
        aad_b64 = b64(aad_bytes(attributes))
        iv = os.urandom(12)
        sealed = content_key.aead.encrypt(iv, jws, (PROTECTED_B64 + "." + aad_b64).encode("ascii"))
        # {"protected", "recipients", "aad", "iv", "ciphertext", "tag"}: every value is base64url or
        # the cached recipients JSON, so concatenation gives the same bytes json.dumps would.
        return b"".join((
            content_key.prefix, aad_b64.encode("ascii"),
            b'","iv":"', b64(iv).encode("ascii"),
            b'","ciphertext":"', b64(sealed[:-16]).encode("ascii"),
            b'","tag":"', b64(sealed[-16:]).encode("ascii"), b'"}',
        ))

    def _content_key(self, readers: tuple[str, ...]) -> _ContentKey:
        now = time.monotonic()
        with self._lock:
            current = self._keys.get(readers)
            if (
                current is not None
                and current.uses < self.reuse_events
                and now - current.born < self.reuse_seconds
            ):
                current.uses += 1
                return current
        keys: list[KeyInfo] = []
        for service in readers:
            found = self.keyring.recipients(service)
            if not found:
                raise SealError(_no_key_for(service, self.keyring, self.policy))
            keys.extend(found)
        cek = AESGCM.generate_key(bit_length=256)
        fresh = _ContentKey(AESGCM(cek), wrap_content_key(cek, keys), now, 1)
        with self._lock:
            self._keys[readers] = fresh
        return fresh

    @property
    def producer_kid(self) -> str:
        """The kid events are signed with."""
        return self._signer[0]


class PolicyCheck:
    """A ``PayloadSealer`` for ``encrypt_at = "relay"``: enforces the policy at emit, leaves data in plaintext."""

    def __init__(self, policy: Policy):
        self.policy = policy

    def check_type(self, event_type: str) -> None:
        """Raise ``PolicyError`` if ``event_type`` has no policy entry."""
        self.policy.check_type(event_type)

    def seal(self, attributes: dict[str, str], plaintext: bytes) -> tuple[str, bytes]:
        """Return the plaintext unchanged: the relay encrypts it."""
        return JSON_CONTENT_TYPE, plaintext


def relay_transform(sealer: Sealer) -> Callable[[Envelope], Envelope]:
    """Return the relay's ``envelope_transform`` for ``encrypt_at = "relay"``.

    Events already sealed at emit pass through untouched; plaintext ones are
    signed and encrypted as at emit, or left plain where the policy allows.
    A type without policy raises ``PolicyError`` (the relay counts it a
    permanent failure of that row).
    """

    def transform(envelope: Envelope) -> Envelope:
        if envelope.datacontenttype == JOSE_CONTENT_TYPE:
            return envelope
        attributes = envelope.attributes()
        content_type, payload = sealer.seal(attributes, envelope.data)
        if content_type == envelope.datacontenttype and payload is envelope.data:
            return envelope
        return envelope.with_data(payload, content_type)

    return transform


class PlaintextRefused(Exception):
    """A plaintext row of a type the policy encrypts reached a relay that forwards sealed rows."""


def plaintext_guard(policy: Policy) -> Callable[[Envelope], Envelope]:
    """Return the relay's ``envelope_transform`` for ``encrypt_at = "emit"``: refuse plaintext the policy forbids.

    At emit time encryption the relay forwards what the monolith sealed. A
    process of the monolith that did not see the policy (another working
    folder, a worker started without the configuration) writes plaintext, and
    forwarding it would put readable data on the broker. The row fails
    instead, permanently (held back, dead after ``max_attempts``), and the
    sealed rows pass at the cost of one comparison.
    """

    def guard(envelope: Envelope) -> Envelope:
        if envelope.datacontenttype == JOSE_CONTENT_TYPE or policy.plaintext_allowed(envelope.type):
            return envelope
        raise PlaintextRefused(
            f"event type {envelope.type!r} must be encrypted ({policy.origin}) but this row is plaintext: "
            "the process that emitted it ran without the policy (is strangler.toml or "
            "STRANGLER_CRYPTO_POLICY visible to it?); to seal and publish such rows, run the relay "
            "with crypto.encrypt_at = 'relay' (it needs the producer's signing key), then "
            "'strangler outbox retry' for the dead ones"
        )

    return guard


__all__ = [
    "AAD_ATTRIBUTES",
    "ENC",
    "KeyFileError",
    "PROTECTED",
    "PolicyCheck",
    "PlaintextRefused",
    "PolicyError",
    "SIGNED_ATTRIBUTES",
    "SealError",
    "Sealer",
    "aad_bytes",
    "plaintext_guard",
    "relay_transform",
    "wrap_content_key",
]
