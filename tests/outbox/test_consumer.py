"""The consumer: verify, decrypt, handle once (inbox), ack after commit, dead-letter failures, keep going."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import Integer, String, create_engine, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from outbox import inbox
from outbox.consumer import Consumer
from outbox.crypto import KeyRing, Opener, new_key, retire_key, rotate_key
from outbox.envelope import JOSE_CONTENT_TYPE
from tests.outbox.crypto_helpers import make_world, sealed_envelope
from tests.outbox.relay_helpers import publish

CANARY = "canary.c0ns@example.com"


class ServiceBase(DeclarativeBase):
    pass


class Invoice(ServiceBase):
    __tablename__ = "invoices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(String(40))
    email: Mapped[str] = mapped_column(String(200))


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


@pytest.fixture
def service_db(sqlite_url):
    inbox.upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    ServiceBase.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def router_url(tmp_path):
    return f"file://{tmp_path}/events"




def order(world, n, sealer=None, **data):
    return sealed_envelope(sealer or world.sealer(), {"id": n, "email": CANARY, **data}, subject=str(n))


def billing(world, engine, **options) -> Consumer:
    consumer = Consumer("billing", engine, keys_dir=str(world.keys), policy=str(world.policy_path), **options)

    @consumer.handler("shop.order.created")
    def invoice(event, session):
        if event.data.get("fail"):
            raise RuntimeError(f"cannot invoice order {event.data['id']}")
        session.add(Invoice(order_id=str(event.data["id"]), email=event.data["email"]))

    return consumer


def invoices(engine) -> list[str]:
    with engine.connect() as conn:
        return [row.order_id for row in conn.execute(select(Invoice).order_by(Invoice.id))]


def test_handler_gets_decrypted_data_and_a_session_and_writes_commit_with_the_inbox(world, service_db, router_url):
    publish(router_url, [order(world, 1), order(world, 2)])
    consumer = billing(world, service_db)
    stats = consumer.run(router_url, destinations=["order"], until_idle=True, poll=0.1)
    assert (stats.handled, stats.dead, stats.rejected) == (2, 0, 0)
    assert invoices(service_db) == ["1", "2"]
    with service_db.connect() as conn:
        recorded = conn.execute(select(inbox.inbox_table)).all()
    assert {r.outcome for r in recorded} == {"handled"} and {r.consumer for r in recorded} == {"billing"}
    # Acked: the group's next run finds nothing new.
    assert billing(world, service_db).run(router_url, destinations=["order"], until_idle=True, poll=0.1).total() == 0


@pytest.mark.parametrize("backend_url", ["sqlite_url", "postgresql_url", "mariadb_url"])
def test_a_redelivered_event_has_no_second_effect(world, router_url, backend_url, request):
    url = request.getfixturevalue(backend_url)
    inbox.upgrade(url)
    engine = create_engine(url)
    ServiceBase.metadata.create_all(engine)
    try:
        event = order(world, 7)
        publish(router_url, [event, event])  # at-least-once: the relay published it twice
        consumer = billing(world, engine)
        stats = consumer.run(router_url, destinations=["order"], until_idle=True, poll=0.1)
        # A second group re-reads the whole stream: redelivery of everything.
        again = billing(world, engine).run(router_url, destinations=["order"], group="billing-replay",
                                           until_idle=True, poll=0.1)
        assert (stats.handled, stats.duplicate, again.handled, again.duplicate) == (1, 1, 0, 2)
        assert invoices(engine) == ["7"]
    finally:
        engine.dispose()


def test_a_failing_handler_dead_letters_its_event_and_the_service_keeps_going(world, service_db, router_url):
    publish(router_url, [order(world, 1), order(world, 2, fail=True), order(world, 3)])
    consumer = billing(world, service_db)
    stats = consumer.run(router_url, destinations=["order"], until_idle=True, poll=0.1)
    assert (stats.handled, stats.dead) == (2, 1)
    assert invoices(service_db) == ["1", "3"]  # the failed handler's writes rolled back
    [dead] = consumer.dead_letters()
    assert dead["reason"] == "handler" and "RuntimeError: cannot invoice order 2" in dead["error"]
    assert json.loads(dead["event"])["datacontenttype"] == JOSE_CONTENT_TYPE
    assert CANARY.encode() not in dead["event"]  # dead letters hold only ciphertext
    # Redelivered later: recorded as dead in the inbox, so no second dead letter.
    billing(world, service_db).run(router_url, destinations=["order"], group="again", until_idle=True, poll=0.1)
    assert len(consumer.dead_letters()) == 1


def test_a_failing_handlers_message_goes_to_its_dead_letter_and_not_to_the_log(world, service_db, router_url,
                                                                             caplog):
    """A handler's message may quote the data; the log names the exception and where it was raised."""
    publish(router_url, [order(world, 2, fail=True)])
    consumer = Consumer("billing", service_db, keys_dir=str(world.keys), policy=str(world.policy_path))

    @consumer.handler("shop.order.created")
    def charge(event, session):
        raise ValueError(f"card declined for {event.data['email']}")

    with caplog.at_level("WARNING", logger="outbox.consumer"):
        consumer.run(router_url, destinations=["order"], until_idle=True, poll=0.1, install_signals=False)

    [dead] = consumer.dead_letters()
    assert CANARY in dead["error"]  # in the service's own database, for whoever fixes the handler
    assert CANARY not in caplog.text
    assert "ValueError at " in caplog.text and "in charge (its message is in the dead letter)" in caplog.text


