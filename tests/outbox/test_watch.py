"""The watch on real brokers: ordinary traffic raises nothing; each suspicious pattern raises exactly its alert.

Every test runs the same shop: a monolith emits encrypted order and customer
events in real transactions, the relay publishes them, billing, shipping and
crm consume them with their inboxes, and the watch reads the router as its
own group with every rule kind on. A pattern is then added on top. Each
test runs on the file router, Redis Streams and NATS JetStream (its own streams, removed after).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import textwrap
import uuid

import pytest
from sqlalchemy import create_engine, update

import outbox
from outbox import emit, inbox
from outbox.consumer import Consumer
from outbox.crypto import KeyRing, Sealer, new_key, retire_key, rotate_key
from outbox.migrate import standalone_config, upgrade
from outbox.relay import Relay
from outbox.routers import open_router
from outbox.table import get_outbox_table
from outbox.testing.services import service_url
from outbox.watch import Watch, load_rules
from outbox.watch.run import run_watch
from outbox.watch.sources import OutboxLedger, group_lister, signer_of
from tests.outbox.crypto_helpers import make_world, sealed_envelope

RULES = """
[[rule]]
name = "mass-deletion"
kind = "rate"
type = "shop.customer.deleted"
max = 3
window = "1m"

[[rule]]
name = "order-flood"
kind = "rate"
type = "shop.order.*"
max = 200
window = "1m"

[[rule]]
name = "hot-subject"
kind = "burst"
max = 5
window = "1m"

[[rule]]
name = "shop-only"
kind = "source"
type = "shop.*"
sources = ["/shop"]
producers = ["shop"]

[[rule]]
name = "keys"
kind = "key"
keys_dir = "keys"
grace = "1ms"

[[rule]]
name = "readers"
kind = "groups"
policy = "strangler-policy.toml"

[[rule]]
name = "outbox-vs-broker"
kind = "gap"
grace = "1ms"
window = "10m"
"""


class Shop:
    """The monolith, its relay, its services and a watch over its router, in one folder."""

    def __init__(self, tmp_path, db_url, router_url=None, suffix=""):
        self.tmp = tmp_path
        # Aggregate types name the destinations: unique ones keep a shared broker's streams apart.
        self.order, self.customer = f"order{suffix}", f"customer{suffix}"
        self.destinations = [self.order, self.customer]
        self.world = make_world(tmp_path)
        self.db_url = db_url
        upgrade(standalone_config(db_url))
        self.engine = create_engine(db_url)
        self.router_url = router_url or f"file://{tmp_path}/events"
        self.rules_path = tmp_path / "strangler-watch.toml"
        self.rules_path.write_text(RULES)
        self.sealer = self.world.sealer()
        outbox.configure(source="/shop", sealer=self.sealer)
        self.services = {}
        for name, types, destinations in (
            ("billing", "shop.order.*", [self.order]),
            ("shipping", "shop.order.*", [self.order]),
            ("crm", "shop.customer.*", [self.customer]),
        ):
            url = f"sqlite:///{tmp_path}/{name}.db"
            inbox.upgrade(url)
            consumer = Consumer(
                name,
                create_engine(url),
                keys_dir=str(self.world.keys),
                policy=str(self.world.policy_path),
            )
            consumer.add_handler(types, lambda event, session: None)
            self.services[name] = (consumer, destinations)

    def ordinary_day(self, orders: int = 20) -> None:
        """Orders placed, paid and shipped; customers registering; one customer leaving."""
        for n in range(orders):
            with self.engine.begin() as conn:
                emit(
                    conn,
                    "shop.order.created",
                    aggregate=self.order,
                    key=n,
                    data={"id": n, "total": 10 + n},
                )
            with self.engine.begin() as conn:
                emit(conn, "shop.order.paid", aggregate=self.order, key=n, data={"id": n})
                emit(conn, "shop.order.shipped", aggregate=self.order, key=n, data={"id": n})
        for n in range(5):
            with self.engine.begin() as conn:
                emit(
                    conn, "shop.customer.registered", aggregate=self.customer, key=n, data={"id": n}
                )
        with self.engine.begin() as conn:
            emit(conn, "shop.customer.deleted", aggregate=self.customer, key=1, data={"id": 1})

    def relay(self) -> None:
        router = open_router(self.router_url)
        try:
            Relay(self.engine, router).drain()
        finally:
            router.close()

    def consume(self) -> None:
        for consumer, destinations in self.services.values():
            consumer.run(
                self.router_url,
                destinations=destinations,
                until_idle=True,
                install_signals=False,
                poll=0.05,
            )

    def publish_directly(self, *envelopes) -> None:
        """What a forged producer holding broker credentials does: write to the broker, not the outbox."""
        router = open_router(self.router_url)
        try:
            assert all(r.ok for r in router.publish(list(envelopes)))
        finally:
            router.close()

    def watch(self, *, reader: str | None = "billing") -> list:
        alerts = []
        ledger = OutboxLedger(self.engine, destinations=self.destinations)
        lister = group_lister(self.router_url, self.destinations)
        watch = Watch(
            load_rules(self.rules_path), sinks=[alerts.append], group_lister=lister, ledger=ledger
        )
        kid_of = signer_of(self.world.opener(reader)) if reader else None
        try:
            run_watch(
                watch,
                self.router_url,
                self.destinations,
                once=True,
                poll=0.05,
                producer_kid_of=kid_of,
            )
        finally:
            getattr(lister, "close", lambda: None)()
        return alerts

    def envelope(self, sealer, data, **attrs):
        """An order event as the relay would publish it, routed to this shop's order destination."""
        return dataclasses.replace(sealed_envelope(sealer, data, **attrs), aggregatetype=self.order)

    def close(self):
        outbox.configure(sealer=None)
        if self.router_url.startswith("redis"):
            import redis

            client = redis.Redis.from_url(self.router_url)
            client.delete(*self.destinations)
            client.close()
        elif self.router_url.startswith("nats"):
            import asyncio

            import nats

            async def drop():
                connection = await nats.connect(self.router_url)
                for stream in self.destinations:
                    try:
                        await connection.jetstream().delete_stream(stream)
                    except nats.js.errors.NotFoundError:
                        pass
                await connection.close()

            asyncio.run(drop())
        self.engine.dispose()
        for consumer, _ in self.services.values():
            consumer.sessions.kw["bind"].dispose()


