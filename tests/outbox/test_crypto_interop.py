"""Interop: what strangler publishes opens with an independent JOSE library (jwcrypto) and with Node's crypto."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from outbox.routers import open_router
from tests.outbox.crypto_helpers import make_world, sealed_envelope

NODE_CONSUMER = Path(__file__).resolve().parents[2] / "docs" / "examples" / "node-consumer" / "consume.mjs"
CANARY = "canary.interop@example.com"


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


def published_lines(tmp_path, envelopes) -> list[bytes]:
    """Publish through the file router and return the lines a consumer reads: the bytes on the wire."""
    router = open_router(f"file://{tmp_path}/events")
    assert all(r.ok for r in router.publish(envelopes))
    router.close()
    return [line for line in (tmp_path / "events").glob("*.jsonl").__next__().read_bytes().splitlines()]


def jwk_of(path: Path, *, private: bool) -> dict:
    doc = json.loads(path.read_text())
    members = ("kty", "crv", "x", "y", "d") if private else ("kty", "crv", "x", "y")
    return {k: doc[k] for k in members if k in doc}


@pytest.mark.parametrize("window", [0, 100], ids=["window-0", "window-100"])
@pytest.mark.parametrize("service,type_", [("billing", "shop.order.created"), ("crm", "shop.customer.registered")],
                         ids=["P-256", "X25519"])
def test_jwcrypto_decrypts_and_verifies_what_is_published(world, tmp_path, window, service, type_):
    from jwcrypto import jwe, jwk, jws

    from outbox.envelope import Envelope

    sealer = world.sealer(reuse_events=window)
    envelopes = [sealed_envelope(sealer, {"n": n, "email": CANARY}, type_) for n in range(3)]
    producer_key = jwk.JWK(**jwk_of(world.keys / "shop-1.jwk", private=False))
    private_key = jwk.JWK(**jwk_of(world.keys / f"{service}-1.private.jwk", private=True))
    for n, line in enumerate(published_lines(tmp_path, envelopes)):
        event = Envelope.from_json(line)
        token = jwe.JWE()
        token.deserialize(event.data.decode(), key=private_key)
        # jwcrypto authenticated the aad with the ciphertext; it binds the envelope's attributes.
        assert json.loads(jwe.base64url_decode(json.loads(event.data)["aad"])) == {
            "id": event.id, "type": type_, "source": "/shop", "subject": "42",
        }
        signed = jws.JWS()
        signed.deserialize(token.payload.decode())
        signed.verify(producer_key, alg="Ed25519")
        assert json.loads(signed.payload) == {"n": n, "email": CANARY}
        assert signed.jose_header["kid"] == "shop-1"
        assert signed.jose_header["ce"]["id"] == event.id and signed.jose_header["ce"]["type"] == type_


def test_jwcrypto_refuses_a_flipped_ciphertext_byte(world, tmp_path):
    from jwcrypto import jwe, jwk
    from jwcrypto.common import JWException

    envelope = sealed_envelope(world.sealer(), {"email": CANARY})
    doc = json.loads(envelope.data)
    doc["ciphertext"] = ("A" if doc["ciphertext"][0] != "A" else "B") + doc["ciphertext"][1:]
    token = jwe.JWE()
    with pytest.raises(JWException):
        token.deserialize(json.dumps(doc), key=jwk.JWK(**jwk_of(world.keys / "billing-1.private.jwk", private=True)))


node = shutil.which("node")


@pytest.mark.skipif(node is None, reason="node is not installed")
@pytest.mark.parametrize("service,type_", [("billing", "shop.order.created"), ("crm", "shop.customer.registered")],
                         ids=["P-256", "X25519"])
def test_node_builtin_crypto_decrypts_and_verifies_what_is_published(world, tmp_path, service, type_):
    sealer = world.sealer(reuse_events=2)
    envelopes = [sealed_envelope(sealer, {"n": n, "email": CANARY}, type_) for n in range(3)]
    lines = published_lines(tmp_path, envelopes)
    result = subprocess.run(
        [node, str(NODE_CONSUMER), "--key", str(world.keys / f"{service}-1.private.jwk"),
         "--producer", str(world.keys / "shop-1.jwk")],
        input=b"\n".join(lines) + b"\n", capture_output=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    opened = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [o["data"] for o in opened] == [{"n": n, "email": CANARY} for n in range(3)]
    assert {o["signed_by"] for o in opened} == {"shop-1"} and {o["recipient"] for o in opened} == {f"{service}-1"}
    assert [o["id"] for o in opened] == [e.id for e in envelopes]


@pytest.mark.skipif(node is None, reason="node is not installed")
def test_node_consumer_rejects_tampering_and_foreign_events(world, tmp_path):
    order = sealed_envelope(world.sealer(), {"email": CANARY})
    swapped = json.loads(order.to_json())
    swapped["type"] = "shop.order.cancelled"
    lines = [json.dumps(swapped).encode(), order.to_json()]
    result = subprocess.run(
        [node, str(NODE_CONSUMER), "--key", str(world.keys / "crm-1.private.jwk"),
         "--producer", str(world.keys / "shop-1.jwk")],
        input=b"\n".join(lines) + b"\n", capture_output=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.decode().count("not-for-us") == 2  # crm is not a reader of orders
    result = subprocess.run(
        [node, str(NODE_CONSUMER), "--key", str(world.keys / "billing-1.private.jwk"),
         "--producer", str(world.keys / "shop-1.jwk")],
        input=b"\n".join(lines) + b"\n", capture_output=True, timeout=60,
    )
    assert result.returncode == 1 and "mismatch" in result.stderr.decode()
    assert len(result.stdout.decode().splitlines()) == 1  # the untouched one still opens


@pytest.mark.skipif(node is None, reason="node is not installed")
def test_node_consumer_compares_time_to_the_microsecond(world, tmp_path):
    """Date.parse keeps milliseconds: a time rewritten within one millisecond must still be a mismatch."""
    order = sealed_envelope(world.sealer(), {"email": CANARY})
    moved = json.loads(order.to_json())
    signed = order.time
    moved["time"] = signed.replace(microsecond=(signed.microsecond + 1) % 1000 + signed.microsecond // 1000 * 1000) \
        .isoformat().replace("+00:00", "Z")
    assert moved["time"][:23] == json.loads(order.to_json())["time"][:23]  # same millisecond

    result = subprocess.run(
        [node, str(NODE_CONSUMER), "--key", str(world.keys / "billing-1.private.jwk"),
         "--producer", str(world.keys / "shop-1.jwk")],
        input=json.dumps(moved).encode() + b"\n", capture_output=True, timeout=60,
    )

    assert result.returncode == 1 and "time differs from the signed value" in result.stderr.decode()