def test_forged_tampered_and_foreign_events_are_dead_lettered_with_the_reason_never_handled(
    world, service_db, router_url, tmp_path
):
    forger_keys = tmp_path / "forger"
    forger_keys.mkdir()
    for name in ("billing-1.jwk", "shipping-1.jwk"):
        (forger_keys / name).write_bytes((world.keys / name).read_bytes())
    new_key(forger_keys, "mallory", producer=True)
    forged = order(world, 66, sealer=type(world)(forger_keys, world.policy_path).sealer())
    genuine = order(world, 1)
    swapped = type(genuine).from_structured({**genuine.to_structured(), "type": "shop.order.created",
                                             "subject": "999"})
    publish(router_url, [forged, swapped, order(world, 2)])
    consumer = billing(world, service_db)
    stats = consumer.run(router_url, destinations=["order"], until_idle=True, poll=0.1)
    assert (stats.handled, stats.rejected) == (1, 2)
    assert invoices(service_db) == ["2"]
    reasons = [d["reason"] for d in consumer.dead_letters()]
    assert reasons == ["untrusted", "mismatch"]


def test_a_service_not_in_the_policy_receives_the_event_and_cannot_decrypt_it(world, service_db, router_url):
    publish(router_url, [order(world, 1)])
    crm = Consumer("crm", service_db, keys_dir=str(world.keys), policy=str(world.policy_path))
    seen = []
    crm.add_handler("shop.order.*", lambda event, session: seen.append(event))
    stats = crm.run(router_url, destinations=["order"], until_idle=True, poll=0.1)
    assert stats.rejected == 1 and seen == []
    [dead] = crm.dead_letters()
    assert dead["reason"] == "not-for-us" and "billing-1, shipping-1" in dead["error"]


def test_events_without_a_handler_are_acked_and_ignored(world, service_db, router_url):
    publish(router_url, [sealed_envelope(world.sealer(), {"id": 5}, "shop.order.shipped")])
    stats = billing(world, service_db).run(router_url, destinations=["order"], until_idle=True, poll=0.1)
    assert stats.ignored == 1 and stats.handled == 0


def test_ack_only_after_commit_an_unrecordable_event_is_redelivered(world, service_db, router_url):
    publish(router_url, [order(world, 1)])
    with service_db.begin() as conn:
        conn.execute(text("ALTER TABLE strangler_inbox RENAME TO strangler_inbox_away"))
    consumer = billing(world, service_db)
    stats = consumer.run(router_url, destinations=["order"], max_events=1, poll=0.1)
    assert stats.retried == 1 and invoices(service_db) == []
    with service_db.begin() as conn:
        conn.execute(text("ALTER TABLE strangler_inbox_away RENAME TO strangler_inbox"))
    stats = billing(world, service_db).run(router_url, destinations=["order"], until_idle=True, poll=0.1)
    assert stats.handled == 1 and invoices(service_db) == ["1"]