@pytest.fixture(params=["file", "redis", "nats"])
def shop(request, tmp_path, sqlite_url):
    if request.param in ("redis", "nats"):
        url = service_url(request.param)
        shop = Shop(tmp_path, sqlite_url, url, suffix=f"_{uuid.uuid4().hex[:8]}")
    else:
        shop = Shop(tmp_path, sqlite_url)
    yield shop
    shop.close()


def day(shop: Shop) -> None:
    shop.ordinary_day()
    shop.relay()
    shop.consume()


def summary(alerts) -> list[tuple[str, str]]:
    return sorted((a.rule, a.kind) for a in alerts)


def test_an_ordinary_day_raises_no_alert(shop):
    day(shop)
    assert shop.watch() == []


def test_ordinary_traffic_on_every_database_raises_no_alert(tmp_path, database_url):
    shop = Shop(tmp_path, database_url)
    try:
        day(shop)
        assert shop.watch() == []
    finally:
        shop.close()


def test_more_deletions_in_a_minute_than_allowed_raise_one_rate_alert_with_every_id(shop):
    day(shop)
    deleted = []
    for n in range(10, 14):
        with shop.engine.begin() as conn:
            deleted.append(
                emit(conn, "shop.customer.deleted", aggregate=shop.customer, key=n, data={"id": n})
            )
    shop.relay()

    alerts = shop.watch()

    assert summary(alerts) == [("mass-deletion", "rate")]
    alert = alerts[0]
    assert alert.count == 4 and alert.window_seconds == 60
    # The ordinary day's deletion is in the same minute: the first four ids are evidence.
    assert set(deleted[:3]) <= set(alert.evidence)
    assert "shop.customer.deleted" in alert.summary and alert.look_at


def test_one_order_changed_again_and_again_raises_one_burst_alert_naming_the_subject(shop):
    day(shop)
    for _ in range(4):
        with shop.engine.begin() as conn:
            emit(conn, "shop.order.updated", aggregate=shop.order, key=3, data={"id": 3})
    shop.relay()

    alerts = shop.watch()

    assert summary(alerts) == [("hot-subject", "burst")]
    assert alerts[0].details["subject"] == "3" and alerts[0].count == 6


def test_an_event_from_another_source_raises_one_source_alert(shop):
    day(shop)
    forged = shop.envelope(shop.sealer, {"id": 99}, source="/intruder")
    shop.publish_directly(forged)

    alerts = shop.watch()

    # Written to the broker directly, it is also missing from the outbox: the gap rule says so too.
    assert summary(alerts) == [("outbox-vs-broker", "gap"), ("shop-only", "source")]
    source = next(a for a in alerts if a.kind == "source")
    assert source.evidence == [forged.id] and source.details["source"] == "/intruder"
    gap = next(a for a in alerts if a.kind == "gap")
    assert gap.details["gap"] == "not-in-outbox" and gap.evidence == [forged.id]


