"""A consumer the policy sends encrypted events to refuses to start without its own private key.

Started anyway, it would reject and ack its whole backlog as "not for us".
"""

from __future__ import annotations

import pytest

from outbox.consumer import Consumer
from outbox.crypto import KeyFileError, new_key
from sample_monolith.services.notifications.__main__ import main as notifications_main

POLICY = '[readers]\n"shop.order.*" = ["billing", "notifications"]\n[trust]\nbilling = ["shop"]\nnotifications = ["shop"]\n'


@pytest.fixture
def policy(tmp_path):
    path = tmp_path / "strangler-policy.toml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def shop_keys_only(tmp_path):
    """A keys folder with the producer's key and another service's, but none of billing's."""
    keys = tmp_path / "keys"
    new_key(keys, "shop", producer=True)
    new_key(keys, "crm")
    return keys


def test_a_reader_without_its_private_key_refuses_to_start_and_says_how_to_fix_it(inbox_engine, shop_keys_only, policy):
    with pytest.raises(KeyFileError) as refused:
        Consumer("billing", inbox_engine, keys_dir=str(shop_keys_only), policy=str(policy))

    message = str(refused.value)
    assert "'billing'" in message and str(shop_keys_only) in message and "shop.order.*" in message
    assert "strangler keys new billing" in message and "billing-N.private.jwk" in message


def test_an_empty_keys_folder_is_refused_too(inbox_engine, tmp_path, policy):
    empty = tmp_path / "empty"
    empty.mkdir()

    with pytest.raises(KeyFileError, match="strangler keys new billing"):
        Consumer("billing", inbox_engine, keys_dir=str(empty), policy=str(policy))


def test_a_reader_with_its_private_key_starts(inbox_engine, shop_keys_only, policy):
    new_key(shop_keys_only, "billing")

    assert Consumer("billing", inbox_engine, keys_dir=str(shop_keys_only), policy=str(policy)).opener is not None


def test_a_service_the_policy_gives_nothing_encrypted_to_read_needs_no_key(inbox_engine, shop_keys_only, policy):
    # It may still read the plaintext types the policy allows; it can decrypt nothing, and is sent nothing encrypted.
    assert Consumer("analytics", inbox_engine, keys_dir=str(shop_keys_only), policy=str(policy)).opener is not None


def notifications_args(tmp_path, *extra: str) -> list[str]:
    return ["--db", f"sqlite:///{tmp_path}/notifications.db", "--router", f"file://{tmp_path}/events",
            "--spool", str(tmp_path / "mail.jsonl"), "--until-idle", "--poll", "0.1", *extra]


def test_the_notifications_service_without_its_key_exits_2_with_one_line(tmp_path, shop_keys_only, policy, capsys):
    code = notifications_main(notifications_args(tmp_path, "--keys-dir", str(shop_keys_only), "--policy", str(policy)))

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("notifications: ") and "strangler keys new notifications" in err


def test_the_notifications_service_wants_keys_dir_and_policy_together(tmp_path, shop_keys_only, capsys):
    with pytest.raises(SystemExit) as exited:
        notifications_main(notifications_args(tmp_path, "--keys-dir", str(shop_keys_only)))

    assert exited.value.code == 2
    assert "--keys-dir and --policy go together" in capsys.readouterr().err


def test_the_notifications_help_says_what_happens_without_keys(capsys):
    with pytest.raises(SystemExit):
        notifications_main(["--help"])

    help_text = capsys.readouterr().out
    assert "--keys-dir and --policy go together" in help_text
    assert "reads only plaintext events" in help_text and "dead-letters every encrypted one" in help_text
