"""With emit-time encryption the relay never forwards a plaintext row of a type the policy encrypts.

A monolith process that ran without the policy writes plaintext; the relay,
reading the same policy, refuses those rows (a permanent failure of each, the
reason kept) and publishes nothing readable. Running it once with
``encrypt_at = "relay"`` seals and publishes them.
"""

from __future__ import annotations

import json
import time

from click.testing import CliRunner
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from outbox import emit, outbox_table, settings
from outbox import migrate as outbox_migrate
from outbox.testing.services import require_module
from toolkit.cli import cli

POLICY = (
    '[readers]\n"shop.order.*" = ["notifications"]\n[trust]\nnotifications = ["shop"]\n'
    '[plaintext]\ntypes = ["shop.stock.*"]\n'
)


def emit_plaintext(url: str, monkeypatch) -> None:
    """What a worker started without the policy writes."""
    monkeypatch.setenv("STRANGLER_CRYPTO_ENCRYPT_AT", "off")
    settings.reset()
    engine = create_engine(url)
    with Session(engine) as session:
        emit(session, "shop.order.created", aggregate="order", key=1, data={"email": "canary@example.com"})
        emit(session, "shop.stock.changed", aggregate="stock", key=7, data={"left": 3})
        session.commit()
    engine.dispose()
    monkeypatch.delenv("STRANGLER_CRYPTO_ENCRYPT_AT")
    settings.reset()


def published(folder) -> str:
    return "".join(path.read_text() for path in sorted(folder.glob("*.jsonl")))


def test_plaintext_of_an_encrypted_type_is_refused_and_sealing_in_the_relay_recovers_it(
    monkeypatch, tmp_path, sqlite_url
):
    require_module("joserfc", "crypto")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args in (["keys", "new", "--producer", "shop"], ["keys", "new", "notifications"]):
        assert runner.invoke(cli, [*args, "--keys-dir", ".strangler/keys"]).exit_code == 0
    (tmp_path / "strangler-policy.toml").write_text(POLICY)
    outbox_migrate.upgrade(outbox_migrate.standalone_config(sqlite_url))
    emit_plaintext(sqlite_url, monkeypatch)
    relay = ["relay", "--db", sqlite_url, "--router", "file://./events", "--once"]
    monkeypatch.setenv("STRANGLER_RELAY_RETRY_BASE", "0.05")  # the refused row's next try falls due at once

    refused = runner.invoke(cli, relay)

    assert refused.exit_code != 0
    assert "canary@example.com" not in published(tmp_path / "events")
    assert '"left":3' in published(tmp_path / "events")  # the type the policy lets travel in plaintext
    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        order = conn.execute(select(outbox_table).where(outbox_table.c.type == "shop.order.created")).one()
    assert order.published_at is None and order.attempts == 1
    assert "must be encrypted" in order.last_error and "encrypt_at = 'relay'" in order.last_error

    monkeypatch.setenv("STRANGLER_CRYPTO_ENCRYPT_AT", "relay")
    time.sleep(0.1)
    sealed = runner.invoke(cli, relay)

    assert sealed.exit_code == 0, sealed.output
    lines = [json.loads(line) for line in published(tmp_path / "events").splitlines()]
    order_events = [event for event in lines if event["type"] == "shop.order.created"]
    assert [event["datacontenttype"] for event in order_events] == ["application/jose+json"]
    assert "canary@example.com" not in published(tmp_path / "events")
    engine.dispose()


def test_without_a_policy_file_the_relay_forwards_rows_as_written(monkeypatch, tmp_path, sqlite_url):
    monkeypatch.chdir(tmp_path)
    outbox_migrate.upgrade(outbox_migrate.standalone_config(sqlite_url))
    emit_plaintext(sqlite_url, monkeypatch)

    result = CliRunner().invoke(cli, ["relay", "--db", sqlite_url, "--router", "file://./events", "--once"])

    assert result.exit_code == 0, result.output
    assert "canary@example.com" in published(tmp_path / "events")


def test_a_policy_named_but_missing_stops_the_relay_with_exit_2(monkeypatch, tmp_path, sqlite_url):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STRANGLER_CRYPTO_POLICY", "policies/shop.toml")
    outbox_migrate.upgrade(outbox_migrate.standalone_config(sqlite_url))

    result = CliRunner().invoke(cli, ["relay", "--db", sqlite_url, "--router", "file://./events", "--once"])

    assert result.exit_code == 2 and "crypto.policy = 'policies/shop.toml': no such file" in result.output