def test_an_event_signed_by_another_producer_key_raises_a_producer_alert_for_a_reader(shop):
    day(shop)
    new_key(shop.world.keys, "rogue", producer=True)
    rogue = Sealer(KeyRing.load(shop.world.keys), shop.world.policy, producer="rogue")
    with shop.engine.begin() as conn:  # a second producer writing to the same outbox
        outbox.configure(sealer=rogue)
        event_id = emit(conn, "shop.order.created", aggregate=shop.order, key=77, data={"id": 77})
    shop.relay()

    alerts = shop.watch()

    assert summary(alerts) == [("shop-only", "source")]
    assert alerts[0].details["producer_kid"] == "rogue-1" and alerts[0].evidence == [event_id]
    # A restarted watch resumes after what its group read: nothing new, no alert.
    assert shop.watch(reader=None) == []


def test_an_event_encrypted_to_a_key_nobody_published_raises_one_unknown_key_alert(shop):
    day(shop)
    elsewhere = shop.tmp / "elsewhere"
    shutil.copytree(shop.world.keys, elsewhere)
    new_key(elsewhere, "exfil")
    policy = shop.tmp / "wide-policy.toml"
    policy.write_text(
        shop.world.policy_path.read_text().replace(
            '["billing", "shipping"]', '["billing", "shipping", "exfil"]'
        )
    )
    from outbox.crypto.policy import load_policy

    wide = Sealer(KeyRing.load(elsewhere), load_policy(policy))
    outbox.configure(sealer=wide)
    with shop.engine.begin() as conn:
        event_id = emit(conn, "shop.order.created", aggregate=shop.order, key=5, data={"id": 5})
    shop.relay()

    alerts = shop.watch()

    assert summary(alerts) == [("keys", "key")]
    assert alerts[0].details == {
        "key": "exfil-1",
        "role": "recipient",
        "problem": "unknown",
        "type": "shop.order.created",
        "source": "/shop",
    }
    assert alerts[0].evidence == [event_id]


def test_an_event_sealed_to_a_retired_key_raises_one_retired_key_alert(shop):
    day(shop)
    stale = shop.tmp / "stale-keys"
    shutil.copytree(shop.world.keys, stale)  # a producer host whose key folder was never synced
    rotate_key(shop.world.keys, "billing")
    retire_key(shop.world.keys, "billing-1")
    outbox.configure(sealer=Sealer(KeyRing.load(stale), shop.world.policy))
    with shop.engine.begin() as conn:
        emit(conn, "shop.order.created", aggregate=shop.order, key=6, data={"id": 6})
    shop.relay()

    alerts = shop.watch()

    assert summary(alerts) == [("keys", "key")]
    assert alerts[0].details["key"] == "billing-1" and alerts[0].details["problem"] == "retired"


def test_a_consumer_group_the_policy_does_not_name_raises_one_groups_alert(shop):
    day(shop)
    analytics = Consumer(
        "analytics",
        create_engine(f"sqlite:///{shop.tmp}/billing.db"),
        opener=shop.world.opener("billing"),
    )
    analytics.add_handler("*", lambda event, session: None)
    analytics.run(
        shop.router_url,
        destinations=[shop.order],
        until_idle=True,
        install_signals=False,
        poll=0.05,
    )

    alerts = shop.watch()

    assert {(a.rule, a.details["group"], a.details["destination"]) for a in alerts} == {
        ("readers", "analytics", shop.order)
    }
    # One alert per type the group can read there: created, paid, shipped.
    assert sorted(a.details["type"] for a in alerts) == [
        "shop.order.created",
        "shop.order.paid",
        "shop.order.shipped",
    ]
    assert all(a.details["readers"] == ["billing", "shipping"] and a.evidence for a in alerts)
    analytics.sessions.kw["bind"].dispose()


def test_events_marked_published_but_missing_on_the_broker_raise_one_gap_alert(shop):
    day(shop)
    with shop.engine.begin() as conn:
        lost = emit(conn, "shop.order.created", aggregate=shop.order, key=50, data={"id": 50})
    table = get_outbox_table()
    with shop.engine.begin() as conn:  # a relay that marks before the broker's ack, then crashes
        conn.execute(
            update(table)
            .where(table.c.id == lost)
            .values(published_at=dt.datetime.now(dt.timezone.utc))
        )

    alerts = shop.watch()

    assert summary(alerts) == [("outbox-vs-broker", "gap")]
    assert alerts[0].details["gap"] == "missing-on-broker" and alerts[0].evidence == [lost]


def test_a_groups_rule_needs_a_policy_file_that_exists(tmp_path):
    from outbox.watch import RulesError

    rules = tmp_path / "rules.toml"
    rules.write_text(
        textwrap.dedent("""
        [[rule]]
        name = "readers"
        kind = "groups"
        policy = "missing-policy.toml"
    """)
    )
    with pytest.raises(RulesError, match=r"rule 'readers': key 'policy': .*missing-policy.toml"):
        Watch(load_rules(rules))
