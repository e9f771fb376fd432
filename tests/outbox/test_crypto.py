"""Sealing and opening events: only allowed readers decrypt, forged and tampered events are refused."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat

import pytest

from outbox.crypto import (
    KeyFileError, KeyRing, PolicyError, RejectedEvent, SealError, Sealer, new_key, retire_key, rotate_key,
)
from outbox.crypto.policy import load_policy
from outbox.envelope import JOSE_CONTENT_TYPE, JSON_CONTENT_TYPE
from tests.outbox.crypto_helpers import POLICY, attributes, make_world, sealed_envelope

ORDER = {"id": 42, "email": "ada@example.com", "total": "19.90"}


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def rewrite_jwe(envelope, change):
    jwe = json.loads(envelope.data)
    change(jwe)
    return dataclasses.replace(envelope, data=json.dumps(jwe).encode())


def reason_of(opener, envelope) -> RejectedEvent:
    with pytest.raises(RejectedEvent) as info:
        opener.open(envelope)
    return info.value


# -- the format ----------------------------------------------------------------------------


def test_sealed_event_is_a_general_json_jwe_with_one_recipient_per_allowed_key(world):
    envelope = sealed_envelope(world.sealer(), ORDER)
    assert envelope.datacontenttype == JOSE_CONTENT_TYPE
    assert b"ada@example.com" not in envelope.data
    jwe = json.loads(envelope.data)
    assert json.loads(unb64(jwe["protected"])) == {"enc": "A256GCM", "cty": "JOSE"}
    assert [r["header"]["kid"] for r in jwe["recipients"]] == ["billing-1", "shipping-1"]
    assert {r["header"]["alg"] for r in jwe["recipients"]} == {"ECDH-ES+A256KW"}
    assert {r["header"]["epk"]["crv"] for r in jwe["recipients"]} == {"P-256"}
    assert json.loads(unb64(jwe["aad"])) == {
        "id": envelope.id, "type": "shop.order.created", "source": "/shop", "subject": "42",
    }
    assert "zip" not in envelope.data.decode()


def test_each_allowed_reader_opens_the_event_and_learns_who_signed_it(world):
    envelope = sealed_envelope(world.sealer(), ORDER)
    for service in ("billing", "shipping"):
        opened = world.opener(service).open(envelope)
        assert json.loads(opened.data) == ORDER
        assert opened.producer_kid == "shop-1"
        assert opened.recipient_kid == f"{service}-1"


def test_x25519_reader(world):
    envelope = sealed_envelope(world.sealer(), {"email": "ada@example.com"}, "shop.customer.registered")
    [recipient] = json.loads(envelope.data)["recipients"]
    assert recipient["header"]["epk"]["crv"] == "X25519"
    assert json.loads(world.opener("crm").open(envelope).data) == {"email": "ada@example.com"}


def test_a_service_not_in_the_policy_for_the_type_cannot_decrypt(world):
    envelope = sealed_envelope(world.sealer(), ORDER)
    rejected = reason_of(world.opener("crm"), envelope)
    assert rejected.reason == "not-for-us"
    assert "billing-1, shipping-1" in str(rejected) and "crm holds crm-1" in str(rejected)


def test_a_service_holding_only_others_public_keys_cannot_decrypt(world, tmp_path):
    # intruder is trusted to read nothing; even with billing's public key it has no private one.
    envelope = sealed_envelope(world.sealer(), ORDER)
    assert reason_of(world.opener("intruder"), envelope).reason == "not-for-us"


def test_content_key_reuse_window_shares_recipients_but_never_an_iv(world):
    sealer = world.sealer(reuse_events=3, reuse_seconds=60)
    jwes = [json.loads(sealed_envelope(sealer, ORDER).data) for _ in range(4)]
    assert jwes[0]["recipients"] == jwes[1]["recipients"] == jwes[2]["recipients"]
    assert jwes[3]["recipients"] != jwes[0]["recipients"]  # the window ended after 3 events
    assert len({j["iv"] for j in jwes}) == 4


def test_window_zero_means_a_new_content_key_per_event(world):
    sealer = world.sealer(reuse_events=0)
    first, second = (json.loads(sealed_envelope(sealer, ORDER).data) for _ in range(2))
    assert first["recipients"] != second["recipients"]


def test_window_in_seconds(world):
    sealer = world.sealer(reuse_events=1000, reuse_seconds=0)
    first, second = (json.loads(sealed_envelope(sealer, ORDER).data) for _ in range(2))
    assert first["recipients"] != second["recipients"]


# -- policy at the producer ------------------------------------------------------------------


def test_a_type_without_policy_is_refused_at_the_producer(world):
    sealer = world.sealer()
    with pytest.raises(PolicyError, match=r"shop.refund.issued.*\[readers\].*\[plaintext\]"):
        sealer.check_type("shop.refund.issued")
    with pytest.raises(PolicyError):
        sealer.seal(attributes("shop.refund.issued"), b"{}")


def test_plaintext_only_where_the_policy_allows_it(world):
    content_type, payload = world.sealer().seal(attributes("shop.heartbeat"), b'{"ok":true}')
    assert (content_type, payload) == (JSON_CONTENT_TYPE, b'{"ok":true}')
    envelope = sealed_envelope(world.sealer(), {"ok": True}, "shop.heartbeat")
    assert json.loads(world.opener("billing").open(envelope).data) == {"ok": True}


def test_consumer_rejects_plaintext_on_a_type_it_expects_encrypted(world):
    envelope = sealed_envelope(world.sealer(), ORDER)
    plain = dataclasses.replace(envelope, data=json.dumps(ORDER).encode(), datacontenttype=JSON_CONTENT_TYPE)
    rejected = reason_of(world.opener("billing"), plain)
    assert rejected.reason == "plaintext" and "does not allow plaintext" in str(rejected)


def test_a_reader_without_a_key_on_file_stops_sealing_with_the_command_to_run(tmp_path):
    world = make_world(tmp_path, POLICY.replace('["crm"]', '["crm", "audit"]'))
    with pytest.raises(Exception, match="strangler keys new audit"):
        world.sealer().seal(attributes("shop.customer.registered"), b"{}")


# -- forged events ---------------------------------------------------------------------------------


def test_signed_by_an_unknown_key_is_rejected(world, tmp_path):
    # A forger with its own signing key, encrypting to billing's real public key.
    forged_keys = tmp_path / "forger"
    forged_keys.mkdir()
    for name in ("billing-1.jwk", "shipping-1.jwk"):
        (forged_keys / name).write_bytes((world.keys / name).read_bytes())
    new_key(forged_keys, "shop", producer=True)  # same name, different key: kid shop-1
    forger = dataclasses.replace(world, keys=forged_keys).sealer()
    envelope = sealed_envelope(forger, ORDER)
    assert reason_of(world.opener("billing"), envelope).reason == "bad-signature"

    new_key(forged_keys, "evil", producer=True)
    forger = dataclasses.replace(world, keys=forged_keys).sealer(producer="evil")
    rejected = reason_of(world.opener("billing"), sealed_envelope(forger, ORDER))
    assert rejected.reason == "untrusted" and "'evil-1'" in str(rejected)


def test_trusted_name_without_a_public_key_on_file_is_an_unknown_key(world):
    sealer = world.sealer()
    envelope = sealed_envelope(sealer, ORDER)
    os.remove(world.keys / "shop-1.jwk")
    os.remove(world.keys / "shop-1.private.jwk")
    rejected = reason_of(world.opener("billing"), envelope)
    assert rejected.reason == "unknown-key" and "shop-1.jwk" in str(rejected)


def test_crm_trusts_only_one_producer_version(world):
    rotate_key(world.keys, "shop")
    envelope = sealed_envelope(world.sealer(), {"email": "x@example.com"}, "shop.customer.registered")
    assert reason_of(world.opener("crm"), envelope).reason == "untrusted"


def test_unsigned_event_is_rejected(world):
    # Encrypted with the real recipients block, but the plaintext is bare JSON, no JWS.
    sealer = world.sealer()
    envelope = sealed_envelope(sealer, ORDER)
    jwe = json.loads(envelope.data)
    content_key = sealer._keys[("billing", "shipping")]
    iv = os.urandom(12)
    sealed = content_key.aead.encrypt(iv, json.dumps(ORDER).encode(), f"{jwe['protected']}.{jwe['aad']}".encode())
    jwe.update(iv=b64(iv), ciphertext=b64(sealed[:-16]), tag=b64(sealed[-16:]))
    unsigned = dataclasses.replace(envelope, data=json.dumps(jwe).encode())
    rejected = reason_of(world.opener("billing"), unsigned)
    assert rejected.reason == "unsigned" and "not a compact JWS" in str(rejected)


# -- tampered events -----------------------------------------------------------------------------------


def test_one_byte_of_ciphertext_changed_is_rejected(world):
    envelope = sealed_envelope(world.sealer(), ORDER)

    def flip(jwe):
        raw = bytearray(unb64(jwe["ciphertext"]))
        raw[len(raw) // 2] ^= 0x01
        jwe["ciphertext"] = b64(bytes(raw))

    rejected = reason_of(world.opener("billing"), rewrite_jwe(envelope, flip))
    assert rejected.reason == "tampered" and "AES-GCM" in str(rejected)


def test_type_header_changed_in_transit_is_rejected(world):
    envelope = sealed_envelope(world.sealer(), ORDER)
    swapped = dataclasses.replace(envelope, type="shop.order.cancelled")
    rejected = reason_of(world.opener("billing"), swapped)
    assert rejected.reason == "mismatch"
    assert "type = 'shop.order.cancelled'" in str(rejected) and "'shop.order.created'" in str(rejected)


@pytest.mark.parametrize("attribute,value", [("subject", "43"), ("source", "/evil"), ("id", "other-id")])
def test_other_bound_attributes_changed_in_transit_are_rejected(world, attribute, value):
    envelope = sealed_envelope(world.sealer(), ORDER)
    rejected = reason_of(world.opener("billing"), dataclasses.replace(envelope, **{attribute: value}))
    assert rejected.reason == "mismatch" and attribute in str(rejected)


def test_aad_changed_is_rejected(world):
    envelope = sealed_envelope(world.sealer(), ORDER)

    def retarget(jwe):
        bound = json.loads(unb64(jwe["aad"]))
        bound["type"] = "shop.order.cancelled"
        jwe["aad"] = b64(json.dumps(bound).encode())

    # The attacker rewrites the header and the aad together: GCM still catches it.
    tampered = dataclasses.replace(rewrite_jwe(envelope, retarget), type="shop.order.cancelled")
    assert reason_of(world.opener("billing"), tampered).reason == "tampered"


def test_a_recipient_block_from_another_event_does_not_open_this_one(world):
    first = json.loads(sealed_envelope(world.sealer(reuse_events=0), ORDER).data)
    second = sealed_envelope(world.sealer(reuse_events=0), ORDER)
    grafted = rewrite_jwe(second, lambda jwe: jwe.update(recipients=first["recipients"]))
    assert reason_of(world.opener("billing"), grafted).reason == "tampered"


def test_compressed_jwe_is_refused(world):
    envelope = sealed_envelope(world.sealer(), ORDER)
    zipped = rewrite_jwe(envelope, lambda jwe: jwe.update(protected=b64(b'{"enc":"A256GCM","zip":"DEF"}')))
    assert reason_of(world.opener("billing"), zipped).reason == "malformed"


@pytest.mark.parametrize("mangle", [
    lambda jwe: jwe.update(protected=["x"]),
    lambda jwe: jwe.update(aad=["x"]),
    lambda jwe: jwe.update(aad="ä" + jwe["aad"]),
    lambda jwe: jwe.update(unprotected=5),
    lambda jwe: jwe["recipients"][0]["header"].update(kid=["billing-1"]),
    lambda jwe: jwe["recipients"][0].update(encrypted_key=7),
    lambda jwe: jwe.update(recipients=[5]),
    lambda jwe: jwe.update(iv=None),
], ids=["protected-list", "aad-list", "aad-not-ascii", "unprotected-number", "kid-list", "encrypted-key-number",
        "recipient-number", "iv-null"])
def test_any_malformed_jwe_is_a_rejection_never_another_exception(world, mangle):
    """Another exception would end the consumer and bring the event back at every restart."""
    envelope = sealed_envelope(world.sealer(), ORDER)
    assert reason_of(world.opener("billing"), rewrite_jwe(envelope, mangle)).reason == "malformed"


def test_an_event_a_reader_passes_on_to_a_service_the_policy_excludes_is_not_for_that_service(world, tmp_path):
    """billing holds the signed plaintext: it can encrypt it again to crm, which must not take it as the producer's."""
    forwarded_policy = tmp_path / "forwarder-policy.toml"
    forwarded_policy.write_text('[readers]\n"shop.order.*" = ["crm"]\n')
    forwarder = Sealer(KeyRing.load(world.keys), load_policy(forwarded_policy))  # a genuine shop signature inside
    forwarded = sealed_envelope(forwarder, ORDER)

    rejected = reason_of(world.opener("crm"), forwarded)

    assert rejected.reason == "not-for-us" and "does not make crm a reader of that type" in str(rejected)


