"""The extracted notifications service: order events in, one confirmation per order out."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from outbox import Envelope, emit, outbox_table, settings
from outbox import migrate as outbox_migrate
from outbox.routers import open_router
from sample_monolith.services.notifications import build_consumer, dispatch_mail, migrate, render_confirmation
from outbox.testing.services import require_module
from toolkit.cli import cli

@pytest.fixture(autouse=True)
def _crypto_extra():
    require_module("joserfc", "crypto")


@pytest.fixture
def crypto(tmp_path, monkeypatch):
    """Keys and a policy: only notifications reads order events; it trusts the shop."""
    keys = tmp_path / "keys"
    policy = tmp_path / "strangler-policy.toml"
    policy.write_text('[readers]\n"shop.order.*" = ["notifications"]\n"shop.customer.*" = ["crm"]\n'
                      '[trust]\nnotifications = ["shop"]\n')
    for args in (["--producer", "shop"], ["notifications"], ["crm"]):
        assert CliRunner().invoke(cli, ["keys", "new", *args, "--keys-dir", str(keys)]).exit_code == 0
    monkeypatch.setenv("STRANGLER_SOURCE", "/shop")
    monkeypatch.setenv("STRANGLER_CRYPTO_POLICY", str(policy))
    monkeypatch.setenv("STRANGLER_CRYPTO_KEYS_DIR", str(keys))
    settings.reset()
    return keys, policy


def publish_outbox(shop_url, router_url):
    """Publish every outbox row to the router, as the relay does."""
    engine = create_engine(shop_url)
    with engine.connect() as conn:
        envelopes = [Envelope.from_row(r) for r in conn.execute(select(outbox_table).order_by(outbox_table.c.position))]
    engine.dispose()
    router = open_router(router_url)
    assert all(result.ok for result in router.publish(envelopes))
    router.close()
    return envelopes


def emit_orders(shop_url, orders):
    outbox_migrate.upgrade(outbox_migrate.standalone_config(shop_url))
    engine = create_engine(shop_url)
    with Session(engine) as session:
        emit(session, "shop.customer.created", aggregate="customer", key=1, data={"email": "ada@example.com"})
        for order in orders:
            emit(session, "shop.order.created", aggregate="order", key=order["id"], data=order)
        emit(session, "shop.order.updated", aggregate="order", key=1, data={**orders[0], "status": "paid"})
        session.commit()
    engine.dispose()


ORDERS = [
    {"id": 1, "email": "ada@example.com", "ship_to_name": "Ada Example0", "total_cents": 4300, "status": "placed"},
    {"id": 2, "email": "grace@example.com", "ship_to_name": "Grace Example1", "total_cents": 1250, "status": "placed"},
]


def test_each_order_is_confirmed_once_even_when_events_arrive_twice(tmp_path, crypto):
    keys, policy = crypto
    shop_url = f"sqlite:///{tmp_path}/shop.db"
    router_url = f"file://{tmp_path}/events"
    emit_orders(shop_url, ORDERS)
    publish_outbox(shop_url, router_url)
    publish_outbox(shop_url, router_url)  # at-least-once: everything delivered a second time

    engine = create_engine(f"sqlite:///{tmp_path}/notifications.db")
    migrate(engine)
    consumer = build_consumer(engine, keys_dir=str(keys), policy=str(policy))
    stats = consumer.run(router_url, destinations=["order"], until_idle=True, poll=0.2, install_signals=False)
    spool = tmp_path / "mail.jsonl"
    assert dispatch_mail(engine, str(spool)) == 2
    assert dispatch_mail(engine, str(spool)) == 0
    engine.dispose()

    sent = [json.loads(line) for line in spool.read_text().splitlines()]
    assert sent == [render_confirmation(o["id"], o["email"], o["ship_to_name"], o["total_cents"]) for o in ORDERS]
    assert (stats.handled, stats.duplicate) == (3, 3)


def test_the_service_reads_no_event_it_cannot_verify(tmp_path, crypto, monkeypatch):
    keys, policy = crypto
    shop_url = f"sqlite:///{tmp_path}/shop.db"
    router_url = f"file://{tmp_path}/events"
    monkeypatch.setenv("STRANGLER_CRYPTO_ENCRYPT_AT", "off")  # a producer that skipped encryption
    settings.reset()
    emit_orders(shop_url, ORDERS)
    publish_outbox(shop_url, router_url)

    engine = create_engine(f"sqlite:///{tmp_path}/notifications.db")
    migrate(engine)
    consumer = build_consumer(engine, keys_dir=str(keys), policy=str(policy))
    stats = consumer.run(router_url, destinations=["order"], until_idle=True, poll=0.2, install_signals=False)
    assert dispatch_mail(engine, str(tmp_path / "mail.jsonl")) == 0
    assert stats.handled == 0 and stats.rejected + stats.dead == 3
    engine.dispose()


def test_events_dead_lettered_while_the_keys_were_missing_are_handled_by_a_retry_once_they_are_there(
        tmp_path, crypto, capsys):
    from sample_monolith.services.notifications.__main__ import main

    keys, policy = crypto
    shop_url = f"sqlite:///{tmp_path}/shop.db"
    router_url = f"file://{tmp_path}/events"
    emit_orders(shop_url, ORDERS)
    publish_outbox(shop_url, router_url)
    service_db = f"sqlite:///{tmp_path}/notifications.db"
    spool = tmp_path / "mail.jsonl"
    # Deployed without its keys: it reads no encrypted event, and dead-letters each.
    assert main(["--db", service_db, "--router", router_url, "--spool", str(spool), "--until-idle", "--poll", "0.2"]) == 0
    assert not spool.exists()

    retried = main(["--db", service_db, "--keys-dir", str(keys), "--policy", str(policy), "--spool", str(spool),
                    "--retry-dead-letters"])

    assert retried == 0
    outcomes = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(o["outcome"], o["reason"]) for o in outcomes] == [("handled", "not-for-us")] * 3
    sent = [json.loads(line) for line in spool.read_text().splitlines()]
    assert sent == [render_confirmation(o["id"], o["email"], o["ship_to_name"], o["total_cents"]) for o in ORDERS]
    assert main(["--db", service_db, "--keys-dir", str(keys), "--policy", str(policy), "--spool", str(spool),
                 "--retry-dead-letters"]) == 0  # nothing left
    assert len(spool.read_text().splitlines()) == 2


def test_the_service_needs_a_router_or_the_retry_not_both(tmp_path):
    from sample_monolith.services.notifications.__main__ import main

    for extra in ([], ["--router", "file://./events", "--retry-dead-letters"]):
        with pytest.raises(SystemExit) as exited:
            main(["--db", f"sqlite:///{tmp_path}/n.db", "--spool", str(tmp_path / "m.jsonl"), *extra])
        assert exited.value.code == 2
