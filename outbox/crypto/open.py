"""Opening at the consumer: decrypt with the service's own key, verify the producer's signature, match the envelope.

``Opener(service, keyring, policy).open(envelope)`` returns the plaintext data
or raises ``RejectedEvent`` with a ``reason`` code and a message a person can
act on:

================  ================================================================
reason            meaning
================  ================================================================
plaintext         unencrypted event of a type the policy does not allow in plaintext
malformed         data is not a General JSON JWE / compact JWS this format defines
not-for-us        encrypted, but to none of this service's keys (not in the policy, or an old key deleted)
tampered          AES-GCM authentication failed: ciphertext, iv, tag, protected header or aad altered
unsigned          the decrypted payload is not a JWS, or its alg is not Ed25519
untrusted         signed by a kid this service does not trust (policy ``[trust]``)
unknown-key       signed by a trusted name, but no public key with that kid is on file
bad-signature     the Ed25519 signature does not verify
mismatch          envelope attributes differ from the ones bound by the aad or signed (swapped headers)
================  ================================================================

Unwrapped content keys are cached per (kid, recipient header, encrypted key),
so a producer's reuse window saves the consumer's ECDH too.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import threading
import time
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc.jwe import GeneralJSONEncryption

from ..envelope import JOSE_CONTENT_TYPE, Envelope, EnvelopeError, parse_time
from .keys import ENC_ALG, SIG_ALG, KeyInfo, KeyRing
from .policy import Policy
from .seal import _REGISTRY, AAD_ATTRIBUTES, ENC, SIGNED_ATTRIBUTES, unb64

_CEK_CACHE_SIZE = 1024


class RejectedEvent(Exception):
    """An event failed verification or decryption; ``reason`` is a short code, the message says why."""

    def __init__(self, reason: str, message: str, event_id: str | None = None):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.event_id = event_id


@dataclasses.dataclass(frozen=True)
class Opened:
    """A verified, decrypted event payload."""

    data: bytes
    producer_kid: str | None  # None for an allowed plaintext event (unsigned by design)
    recipient_kid: str | None


class Opener:
    """Verifies and decrypts events for one service. Thread-safe."""

    def __init__(self, service: str, keyring: KeyRing, policy: Policy, *, reload_seconds: float = 1.0):
        self.service = service
        self.keyring = keyring
        self.policy = policy
        self.reload_seconds = reload_seconds
        self._checked_at = time.monotonic()
        self._ceks: collections.OrderedDict[tuple, AESGCM] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._own = self._own_keys()

    def _own_keys(self) -> dict[str, KeyInfo]:
        # Only this service's keys: a shared development folder may hold others'.
        return {kid: k for kid, k in self.keyring.decryption_keys().items() if k.name == self.service}

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.reload_seconds:
            return
        self._checked_at = now
        if self.keyring.reload_if_changed():
            self._own = self._own_keys()

    def open(self, envelope: Envelope) -> Opened:
        """Return the plaintext of ``envelope`` after every check, or raise ``RejectedEvent``.

        Whatever the bytes, the outcome is the plaintext or a rejection: an
        input this code did not foresee is ``malformed``, never another
        exception, which would end a consumer and bring the event back at
        every restart (anyone who may publish could stop a service so).
        """
        try:
            return self._open(envelope)
        except RejectedEvent:
            raise
        except Exception as exc:
            raise RejectedEvent(
                "malformed", f"event {envelope.id}: not a JWE of this format ({type(exc).__name__})", envelope.id
            ) from None

    def _open(self, envelope: Envelope) -> Opened:
        event_id = envelope.id
        if envelope.datacontenttype != JOSE_CONTENT_TYPE:
            if self.policy.plaintext_allowed(envelope.type):
                return Opened(envelope.data, None, None)
            raise RejectedEvent(
                "plaintext",
                f"event {event_id} of type {envelope.type!r} arrived unencrypted "
                f"({envelope.datacontenttype}), but {self.policy.origin} does not allow plaintext for it",
                event_id,
            )
        self._maybe_reload()
        jwe = _parse_jwe(envelope.data, event_id)
        aead, recipient_kid = self._content_key(jwe, event_id)
        aad = (jwe["protected"] + "." + jwe["aad"]).encode("ascii")
        try:
            iv = unb64(jwe["iv"])
            jws = aead.decrypt(iv, unb64(jwe["ciphertext"]) + unb64(jwe["tag"]), aad)
        except InvalidTag:
            raise RejectedEvent(
                "tampered",
                f"event {event_id}: authentication failed (AES-GCM tag): the ciphertext, iv, tag, "
                "protected header or aad was altered after sealing",
                event_id,
            ) from None
        except ValueError as exc:
            raise RejectedEvent("malformed", f"event {event_id}: bad iv/ciphertext/tag: {exc}", event_id) from None
        bound = _json_object(unb64(jwe["aad"]), "aad", event_id)
        _match(envelope, bound, AAD_ATTRIBUTES, "bound by the JWE aad")
        header, payload = self._verify(jws, event_id)
        _match(envelope, header.get("ce") or {}, SIGNED_ATTRIBUTES, "signed by the producer")
        refused = self.policy.source_refused(header["kid"], envelope.source)
        if refused is not None:
            # A producer this service trusts, signing for another's source: trust is per producer,
            # so without this any one of them could pass its events off as the others'.
            raise RejectedEvent("untrusted", f"event {event_id} from {envelope.source!r} is signed by "
                                f"{header['kid']!r}: {refused}", event_id)
        if self.policy.readers and self.service not in self.policy.readers_for(envelope.type):
            # Genuinely signed, and encrypted to this service: by a reader of the type that passed it on
            # (it holds the plaintext, and the signature does not say for whom it was sealed). A policy
            # with no [readers] (a person's `events decrypt` without --policy) names no readers to check.
            raise RejectedEvent(
                "not-for-us",
                f"event {event_id} of type {envelope.type!r} is encrypted to {recipient_kid}, but "
                f"{self.policy.origin} does not make {self.service} a reader of that type: not sealed by the "
                "producer for it (passed on by another reader?), or this service's copy of the policy is older "
                "than the producer's",
                event_id,
            )
        return Opened(payload, header["kid"], recipient_kid)

    def _content_key(self, jwe: dict[str, Any], event_id: str) -> tuple[AESGCM, str]:
        offered = []
        for item in jwe["recipients"]:
            header = item.get("header") if isinstance(item, dict) else None
            if not isinstance(header, dict):
                raise RejectedEvent("malformed", f"event {event_id}: a JWE recipient has no header", event_id)
            kid = header.get("kid")
            offered.append(str(kid))
            key = self._own.get(kid)
            if key is None:
                continue
            if header.get("alg") != ENC_ALG:
                raise RejectedEvent(
                    "malformed", f"event {event_id}: recipient {kid} uses alg {header.get('alg')!r}, not {ENC_ALG}", event_id
                )
            cache_key = (kid, json.dumps(header, sort_keys=True), item.get("encrypted_key"))
            with self._lock:
                aead = self._ceks.get(cache_key)
                if aead is not None:
                    self._ceks.move_to_end(cache_key)
                    return aead, kid
            cek = _unwrap(jwe, item, key, event_id)
            aead = AESGCM(cek)
            with self._lock:
                self._ceks[cache_key] = aead
                if len(self._ceks) > _CEK_CACHE_SIZE:
                    self._ceks.popitem(last=False)
            return aead, kid
        held = ", ".join(sorted(self._own)) or "none"
        raise RejectedEvent(
            "not-for-us",
            f"event {event_id} is encrypted for {', '.join(offered) or 'no recipient'}; {self.service} holds "
            f"{held}. Either {self.service} is not a reader of this type in the policy, or its key "
            "is newer than the event's",
            event_id,
        )

    def _verify(self, jws: bytes, event_id: str) -> tuple[dict[str, Any], bytes]:
        parts = jws.split(b".")
        if len(parts) != 3:
            raise RejectedEvent(
                "unsigned", f"event {event_id}: the decrypted payload is not a compact JWS", event_id
            )
        try:
            header = json.loads(unb64(parts[0].decode("ascii")))
            payload = unb64(parts[1].decode("ascii"))
            signature = unb64(parts[2].decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            raise RejectedEvent("unsigned", f"event {event_id}: the decrypted payload is not a compact JWS (it does not decode)", event_id) from None
        if not isinstance(header, dict) or header.get("alg") != SIG_ALG:
            alg = header.get("alg") if isinstance(header, dict) else None
            raise RejectedEvent(
                "unsigned", f"event {event_id}: the inner JWS has alg {alg!r}; only {SIG_ALG} is accepted", event_id
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not self.policy.trusts(self.service, kid):
            trusted = ", ".join(self.policy.trusted_by(self.service)) or "nothing"
            raise RejectedEvent(
                "untrusted",
                f"event {event_id} is signed by {kid!r}, which {self.service} does not trust "
                f"(policy [trust] {self.service} = {trusted})",
                event_id,
            )
        key = self.keyring.get(kid)
        if key is None or key.use != "sig":
            raise RejectedEvent(
                "unknown-key",
                f"event {event_id} is signed by {kid!r}, but no public signing key {kid}.jwk is in "
                f"{self.keyring.folder or 'the key ring'}: copy the producer's public key there",
                event_id,
            )
        try:
            key.public.public_key.verify(signature, parts[0] + b"." + parts[1])
        except InvalidSignature:
            raise RejectedEvent(
                "bad-signature", f"event {event_id}: the signature does not verify with {kid}", event_id
            ) from None
        return header, payload


def _parse_jwe(data: bytes, event_id: str) -> dict[str, Any]:
    """The JWE as a dict whose members have the types this format gives them; else a ``malformed`` rejection."""
    jwe = _json_object(data, "JWE", event_id)
    for member in ("protected", "iv", "ciphertext", "tag", "aad"):
        value = jwe.get(member)
        if not isinstance(value, str) or not value.isascii():
            raise RejectedEvent(
                "malformed", f"event {event_id}: the JWE has no {member!r} string (General JSON serialization "
                "expected)", event_id
            )
    recipients = jwe.get("recipients")
    if not isinstance(recipients, list) or not all(
        isinstance(item, dict) and isinstance(item.get("header"), dict) and isinstance(item["header"].get("kid"), str)
        and isinstance(item.get("encrypted_key", ""), str)
        for item in recipients
    ):
        raise RejectedEvent(
            "malformed", f"event {event_id}: JWE recipients must be a list of objects with a header and a kid",
            event_id,
        )
    unprotected = jwe.get("unprotected", {})
    if not isinstance(unprotected, dict):
        raise RejectedEvent("malformed", f"event {event_id}: the JWE's unprotected header is not an object", event_id)
    protected = _json_object(unb64(jwe["protected"]), "protected header", event_id)
    if protected.get("enc") != ENC:
        raise RejectedEvent("malformed", f"event {event_id}: enc {protected.get('enc')!r}, expected {ENC}", event_id)
    if "zip" in protected or "zip" in unprotected:
        raise RejectedEvent("malformed", f"event {event_id}: compressed JWE (zip) is refused", event_id)
    return jwe


def _json_object(raw: bytes, what: str, event_id: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RejectedEvent("malformed", f"event {event_id}: the {what} is not JSON", event_id) from None
    if not isinstance(doc, dict):
        raise RejectedEvent("malformed", f"event {event_id}: the {what} is not a JSON object", event_id)
    return doc


def _unwrap(jwe: dict[str, Any], item: dict[str, Any], key: KeyInfo, event_id: str) -> bytes:
    obj = GeneralJSONEncryption(dict(_protected(jwe)), None)
    obj.add_recipient(dict(item["header"]), key.private)
    recipient = obj.recipients[0]
    try:
        recipient.encrypted_key = unb64(item.get("encrypted_key", ""))
        alg = _REGISTRY.get_alg(ENC_ALG)
        enc = _REGISTRY.get_enc(ENC)
        agreed = alg.decrypt_agreed_upon_key(enc, recipient)
        return alg.unwrap_cek_with_auk(recipient.encrypted_key, agreed)
    except Exception as exc:  # joserfc raises DecodeError, ValueError, AssertionError on bad input
        raise RejectedEvent(
            "tampered",
            f"event {event_id}: cannot unwrap the content key for {key.kid} ({exc.__class__.__name__}): "
            "the recipient header or encrypted_key was altered",
            event_id,
        ) from None


def _protected(jwe: dict[str, Any]) -> dict[str, Any]:
    """Return the decoded protected header of a parsed JWE."""
    return json.loads(unb64(jwe["protected"]))


def _match(envelope: Envelope, bound: dict[str, Any], names: tuple[str, ...], how: str) -> None:
    actual = envelope.attributes()
    for name in names:
        want, got = bound.get(name), actual.get(name, "")
        if name == "time" and isinstance(want, str) and got:
            try:
                if parse_time(want) == parse_time(got):
                    continue
            except EnvelopeError:
                pass
        if want != got:
            raise RejectedEvent(
                "mismatch",
                f"event {envelope.id}: the envelope says {name} = {got!r}, but the value {how} is {want!r} "
                "(headers swapped or rewritten in transit)",
                envelope.id,
            )
