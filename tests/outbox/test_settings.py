"""A monolith is configured as the command is: strangler.toml, then the STRANGLER_* variables."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from outbox import emit, outbox_table, settings
from outbox import migrate as outbox_migrate
from outbox.testing.services import require_module
from toolkit.cli import cli
from toolkit.config import ConfigError


def test_source_and_table_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("STRANGLER_SOURCE", "/shop")
    monkeypatch.setenv("STRANGLER_OUTBOX_TABLE", "shop_events")
    conf = settings.current()
    assert (conf.source, conf.table_name, conf.sealer) == ("/shop", "shop_events", None)


def make_keys(keys, *services):
    runner = CliRunner()
    for args in (["keys", "new", "--producer", "shop"], *(["keys", "new", name] for name in services)):
        result = runner.invoke(cli, [*args, "--keys-dir", str(keys)])
        assert result.exit_code == 0, result.output


POLICY = '[readers]\n"shop.order.*" = ["notifications"]\n[trust]\nnotifications = ["shop"]\n'


def emitted_row(url: str):
    """Emit one order event carrying a customer's e-mail with the settings in force; return its outbox row."""
    outbox_migrate.upgrade(outbox_migrate.standalone_config(url))
    engine = create_engine(url)
    with Session(engine) as session:
        emit(session, "shop.order.created", aggregate="order", key=1, data={"email": "canary@example.com"})
        session.commit()
        with pytest.raises(Exception, match="shop.customer.created"):
            emit(session, "shop.customer.created", aggregate="customer", key=1)  # no policy entry
    with engine.connect() as conn:
        row = conn.execute(select(outbox_table)).one()
    engine.dispose()
    return row


def test_a_policy_in_the_environment_seals_events_at_emit(monkeypatch, tmp_path, sqlite_url):
    require_module("joserfc", "crypto")
    make_keys(tmp_path / "keys", "notifications")
    (tmp_path / "policy.toml").write_text(POLICY)
    monkeypatch.setenv("STRANGLER_SOURCE", "/shop")
    monkeypatch.setenv("STRANGLER_CRYPTO_POLICY", str(tmp_path / "policy.toml"))
    monkeypatch.setenv("STRANGLER_CRYPTO_KEYS_DIR", str(tmp_path / "keys"))

    row = emitted_row(sqlite_url)

    assert row.content_type == "application/jose+json"
    assert b"canary@example.com" not in row.payload
    assert "notifications-1" in json.dumps(json.loads(row.payload))


def test_encrypt_at_off_leaves_events_plain(monkeypatch, tmp_path):
    monkeypatch.setenv("STRANGLER_CRYPTO_POLICY", str(tmp_path / "missing.toml"))
    monkeypatch.setenv("STRANGLER_CRYPTO_ENCRYPT_AT", "off")
    assert settings.current().sealer is None


def test_the_projects_strangler_toml_configures_emit(monkeypatch, tmp_path, sqlite_url):
    require_module("joserfc", "crypto")
    make_keys(tmp_path / "secrets", "notifications")
    (tmp_path / "rules.toml").write_text(POLICY)
    (tmp_path / "strangler.toml").write_text(
        'source = "/shop"\n[crypto]\nkeys_dir = "secrets"\npolicy = "rules.toml"\n'
    )
    monkeypatch.chdir(tmp_path)  # the file's relative paths are from the working folder, as for the command

    row = emitted_row(sqlite_url)

    assert (row.source, row.content_type) == ("/shop", "application/jose+json")
    assert b"canary@example.com" not in row.payload


def test_the_file_is_found_from_a_subfolder(monkeypatch, tmp_path):
    (tmp_path / "strangler.toml").write_text('source = "/shop"\noutbox_table = "shop_events"\n')
    (tmp_path / "app").mkdir()
    monkeypatch.chdir(tmp_path / "app")
    conf = settings.current()
    assert (conf.source, conf.table_name) == ("/shop", "shop_events")


def test_a_policy_at_the_default_path_turns_sealing_on(monkeypatch, tmp_path):
    require_module("joserfc", "crypto")
    make_keys(tmp_path / ".strangler" / "keys", "notifications")
    (tmp_path / "strangler-policy.toml").write_text(POLICY)
    monkeypatch.chdir(tmp_path)
    assert settings.current().sealer is not None


def test_without_a_policy_file_events_stay_plaintext(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert settings.current().sealer is None


def test_a_policy_named_but_missing_fails_at_the_first_emit(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STRANGLER_CRYPTO_POLICY", "policies/shop.toml")
    with pytest.raises(ConfigError, match=r"STRANGLER_CRYPTO_POLICY: crypto.policy = 'policies/shop.toml': no such file"):
        settings.current()


def test_a_bad_value_names_its_variable(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STRANGLER_CRYPTO_REUSE_EVENTS", "many")
    with pytest.raises(ConfigError, match="STRANGLER_CRYPTO_REUSE_EVENTS"):
        settings.current()