SOURCES_POLICY = POLICY.replace("[trust]", '[sources]\nshop = ["/shop"]\nwarehouse = ["/warehouse"]\n\n[trust]') \
    .replace('shipping = ["shop"]', 'shipping = ["shop", "warehouse"]')


def test_with_sources_a_trusted_producer_cannot_sign_for_another_producers_source(tmp_path):
    world = make_world(tmp_path, policy=SOURCES_POLICY)
    new_key(world.keys, "warehouse", producer=True)
    warehouse = Sealer(KeyRing.load(world.keys), world.policy, producer="warehouse")

    posing = sealed_envelope(warehouse, ORDER)  # source /shop, signed by warehouse-1
    rejected = reason_of(world.opener("shipping"), posing)

    assert rejected.reason == "untrusted"
    assert "lets producer 'warehouse' sign for /warehouse, not '/shop'" in str(rejected)
    assert world.opener("shipping").open(sealed_envelope(world.sealer(producer="shop"), ORDER)).producer_kid == "shop-1"
    assert world.opener("shipping").open(sealed_envelope(warehouse, ORDER, source="/warehouse")).producer_kid \
        == "warehouse-1"


def test_with_sources_a_producer_the_table_does_not_name_is_refused(tmp_path):
    world = make_world(tmp_path, policy=SOURCES_POLICY.replace('shop = ["/shop"]\n', ""))

    rejected = reason_of(world.opener("billing"), sealed_envelope(world.sealer(), ORDER))

    assert rejected.reason == "untrusted" and "names no source for producer 'shop'" in str(rejected)


