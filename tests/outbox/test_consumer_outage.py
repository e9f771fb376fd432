"""A broker outage while the consumer runs: it reconnects and goes on, nothing lost, nothing acked unhandled."""

from __future__ import annotations

import threading
import time

from sqlalchemy import create_engine, text

from outbox import inbox
from outbox.consumer import Consumer
from tests.outbox.crypto_helpers import plain_event
from tests.outbox.relay_helpers import publish, wait_until






def test_run_survives_a_redis_outage_and_handles_what_comes_after(own_redis, sqlite_url, caplog):
    url, start, stop = own_redis
    inbox.upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    consumer = Consumer("billing", engine)
    handled: list[int] = []
    consumer.add_handler("shop.order.created", lambda event, session: handled.append(event.data["id"]))
    publish(url, [plain_event(n) for n in range(3)])
    errors: list[BaseException] = []

    def run():
        try:
            consumer.run(url, destinations=["order"], poll=0.2, install_signals=False)
        except BaseException as exc:  # the old code: redis.exceptions.ConnectionError
            errors.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    try:
        wait_until(lambda: len(handled) == 3, what="the first events")
        stop()
        time.sleep(1.5)  # several failed receives and reopens
        assert runner.is_alive() and not errors, errors
        start()  # appendfsync always: the stream and the group's acks survived
        publish(url, [plain_event(n) for n in range(3, 6)])
        wait_until(lambda: len(handled) == 6, what="the events published after the restart")
        assert runner.is_alive() and not errors
    finally:
        consumer.stop()
        runner.join(10)
    assert not runner.is_alive(), "stop() ends run() promptly"
    assert sorted(handled) == list(range(6))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM strangler_inbox WHERE outcome = 'handled'")).scalar() == 6
    # The kill may race the third event's ack (its commit done): it comes again as a duplicate, no second effect.
    assert consumer.stats.handled == 6 and consumer.stats.total() == 6 + consumer.stats.duplicate
    outage_lines = [r.getMessage() for r in caplog.records if "broker unreachable" in r.getMessage()]
    assert outage_lines and all(url.split("/0")[0].split("//")[1] in line for line in outage_lines)
    engine.dispose()


def test_stop_ends_run_during_the_outage_backoff(own_redis, sqlite_url):
    url, start, stop = own_redis
    inbox.upgrade(sqlite_url)
    consumer = Consumer("billing", create_engine(sqlite_url))
    runner = threading.Thread(
        target=consumer.run, args=(url,), kwargs={"destinations": ["order"], "poll": 0.2, "install_signals": False},
        daemon=True,
    )
    runner.start()
    time.sleep(0.5)
    stop()
    time.sleep(3)  # the backoff has grown past a second by now
    assert runner.is_alive(), "the outage did not end run()"
    begun = time.monotonic()
    consumer.stop()
    runner.join(5)
    assert not runner.is_alive() and time.monotonic() - begun < 2


def test_an_ack_refused_after_the_commit_is_an_outage_and_the_event_comes_again_with_no_second_effect(
        own_redis, sqlite_url):
    """The broker goes away between the handler's commit and the ack: run() goes on, the inbox absorbs the rest."""
    url, start, stop = own_redis
    inbox.upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    consumer = Consumer("billing", engine)
    handled: list[int] = []

    def invoice(event, session):
        handled.append(event.data["id"])
        if event.data["id"] == 1 and handled.count(1) == 1:
            stop()  # the commit still goes through; the ack that follows cannot

    consumer.add_handler("shop.order.created", invoice)
    publish(url, [plain_event(n) for n in range(3)])
    errors: list[BaseException] = []

    def run():
        try:
            consumer.run(url, destinations=["order"], poll=0.2, install_signals=False)
        except BaseException as exc:  # the old code: redis.exceptions.ConnectionError out of the ack
            errors.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    try:
        wait_until(lambda: 1 in handled, what="the event whose ack fails")
        time.sleep(1.0)  # the failed ack, then failed reopens
        assert runner.is_alive() and not errors, errors
        start()
        wait_until(lambda: consumer.stats.duplicate >= 1 and 2 in handled, what="the redelivery and the rest")
    finally:
        consumer.stop()
        runner.join(10)
    assert not errors, errors
    assert sorted(set(handled)) == [0, 1, 2] and handled.count(1) == 1  # committed once; the redelivery a duplicate
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM strangler_inbox WHERE outcome = 'handled'")).scalar() == 3
    engine.dispose()


class RefusingAcks:
    """A subscription whose broker delivers, but refuses every ack (a permission missing): the unit's edge."""

    def __init__(self, event):
        self.event = event
        self.receives = 0

    def receive(self, max_events=100, timeout=1.0):
        from outbox.routers import Delivery

        self.receives += 1

        def refuse():
            raise PermissionError("NOPERM this user has no permissions to run the 'xack' command")

        return [Delivery(envelope=self.event, destination="order", redelivered=self.receives > 1,
                         _ack=refuse, _nack=lambda: None)]

    def close(self):
        pass


def test_acks_refused_again_and_again_are_retried_ever_more_slowly_and_the_handling_counts_once(sqlite_url, caplog):
    inbox.upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    consumer = Consumer("billing", engine)
    handled: list[int] = []
    consumer.add_handler("shop.order.created", lambda event, session: handled.append(event.data["id"]))
    subscription = RefusingAcks(plain_event(1))
    runner = threading.Thread(target=consumer.run,
                              kwargs={"subscription": subscription, "install_signals": False}, daemon=True)
    runner.start()
    time.sleep(2.0)
    consumer.stop()
    runner.join(10)
    # 0.1 + 0.2 + 0.4 + 0.8 s (with jitter, at least half of each): a handful of tries, not one per 0.1 s.
    assert 3 <= subscription.receives <= 9, subscription.receives
    assert handled == [1] and consumer.stats.handled == 1  # committed once; counted though the ack failed
    assert consumer.stats.duplicate == subscription.receives - 1
    refusals = [r.getMessage() for r in caplog.records if "refused an ack" in r.getMessage()]
    assert refusals and "NOPERM" in refusals[0]
    engine.dispose()