def test_stop_returns_after_the_current_event_and_the_rest_waits_for_the_next_run(world, service_db, router_url):
    publish(router_url, [order(world, n) for n in range(1, 6)])
    consumer = billing(world, service_db)
    original = consumer.handler_for("shop.order.created")

    def stop_after_two(event, session):
        original(event, session)
        if event.data["id"] == 2:
            consumer.stop()

    consumer._exact["shop.order.created"] = stop_after_two
    stats = consumer.run(router_url, destinations=["order"], poll=0.1)
    assert stats.handled == 2 and invoices(service_db) == ["1", "2"]
    rest = billing(world, service_db).run(router_url, destinations=["order"], until_idle=True, poll=0.1)
    assert rest.handled == 3 and invoices(service_db) == ["1", "2", "3", "4", "5"]


def test_a_consumer_without_keys_refuses_encrypted_events(world, service_db, router_url):
    publish(router_url, [order(world, 1)])
    consumer = Consumer("billing", service_db)
    consumer.add_handler("shop.order.created", lambda event, session: None)
    assert consumer.run(router_url, destinations=["order"], until_idle=True, poll=0.1).rejected == 1


def test_handler_registry_exact_beats_pattern_and_duplicates_are_refused(service_db):
    consumer = Consumer("billing", service_db)
    exact, pattern = (lambda e, s: None), (lambda e, s: None)
    consumer.add_handler("shop.order.*", pattern)
    consumer.add_handler("shop.order.created", exact)
    assert consumer.handler_for("shop.order.created") is exact
    assert consumer.handler_for("shop.order.paid") is pattern
    assert consumer.handler_for("shop.customer.registered") is None
    with pytest.raises(ValueError, match="already registered"):
        consumer.add_handler("shop.order.created", exact)


def test_rotation_while_events_flow_loses_nothing(world, service_db, router_url):
    total = 60
    producer = world.sealer(reuse_events=5, reload_seconds=0)
    opener = Opener("billing", KeyRing.load(world.keys), world.policy, reload_seconds=0)
    consumer = billing(world, service_db, opener=opener)
    kids_seen: set[str] = set()
    done = threading.Event()

    def produce():
        for n in range(1, total + 1):
            if n == total // 3:
                rotate_key(world.keys, "billing")  # overlap: events go to billing-1 and billing-2
            if n == 2 * total // 3:
                retire_key(world.keys, "billing-1")  # from here on only billing-2
            envelope = order(world, n, sealer=producer)
            kids_seen.update(r["header"]["kid"] for r in json.loads(envelope.data)["recipients"])
            publish(router_url, [envelope])
        done.set()

    thread = threading.Thread(target=produce)
    thread.start()
    while not done.is_set():  # consume while the producer rotates keys
        consumer.run(router_url, destinations=["order"], until_idle=True, poll=0.2, install_signals=False)
    consumer.run(router_url, destinations=["order"], until_idle=True, poll=0.2, install_signals=False)
    thread.join()
    assert consumer.stats.dead == 0 and consumer.stats.rejected == 0
    assert sorted(map(int, invoices(service_db))) == list(range(1, total + 1))
    assert {"billing-1", "billing-2"} <= kids_seen
    last = json.loads(order(world, 0, sealer=producer).data)
    assert [r["header"]["kid"] for r in last["recipients"]] == ["billing-2", "shipping-1"]


def test_inbox_migration_on_every_database(database_url):
    inbox.upgrade(database_url)
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            names = set(conn.dialect.get_table_names(conn))
            assert {"strangler_inbox", "strangler_dead_letters", "strangler_inbox_alembic_version"} <= names
            assert conn.execute(select(func.count()).select_from(inbox.inbox_table)).scalar() == 0
        inbox.downgrade(database_url)
        with engine.connect() as conn:
            assert not {"strangler_inbox", "strangler_dead_letters"} & set(conn.dialect.get_table_names(conn))
    finally:
        engine.dispose()


def test_inbox_ships_as_an_alembic_version_location_with_its_own_branch():
    from alembic.script import ScriptDirectory

    from outbox.inbox_migrations import SCRIPT_DIR

    script = ScriptDirectory(str(SCRIPT_DIR), version_locations=[str(SCRIPT_DIR / "versions")])
    [head] = script.get_revisions("heads")
    assert head.branch_labels == {"strangler_inbox"}
    assert inbox.VERSION_LOCATION == "outbox:inbox_migrations/versions"