def test_sources_must_be_lists_of_patterns(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text('[sources]\nshop = "/shop"\n')
    with pytest.raises(PolicyError, match=r"\[sources\] 'shop' must be a list of source patterns"):
        load_policy(path)


# -- keys ------------------------------------------------------------------------------------------------


def test_key_files_private_0600_public_readable_and_never_mixed(tmp_path):
    info = new_key(tmp_path / "k", "billing")
    private = tmp_path / "k" / "billing-1.private.jwk"
    public = tmp_path / "k" / "billing-1.jwk"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700
    assert "d" in json.loads(private.read_text()) and "d" not in json.loads(public.read_text())
    assert info.kid == "billing-1" and info.alg == "ECDH-ES+A256KW" and info.created
    secret = json.loads(private.read_text())["d"]
    assert secret not in repr(info.describe()) and secret not in repr(info)


def test_a_private_key_readable_by_others_is_refused_with_the_fix(tmp_path):
    new_key(tmp_path, "billing")
    path = tmp_path / "billing-1.private.jwk"
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match=r"billing-1.private.jwk: .*mode 0644.*chmod 600"):
        KeyRing.load(tmp_path)


def test_malformed_key_file_names_the_file(tmp_path):
    (tmp_path / "billing-1.jwk").write_text("{not json")
    with pytest.raises(KeyFileError, match=r"billing-1.jwk: not a JSON Web Key \(line 1"):
        KeyRing.load(tmp_path)


