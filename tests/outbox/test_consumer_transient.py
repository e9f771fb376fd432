"""The consumer retries a handler whose database said "not now" (lock timeout, deadlock), and dead-letters the rest."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from outbox import inbox
from outbox.consumer import Consumer, is_transient_db_error
from outbox.routers import open_router, open_subscription
from tests.outbox.crypto_helpers import plain_event




@pytest.fixture
def service(postgresql_url):
    inbox.upgrade(postgresql_url)
    engine = create_engine(postgresql_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE balances (id INTEGER PRIMARY KEY, total INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO balances VALUES (1, 0)"))
    yield engine
    engine.dispose()


def accounting(engine) -> Consumer:
    consumer = Consumer("accounting", engine)

    @consumer.handler("shop.order.created")
    def add(event, session):
        if event.data.get("bug"):
            raise RuntimeError("a bug in the handler")
        session.execute(text("SET LOCAL lock_timeout = '100ms'"))
        session.execute(text("UPDATE balances SET total = total + 1 WHERE id = 1"))

    return consumer


def outcomes_of(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT event_id, outcome FROM strangler_inbox")).all())


def test_a_lock_timeout_in_a_handler_is_retried_and_handled_once_the_lock_is_released(service, tmp_path):
    router_url = f"file://{tmp_path}/events"
    event = plain_event(1)
    router = open_router(router_url)
    assert all(r.ok for r in router.publish([event]))
    router.close()
    consumer = accounting(service)
    subscription = open_subscription(router_url, group="accounting", destinations=["order"])
    try:
        with service.connect() as holder:  # another process of the service holds the row
            holder.execute(text("SELECT * FROM balances WHERE id = 1 FOR UPDATE"))
            [delivery] = subscription.receive(timeout=0.1)
            assert consumer.handle(delivery) == "retry"
            assert outcomes_of(service) == {} and consumer.dead_letters() == []
            holder.rollback()
        [again] = subscription.receive(timeout=0.1)  # nacked: delivered again
        assert again.envelope.id == event.id
        assert consumer.handle(again) == "handled"
    finally:
        subscription.close()
    assert outcomes_of(service) == {event.id: "handled"}
    with service.connect() as conn:
        assert conn.execute(text("SELECT total FROM balances")).scalar() == 1
    assert (consumer.stats.retried, consumer.stats.handled, consumer.stats.dead) == (1, 1, 0)


def test_run_backs_off_and_handles_the_event_after_the_lock_is_released(service, tmp_path):
    router_url = f"file://{tmp_path}/events"
    router = open_router(router_url)
    router.publish([plain_event(1), plain_event(2, {"id": 2, "bug": True})])
    router.close()
    consumer = accounting(service)
    with service.connect() as holder:
        holder.execute(text("SELECT * FROM balances WHERE id = 1 FOR UPDATE"))
        deadline = threading.Timer(20, consumer.stop)  # the old code dead-lettered both and waited on
        deadline.start()
        try:
            stats = consumer.run(router_url, destinations=["order"], poll=0.1, max_events=3)
        finally:
            deadline.cancel()
        holder.rollback()
    assert (stats.retried, stats.dead, stats.handled) == (3, 0, 0)
    stats = consumer.run(router_url, destinations=["order"], poll=0.1, until_idle=True)
    # The ordinary exception is still dead for good; the lock timeout is handled.
    assert (stats.handled, stats.dead) == (1, 1)
    assert sorted(outcomes_of(service).values()) == ["dead", "handled"]
    [letter] = consumer.dead_letters()
    assert "RuntimeError: a bug in the handler" in letter["error"]


@pytest.mark.parametrize("error, transient", [
    (OperationalError("UPDATE", {}, sqlite3.OperationalError("database is locked")), True),
    (OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: balances")), False),
    (OperationalError("UPDATE", {}, type("OperationalError", (Exception,), {})(1213, "Deadlock found")), True),
    (OperationalError("UPDATE", {}, type("OperationalError", (Exception,), {})(1205, "Lock wait timeout")), True),
    (OperationalError("UPDATE", {}, type("OperationalError", (Exception,), {})(1146, "no such table")), False),
    (OperationalError("UPDATE", {}, Exception("gone"), connection_invalidated=True), True),
    (RuntimeError("a bug"), False),
])
def test_which_database_errors_are_transient(error, transient):
    assert is_transient_db_error(error) is transient
