"""A monolith is configured by its environment: the same STRANGLER_* variables as the command."""

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


def test_source_and_table_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("STRANGLER_SOURCE", "/shop")
    monkeypatch.setenv("STRANGLER_OUTBOX_TABLE", "shop_events")
    conf = settings.current()
    assert (conf.source, conf.table_name, conf.sealer) == ("/shop", "shop_events", None)


def test_a_policy_in_the_environment_seals_events_at_emit(monkeypatch, tmp_path, sqlite_url):
    require_module("joserfc", "crypto")
    keys = tmp_path / "keys"
    policy = tmp_path / "policy.toml"
    policy.write_text('[readers]\n"shop.order.*" = ["notifications"]\n[trust]\nnotifications = ["shop"]\n')
    runner = CliRunner()
    for args in (["keys", "new", "--producer", "shop"], ["keys", "new", "notifications"]):
        result = runner.invoke(cli, [*args, "--keys-dir", str(keys)])
        assert result.exit_code == 0, result.output
    monkeypatch.setenv("STRANGLER_SOURCE", "/shop")
    monkeypatch.setenv("STRANGLER_CRYPTO_POLICY", str(policy))
    monkeypatch.setenv("STRANGLER_CRYPTO_KEYS_DIR", str(keys))

    outbox_migrate.upgrade(outbox_migrate.standalone_config(sqlite_url))
    engine = create_engine(sqlite_url)
    with Session(engine) as session:
        emit(session, "shop.order.created", aggregate="order", key=1, data={"email": "canary@example.com"})
        session.commit()
        with pytest.raises(Exception, match="shop.customer.created"):
            emit(session, "shop.customer.created", aggregate="customer", key=1)  # no policy entry
    with engine.connect() as conn:
        row = conn.execute(select(outbox_table)).one()
    engine.dispose()
    assert row.content_type == "application/jose+json"
    assert b"canary@example.com" not in row.payload
    assert "notifications-1" in json.dumps(json.loads(row.payload))


def test_encrypt_at_off_leaves_events_plain(monkeypatch, tmp_path):
    monkeypatch.setenv("STRANGLER_CRYPTO_POLICY", str(tmp_path / "missing.toml"))
    monkeypatch.setenv("STRANGLER_CRYPTO_ENCRYPT_AT", "off")
    assert settings.current().sealer is None