def test_private_material_in_a_public_file_is_refused(tmp_path):
    new_key(tmp_path, "billing")
    (tmp_path / "billing-1.jwk").write_text((tmp_path / "billing-1.private.jwk").read_text())
    with pytest.raises(KeyFileError, match="holds private key material"):
        KeyRing.load(tmp_path)


def test_rotate_adds_a_version_and_both_are_encrypted_to_until_retired(world):
    rotate_key(world.keys, "billing")
    jwe = json.loads(sealed_envelope(world.sealer(), ORDER).data)
    assert [r["header"]["kid"] for r in jwe["recipients"]] == ["billing-1", "billing-2", "shipping-1"]
    retire_key(world.keys, "billing-1")
    envelope = sealed_envelope(world.sealer(), ORDER)
    assert [r["header"]["kid"] for r in json.loads(envelope.data)["recipients"]] == ["billing-2", "shipping-1"]
    assert KeyRing.load(world.keys).get("billing-1").retired
    assert world.opener("billing").open(envelope).recipient_kid == "billing-2"


def test_a_key_file_copied_over_in_place_is_picked_up_though_the_folder_did_not_change(world, tmp_path):
    """A deployment that syncs the keys folder rewrites files; the folder's own time moves only for new names."""
    import os
    import shutil

    ring = KeyRing.load(world.keys)
    admin = tmp_path / "admin-copy"
    shutil.copytree(world.keys, admin)
    rotate_key(admin, "billing")
    retire_key(admin, "billing-1")
    folder_time = os.stat(world.keys).st_mtime_ns
    shutil.copyfile(admin / "billing-1.jwk", world.keys / "billing-1.jwk")  # over the old file, same name
    assert os.stat(world.keys).st_mtime_ns == folder_time

    assert ring.reload_if_changed() is True
    assert ring.get("billing-1").retired
    assert ring.reload_if_changed() is False  # nothing changed since


