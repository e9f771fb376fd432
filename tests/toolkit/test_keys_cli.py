"""strangler keys and strangler events: make, rotate, retire, list keys; tail and decrypt events."""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

from outbox.routers import open_router
from tests.outbox.crypto_helpers import make_world, sealed_envelope
from toolkit.cli import cli

CANARY = "canary.cli@example.com"


def run(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def keys_dir(tmp_path):
    return str(tmp_path / "keys")


def test_new_service_key_writes_a_private_0600_file_and_prints_no_key_material(keys_dir):
    result = run("keys", "new", "billing", "--keys-dir", keys_dir)
    assert result.exit_code == 0, result.output
    private = os.path.join(keys_dir, "billing-1.private.jwk")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    secret = json.load(open(private))["d"]
    assert secret not in result.output and "billing-1" in result.output and "give it to the billing" in result.output


def test_new_for_a_name_that_has_keys_points_to_rotate_and_makes_none(keys_dir):
    run("keys", "new", "billing", "--keys-dir", keys_dir)
    result = run("keys", "new", "billing", "--keys-dir", keys_dir)
    assert result.exit_code == 2 and "strangler keys rotate billing" in result.output
    assert not os.path.exists(os.path.join(keys_dir, "billing-2.jwk"))


def test_new_producer_key_is_named_after_the_source(keys_dir, monkeypatch):
    monkeypatch.setenv("STRANGLER_SOURCE", "/shop")
    result = run("keys", "new", "--producer", "--keys-dir", keys_dir, "--json")
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    assert (described["kid"], described["alg"], described["crv"]) == ("shop-1", "Ed25519", "Ed25519")


def test_list_shows_kids_algorithms_dates_and_never_secrets(keys_dir):
    run("keys", "new", "billing", "--keys-dir", keys_dir)
    run("keys", "new", "crm", "--curve", "X25519", "--keys-dir", keys_dir)
    run("keys", "new", "--producer", "shop", "--keys-dir", keys_dir)
    run("keys", "rotate", "billing", "--keys-dir", keys_dir)
    assert run("keys", "retire", "billing-1", "--keys-dir", keys_dir).exit_code == 0
    result = run("keys", "list", "--keys-dir", keys_dir, "--json")
    assert result.exit_code == 0
    rows = {r["kid"]: r for r in json.loads(result.output)}
    assert set(rows) == {"billing-1", "billing-2", "crm-1", "shop-1"}
    assert rows["billing-1"]["retired"] and not rows["billing-2"]["retired"]
    assert rows["crm-1"]["crv"] == "X25519" and rows["shop-1"]["alg"] == "Ed25519"
    assert all(r["created"] for r in rows.values())
    for kid in rows:
        secret = json.load(open(os.path.join(keys_dir, f"{kid}.private.jwk")))["d"]
        assert secret not in result.output
    table = run("keys", "list", "--keys-dir", keys_dir).output
    assert "billing-1" in table and "RETIRED" in table


def test_export_prints_the_public_jwk_and_the_private_only_when_asked(keys_dir):
    run("keys", "new", "billing", "--keys-dir", keys_dir)
    public = json.loads(run("keys", "export", "billing-1", "--keys-dir", keys_dir).output)
    assert "d" not in public and public["kid"] == "billing-1"
    private = json.loads(run("keys", "export", "billing-1", "--private", "--keys-dir", keys_dir).output)
    assert "d" in private


def test_a_too_open_private_key_is_a_problem_with_the_fix(keys_dir):
    run("keys", "new", "billing", "--keys-dir", keys_dir)
    os.chmod(os.path.join(keys_dir, "billing-1.private.jwk"), 0o640)
    result = run("keys", "list", "--keys-dir", keys_dir)
    assert result.exit_code == 1 and "chmod 600" in result.output


@pytest.mark.parametrize(
    "args",
    [("keys", "new"), ("keys", "new", "bad name"), ("keys", "new", "billing", "--curve", "P-384")],
)
def test_bad_usage_exits_2(keys_dir, args):
    assert run(*args, "--keys-dir", keys_dir).exit_code == 2


def test_rotating_or_retiring_what_does_not_exist_is_a_problem(keys_dir):
    run("keys", "new", "billing", "--keys-dir", keys_dir)
    assert run("keys", "rotate", "nobody", "--keys-dir", keys_dir).exit_code == 1
    assert run("keys", "retire", "nobody-1", "--keys-dir", keys_dir).exit_code == 1


def test_retiring_the_last_active_key_of_a_reader_is_refused_with_the_types_it_would_break(keys_dir, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "strangler-policy.toml").write_text('[readers]\n"shop.order.*" = ["billing"]\n')
    run("keys", "new", "billing", "--keys-dir", keys_dir)

    refused = CliRunner().invoke(cli, ["keys", "retire", "billing-1", "--keys-dir", keys_dir])

    assert refused.exit_code == 2
    assert "billing-1 is the last active key of billing" in refused.output
    assert "strangler-policy.toml gives billing shop.order.*" in refused.output
    assert "strangler keys rotate billing" in refused.output
    assert run("keys", "retire", "billing-1", "--keys-dir", keys_dir, "--force").exit_code == 0
    assert json.loads(run("keys", "list", "--keys-dir", keys_dir, "--json").stdout)[0]["retired"]


def test_retiring_the_producers_only_signing_key_is_refused(keys_dir):
    run("keys", "new", "--producer", "shop", "--keys-dir", keys_dir)

    refused = CliRunner().invoke(cli, ["keys", "retire", "shop-1", "--keys-dir", keys_dir])

    assert refused.exit_code == 2 and "could sign nothing" in refused.output


def test_rotating_the_producer_key_says_to_deploy_the_public_half_to_consumers_first(keys_dir):
    run("keys", "new", "--producer", "shop", "--keys-dir", keys_dir)

    rotated = CliRunner().invoke(cli, ["keys", "rotate", "shop", "--keys-dir", keys_dir])

    assert rotated.exit_code == 0 and "signs with shop-2 from now on" in rotated.stderr
    assert "shop-2.jwk is in their keys folders" in rotated.stderr


def test_list_warns_about_each_reader_the_policy_names_without_an_active_key(keys_dir, tmp_path, monkeypatch):
    """A key not made yet, or a name misspelt in the policy: every emit of those types would fail."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "strangler-policy.toml").write_text('[readers]\n"shop.order.*" = ["biling"]\n')
    run("keys", "new", "billing", "--keys-dir", keys_dir)

    listed = CliRunner().invoke(cli, ["keys", "list", "--keys-dir", keys_dir])

    assert listed.exit_code == 0
    assert "warning: strangler-policy.toml gives biling shop.order.*, but no active key of biling" in listed.stderr
    assert "billing" not in listed.stderr.replace("biling", "")


# -- events ---------------------------------------------------------------------------------------


@pytest.fixture
def published(tmp_path):
    world = make_world(tmp_path)
    router_url = f"file://{tmp_path}/events"
    router = open_router(router_url)
    envelope = sealed_envelope(world.sealer(), {"id": 1, "email": CANARY})
    router.publish([envelope])
    router.close()
    return world, router_url, envelope


def test_tail_without_a_key_shows_attributes_and_recipients_never_data(published):
    world, router_url, envelope = published
    result = run("events", "tail", "--router", router_url, "--destination", "order", "--json")
    assert result.exit_code == 0, result.output
    [shown] = [json.loads(line) for line in result.output.splitlines()]
    assert shown["id"] == envelope.id and shown["recipients"] == ["billing-1", "shipping-1"]
    assert CANARY not in result.output


def test_tail_with_a_key_decrypts_and_verifies(published):
    world, router_url, envelope = published
    key = str(world.keys / "billing-1.private.jwk")
    result = run("events", "tail", "--router", router_url, "--destination", "order", "--key", key,
                 "--keys-dir", str(world.keys), "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["data"] == {"id": 1, "email": CANARY} and shown["signed_by"] == "shop-1"


def test_tail_with_the_key_of_a_service_not_allowed_fails_with_the_reason(published):
    world, router_url, _ = published
    key = str(world.keys / "crm-1.private.jwk")
    result = run("events", "tail", "--router", router_url, "--destination", "order", "--key", key,
                 "--keys-dir", str(world.keys))
    assert result.exit_code == 1 and "REJECTED not-for-us" in result.output and CANARY not in result.output


def test_decrypt_reads_cloudevents_from_stdin(published):
    world, _, envelope = published
    key = str(world.keys / "shipping-1.private.jwk")
    result = run("events", "decrypt", "--key", key, "--keys-dir", str(world.keys), input=envelope.to_json() + b"\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"id": 1, "email": CANARY}
    tampered = envelope.to_structured()
    tampered["type"] = "shop.order.cancelled"
    bad = run("events", "decrypt", "--key", key, "--keys-dir", str(world.keys), input=json.dumps(tampered))
    assert bad.exit_code == 1 and "mismatch" in bad.output


def test_decrypt_needs_a_key_and_refuses_an_open_key_file(published):
    world, _, envelope = published
    assert run("events", "decrypt", input=envelope.to_json()).exit_code == 2
    key = world.keys / "billing-1.private.jwk"
    os.chmod(key, 0o644)
    result = run("events", "decrypt", "--key", str(key), input=envelope.to_json())
    assert result.exit_code == 2 and "chmod 600" in result.output


def plaintext_envelope(type_="shop.order.created"):
    from outbox.envelope import Envelope
    from tests.outbox.crypto_helpers import attributes

    a = attributes(type_)
    return Envelope.from_attributes({**a, "specversion": "1.0", "datacontenttype": "application/json"},
                                    json.dumps({"email": CANARY}).encode())


def test_decrypt_with_a_key_and_no_policy_rejects_a_plaintext_event(tmp_path, monkeypatch):
    world = make_world(tmp_path / "world")
    monkeypatch.chdir(tmp_path)  # no policy file here: the default of --policy applies
    key = str(world.keys / "billing-1.private.jwk")
    result = run("events", "decrypt", "--key", key, "--keys-dir", str(world.keys),
                 input=plaintext_envelope().to_json() + b"\n")
    assert result.exit_code == 1 and "plaintext" in result.output, result.output


def test_decrypt_applies_the_configured_policy_file_by_default(tmp_path, monkeypatch):
    world = make_world(tmp_path / "world")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "strangler-policy.toml").write_text(  # the world's policy, moved where the config looks
        world.policy_path.read_text().replace('types = ["shop.heartbeat"]', 'types = ["shop.stock.*"]')
    )
    key = str(world.keys / "billing-1.private.jwk")
    allowed = run("events", "decrypt", "--key", key, "--keys-dir", str(world.keys),
                  input=plaintext_envelope("shop.stock.changed").to_json() + b"\n")
    assert allowed.exit_code == 0, allowed.output
    refused = run("events", "decrypt", "--key", key, "--keys-dir", str(world.keys),
                  input=plaintext_envelope("shop.order.created").to_json() + b"\n")
    assert refused.exit_code == 1, refused.output


def test_tail_says_when_it_found_no_events(tmp_path):
    result = run("events", "tail", "--router", f"file://{tmp_path}/evnets", "--destination", "order")
    assert result.exit_code == 0
    assert f"no events on order at file://{tmp_path}/evnets" in result.output


def test_tail_shows_a_line_that_is_not_a_cloudevent_and_exits_1(tmp_path):
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "order.jsonl").write_text("not json at all\n")
    result = run("events", "tail", "--router", f"file://{tmp_path}/events", "--destination", "order")
    assert result.exit_code == 1 and "NOT A CLOUDEVENT" in result.output
