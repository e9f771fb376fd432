"""Retrying dead letters: once the cause is fixed, a dead event is handled once, or stays dead with the new error."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, select

from outbox import inbox
from outbox.consumer import Consumer
from outbox.envelope import Envelope
from outbox.routers import Delivery
from tests.outbox.relay_helpers import publish
from tests.outbox.test_consumer import Invoice, ServiceBase, invoices, order


@pytest.fixture
def world(tmp_path):
    from tests.outbox.crypto_helpers import make_world

    return make_world(tmp_path)


@pytest.fixture
def router_url(tmp_path):
    return f"file://{tmp_path}/events"


def service_engine(url):
    inbox.upgrade(url)
    engine = create_engine(url)
    ServiceBase.metadata.create_all(engine)
    return engine


@pytest.fixture
def service_db(sqlite_url):
    engine = service_engine(sqlite_url)
    yield engine
    engine.dispose()


class Billing:
    """The billing service, with a handler that is broken for some orders until it is fixed."""

    def __init__(self, world, engine, *, broken=(), **options):
        self.broken = set(broken)
        self.consumer = Consumer("billing", engine, keys_dir=str(world.keys), policy=str(world.policy_path),
                                 **options)
        self.consumer.add_handler("shop.order.created", self.invoice)

    def invoice(self, event, session):
        session.add(Invoice(order_id=str(event.data["id"]), email=event.data["email"]))
        session.flush()  # the invoice is written before the failure: a retry must take it back too
        if event.data["id"] in self.broken:
            raise RuntimeError(f"cannot invoice order {event.data['id']}")

    def run(self, router_url, **options):
        return self.consumer.run(router_url, destinations=["order"], until_idle=True, poll=0.1, **options)


def inbox_outcomes(engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(select(inbox.inbox_table.c.event_id, inbox.inbox_table.c.outcome)).all()
    return dict(rows)


@pytest.mark.parametrize("backend_url", ["sqlite_url", "postgresql_url", "mariadb_url"])
def test_a_fixed_handler_handles_its_dead_event_once_and_the_dead_letter_goes(world, router_url, backend_url,
                                                                              request):
    engine = service_engine(request.getfixturevalue(backend_url))
    try:
        events = [order(world, 1), order(world, 2), order(world, 3)]
        publish(router_url, events)
        billing = Billing(world, engine, broken={2})
        assert billing.run(router_url).dead == 1
        assert invoices(engine) == ["1", "3"]

        billing.broken.clear()  # the handler is fixed
        [retried] = billing.consumer.retry_dead_letters()

        assert (retried.event_id, retried.outcome, retried.reason) == (events[1].id, "handled", "handler")
        assert invoices(engine) == ["1", "3", "2"]
        assert billing.consumer.dead_letters() == []
        assert inbox_outcomes(engine)[events[1].id] == "handled"
        assert billing.consumer.retry_dead_letters() == []  # nothing left to retry
        # The broker delivering it again now finds it handled: no second invoice.
        again = Billing(world, engine).run(router_url, group="billing-replay")
        assert (again.handled, again.duplicate) == (0, 3)
        assert invoices(engine) == ["1", "3", "2"]
    finally:
        engine.dispose()


def test_an_event_that_fails_again_keeps_its_dead_letter_with_the_new_error_and_no_partial_effect(
    world, service_db, router_url
):
    event = order(world, 2)
    publish(router_url, [event])
    billing = Billing(world, service_db, broken={2})
    billing.run(router_url)
    [before] = billing.consumer.dead_letters()

    def still_broken(evt, session):
        session.add(Invoice(order_id="half-written", email=""))
        session.flush()
        raise ValueError("the tax table has no rate for this country")

    billing.consumer._exact["shop.order.created"] = still_broken
    [retried] = billing.consumer.retry_dead_letters()

    assert retried.outcome == "dead" and "ValueError: the tax table has no rate" in retried.error
    [after] = billing.consumer.dead_letters()
    assert after["position"] == before["position"] and after["event"] == before["event"]  # one letter, kept whole
    assert "ValueError: the tax table has no rate" in after["error"]
    assert invoices(service_db) == []  # the retry's writes rolled back
    assert inbox_outcomes(service_db) == {event.id: "dead"}  # a redelivery is still a duplicate


def test_an_event_rejected_for_a_missing_key_is_handled_once_the_key_is_there(world, service_db, router_url):
    publish(router_url, [order(world, 5)])
    keyless = Consumer("billing", service_db)  # deployed without its keys: every encrypted event rejected
    keyless.add_handler("shop.order.created", lambda event, session: None)
    assert keyless.run(router_url, destinations=["order"], until_idle=True, poll=0.1).rejected == 1
    [letter] = keyless.dead_letters()
    assert letter["reason"] == "not-for-us"
    assert keyless.retry_dead_letters()[0].outcome == "rejected"  # still no keys: still rejected

    [retried] = Billing(world, service_db).consumer.retry_dead_letters()

    assert (retried.outcome, retried.reason) == ("handled", "not-for-us")
    assert invoices(service_db) == ["5"]
    assert keyless.dead_letters() == []


def test_a_retry_can_be_narrowed_to_event_ids_or_a_type_pattern(world, service_db, router_url):
    events = [order(world, n) for n in (1, 2, 3)]
    publish(router_url, events)
    billing = Billing(world, service_db, broken={1, 2, 3})
    billing.run(router_url)
    billing.broken.clear()

    assert billing.consumer.retry_dead_letters(event_type="shop.customer.*") == []
    [only] = billing.consumer.retry_dead_letters(event_ids=[events[1].id])
    assert only.event_id == events[1].id and invoices(service_db) == ["2"]
    rest = billing.consumer.retry_dead_letters(event_type="shop.order.*")
    assert [r.event_id for r in rest] == [events[0].id, events[2].id]  # oldest first
    assert invoices(service_db) == ["2", "1", "3"]


def test_max_age_does_not_refuse_an_event_an_operator_asked_to_retry(world, service_db, router_url):
    publish(router_url, [order(world, 4)])
    billing = Billing(world, service_db, broken={4})
    billing.run(router_url)
    strict = Billing(world, service_db, max_age=0.0)  # every event is "too old" for a delivery
    assert strict.consumer.retry_dead_letters()[0].outcome == "handled"


def test_a_message_that_is_not_a_cloudevent_is_unreadable_and_kept_for_a_person(world, service_db):
    consumer = Billing(world, service_db).consumer
    garbage = Delivery.unreadable(b"\x00not json", ValueError("not JSON"), "order", location="line 3",
                                  ack=lambda: None, nack=lambda: None)
    assert consumer.handle(garbage) == "rejected"

    [retried] = consumer.retry_dead_letters()

    assert (retried.outcome, retried.reason) == ("unreadable", "malformed")
    assert retried.error == "ValueError: not JSON"  # why it was refused when it came, not a new parse's error
    assert len(consumer.dead_letters()) == 1


def test_a_type_without_a_handler_now_is_left_dead(world, service_db, router_url):
    publish(router_url, [order(world, 6)])
    billing = Billing(world, service_db, broken={6})
    billing.run(router_url)
    renamed = Consumer("billing", service_db, keys_dir=str(world.keys), policy=str(world.policy_path))
    renamed.add_handler("shop.order.placed", lambda event, session: None)

    [retried] = renamed.retry_dead_letters()

    assert retried.outcome == "ignored" and "no handler for shop.order.created" in retried.error
    assert len(renamed.dead_letters()) == 1


def test_a_dead_letter_keeps_the_event_as_received_so_it_parses_back(world, service_db, router_url):
    event = order(world, 8)
    publish(router_url, [event])
    billing = Billing(world, service_db, broken={8})
    billing.run(router_url)
    [letter] = billing.consumer.dead_letters()
    assert Envelope.from_json(letter["event"]) == event


def test_replay_letters_are_retried_only_when_named(world, service_db, router_url):
    """An event older than max_age may be one handled long ago whose inbox row was purged: a retry must ask for it."""
    old = order(world, 9)
    publish(router_url, [old])
    strict = Billing(world, service_db, max_age=0.0)
    assert strict.run(router_url).rejected == 1
    [letter] = strict.consumer.dead_letters()
    assert letter["reason"] == "replay"

    assert strict.consumer.retry_dead_letters() == []  # not named: left alone
    assert strict.consumer.retry_dead_letters(reasons=["handler"]) == []
    assert invoices(service_db) == []
    [by_reason] = strict.consumer.retry_dead_letters(reasons=["replay"])
    assert by_reason.outcome == "handled" and invoices(service_db) == ["9"]


def test_a_replay_letter_named_by_id_is_retried(world, service_db, router_url):
    old = order(world, 10)
    publish(router_url, [old])
    strict = Billing(world, service_db, max_age=0.0)
    strict.run(router_url)
    [retried] = strict.consumer.retry_dead_letters(event_ids=[old.id])
    assert retried.outcome == "handled"


def test_an_event_another_process_handled_during_the_retry_is_a_duplicate_and_its_letter_goes(
        world, router_url, postgresql_url):
    engine = service_engine(postgresql_url)
    try:
        publish(router_url, [order(world, 11)])
        keyless = Consumer("billing", engine)  # rejected: no inbox row, only a dead letter
        keyless.add_handler("shop.order.created", lambda event, session: None)
        keyless.run(router_url, destinations=["order"], until_idle=True, poll=0.1)
        billing = Billing(world, engine)
        original = billing.consumer._record

        def handled_elsewhere_first(session, envelope, outcome):
            # A running process of the service handles the redelivered event and commits first.
            with engine.begin() as other:
                other.execute(inbox.inbox_table.insert().values(
                    consumer="billing", event_id=envelope.id, type=envelope.type, source=envelope.source,
                    outcome="handled", handled_at=envelope.time))
            original(session, envelope, outcome)

        billing.consumer._record = handled_elsewhere_first
        [retried] = billing.consumer.retry_dead_letters()

        assert retried.outcome == "duplicate"
        assert billing.consumer.dead_letters() == []
        assert invoices(engine) == []  # the retry's own handling rolled back: one effect, the other process's
    finally:
        engine.dispose()