@pytest.mark.parametrize("reader, fix", [
    ("biling", "if 'biling' is a typo in"),  # a name misspelt in the policy
    ("ledger", "services with keys: billing, crm, intruder, shipping"),  # a key not made yet
])
def test_a_reader_without_a_key_names_both_fixes_a_key_to_make_or_a_typo_in_the_policy(tmp_path, reader, fix):
    world = make_world(tmp_path, policy=f'[readers]\n"shop.order.*" = ["{reader}"]\n')

    with pytest.raises(SealError) as refused:
        sealed_envelope(world.sealer(), ORDER)

    assert fix in str(refused.value) and f"strangler keys new {reader}" in str(refused.value)


def test_a_reader_whose_keys_are_all_retired_is_told_to_rotate(world):
    retire_key(world.keys, "billing-1")

    with pytest.raises(SealError, match="all retired \\(billing-1\\): run: strangler keys rotate billing"):
        sealed_envelope(world.sealer(), ORDER)


# -- policy file -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,message",
    [
        ("[readers]\n'a.*' = 'billing'\n", r"\[readers\] 'a\.\*' must be a list"),
        ("[reader]\n", r"unknown table \[reader\]"),
        ("[plaintext]\ntype = []\n", r"unknown key \[plaintext\] 'type'"),
        ("[trust]\nbilling = ['shop shop']\n", r"not a service name"),
        ("[readers\n", r"not valid TOML"),
    ],
)
def test_policy_errors_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message) as info:
        load_policy(path)
    assert str(path) in str(info.value)


def test_readers_union_over_matching_patterns_and_readers_beat_plaintext(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(
        '[readers]\n"shop.order.*" = ["billing"]\n"shop.order.paid" = ["ledger"]\n'
        '[plaintext]\ntypes = ["shop.*"]\n'
    )
    policy = load_policy(path)
    assert policy.readers_for("shop.order.paid") == ("billing", "ledger")
    assert policy.readers_for("shop.order.created") == ("billing",)
    assert not policy.plaintext_allowed("shop.order.paid")
    assert policy.plaintext_allowed("shop.heartbeat")


def test_libsodium_signs_exactly_as_cryptography_does_and_cryptography_verifies_it():
    """Ed25519 is deterministic: the emit-time signer (libsodium) makes cryptography's signature."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from outbox.crypto import ed25519

    for size in (0, 1, 300, 5000):
        key = Ed25519PrivateKey.generate()
        message = os.urandom(size)
        signature = ed25519.signer(key)(message)
        assert signature == key.sign(message)
        key.public_key().verify(signature, message)  # raises if it does not verify
