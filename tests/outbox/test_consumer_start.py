"""A broker down when the consumer starts is an outage, waited out; a mistake in the URL still fails at once."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from sqlalchemy import create_engine

from outbox import consumer as consumer_module
from outbox import inbox
from outbox.consumer import Consumer
from outbox.routers import RouterError
from tests.outbox.crypto_helpers import plain_event
from tests.outbox.relay_helpers import free_port, publish, wait_until


def billing(sqlite_url, handled):
    inbox.upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    consumer = Consumer("billing", engine)
    consumer.add_handler("shop.order.created", lambda event, session: handled.append(event.data["id"]))
    return consumer, engine


def start_running(consumer, url, errors, results=None, **kwargs):
    def run():
        try:
            stats = consumer.run(url, destinations=["order"], poll=0.2, install_signals=False, **kwargs)
            if results is not None:
                results.append(stats)
        except BaseException as exc:  # the old code: RouterError "redis unreachable" out of the first open
            errors.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    return runner


def test_a_broker_down_at_start_is_waited_out_and_what_comes_after_is_handled(own_redis, sqlite_url, caplog):
    url, start, stop = own_redis
    stop()
    handled: list[int] = []
    consumer, engine = billing(sqlite_url, handled)
    errors: list[BaseException] = []
    runner = start_running(consumer, url, errors)
    try:
        time.sleep(1.5)  # several failed opens
        assert runner.is_alive() and not errors, errors
        start()
        publish(url, [plain_event(n) for n in range(3)])
        wait_until(lambda: len(handled) == 3, what="the events published once the broker came")
        assert runner.is_alive() and not errors, errors
    finally:
        consumer.stop()
        runner.join(10)
    assert not runner.is_alive() and not errors, errors
    assert sorted(handled) == [0, 1, 2] and consumer.stats.handled == 3
    lines = [r.getMessage() for r in caplog.records if "broker unreachable" in r.getMessage()]
    assert len(lines) >= 2 and "reconnecting in" in lines[0]
    engine.dispose()


def test_stop_ends_the_wait_for_a_broker_down_at_start_and_the_log_hides_the_password(sqlite_url, caplog):
    consumer, engine = billing(sqlite_url, [])
    errors: list[BaseException] = []
    runner = start_running(consumer, f"redis://:s3cret@127.0.0.1:{free_port()}/0", errors)
    time.sleep(2.5)  # the backoff has grown past half a second
    assert runner.is_alive() and not errors, errors
    begun = time.monotonic()
    consumer.stop()
    runner.join(5)
    assert not runner.is_alive() and time.monotonic() - begun < 2 and not errors, errors
    lines = [r.getMessage() for r in caplog.records if "broker unreachable" in r.getMessage()]
    assert lines and all(":***@127.0.0.1" in line and "s3cret" not in line for line in lines), lines
    assert 3 <= len(lines) <= 12, lines  # backing off, not a try every poll
    engine.dispose()


def test_until_idle_waits_for_a_broker_restarting_then_drains_what_it_holds(own_redis, sqlite_url):
    url, start, stop = own_redis
    publish(url, [plain_event(n) for n in range(2)])
    stop()
    handled: list[int] = []
    consumer, engine = billing(sqlite_url, handled)
    errors: list[BaseException] = []
    results: list = []
    runner = start_running(consumer, url, errors, results, until_idle=True)
    time.sleep(0.8)
    assert runner.is_alive() and not errors, errors
    start()  # appendfsync always: the stream survived
    runner.join(15)
    assert not runner.is_alive() and not errors, errors
    assert sorted(handled) == [0, 1] and results[0].handled == 2
    engine.dispose()


def test_until_idle_gives_up_on_a_broker_that_never_comes(sqlite_url, monkeypatch, caplog):
    monkeypatch.setattr(consumer_module, "IDLE_START_PATIENCE", 1.0)
    consumer, engine = billing(sqlite_url, [])
    begun = time.monotonic()
    with pytest.raises(RouterError, match="unreachable"):
        consumer.run(f"redis://127.0.0.1:{free_port()}/0", destinations=["order"], until_idle=True, poll=0.2,
                     install_signals=False)
    assert 0.9 <= time.monotonic() - begun < 3
    assert any("until_idle gives up" in r.getMessage() for r in caplog.records)
    engine.dispose()


@pytest.mark.parametrize("url, says", [
    ("redis://127.0.0.1:6379/0?bogus=1", "unknown option"),
    ("bogus://127.0.0.1:6379/0", "no router for scheme"),
    ("127.0.0.1:6379", "has no scheme"),
    ("redis://127.0.0.1:notaport/0", "not a Redis URL"),
    ("redis://127.0.0.1:6379/0?claim_idle=0", "claim_idle=0"),
    ("amqps://127.0.0.1:5672/%2F?ca_file=/nonexistent/ca.pem", "cannot load TLS files"),
])
def test_a_mistake_in_the_url_still_fails_at_once(sqlite_url, url, says):
    consumer, engine = billing(sqlite_url, [])
    begun = time.monotonic()
    with pytest.raises(RouterError, match=says):
        consumer.run(url, destinations=["order"], install_signals=False)
    assert time.monotonic() - begun < 2
    engine.dispose()


def test_a_missing_client_library_fails_at_once(sqlite_url, monkeypatch):
    monkeypatch.setitem(sys.modules, "pika", None)  # import pika raises ImportError
    consumer, engine = billing(sqlite_url, [])
    with pytest.raises(RouterError, match=r"pip install 'strangler\[rabbitmq\]'"):
        consumer.run("amqp://guest:guest@127.0.0.1:1/%2F", destinations=["order"], install_signals=False)
    engine.dispose()


def test_tls_files_that_cannot_be_loaded_fail_at_once_though_the_broker_answers(own_redis, sqlite_url):
    url, start, stop = own_redis
    consumer, engine = billing(sqlite_url, [])
    tls_url = url.replace("redis://", "rediss://") + "?ca_file=/nonexistent/ca.pem"
    begun = time.monotonic()
    with pytest.raises(RouterError, match="No such file"):
        consumer.run(tls_url, destinations=["order"], install_signals=False)
    assert time.monotonic() - begun < 2
    engine.dispose()


def test_credentials_the_broker_refuses_fail_at_once(own_redis, sqlite_url):
    import redis

    url, start, stop = own_redis
    client = redis.Redis.from_url(url)
    client.config_set("requirepass", "right")
    client.close()
    consumer, engine = billing(sqlite_url, [])
    begun = time.monotonic()
    with pytest.raises(RouterError) as raised:
        consumer.run(url.replace("redis://", "redis://:wrong@"), destinations=["order"], install_signals=False)
    assert time.monotonic() - begun < 2
    assert "wrong" not in str(raised.value) and ":***@" in str(raised.value)
    engine.dispose()
