"""Ephemeral groups (``open_subscription(..., ephemeral=True)``) against the real brokers: nothing stays.

What ``strangler events tail`` opens. Each test opens one, reads an event
through it, closes it (or drops it as a killed process would) and looks on the
broker, with the broker's own client, for anything left of the group.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit

import pytest

from outbox.routers import Destinations, RouterError, open_router, open_subscription
from outbox.testing.conformance import make_event, receive_all
from outbox.testing.services import in_ci, require_module, service_url


def _prefix() -> str:
    return f"e{uuid.uuid4().hex[:10]}-"


def assert_one_event_comes_through(router, subscription) -> None:
    """Publish one event with ``router``; the ephemeral ``subscription`` receives it."""
    event = make_event()
    assert router.publish([event])[0].ok
    [got] = receive_all(subscription, 1, timeout=5, ack=False)
    assert got.envelope.id == event.id


# -- Redis ----------------------------------------------------------------------------------------


def test_redis_an_ephemeral_group_reads_the_stream_and_creates_nothing_on_redis():
    redis = require_module("redis", "redis")
    url = service_url("redis")
    prefix = _prefix()
    client = redis.Redis.from_url(url)
    router = open_router(url, destinations=Destinations(prefix=prefix))
    try:
        events = [make_event(key="1", data={"n": n}) for n in range(3)]
        assert all(r.ok for r in router.publish(events))
        sub = open_subscription(url, group="strangler-tail-x", destinations=[prefix + "order", prefix + "missing"],
                                ephemeral=True)
        try:
            got = receive_all(sub, 3, timeout=5, ack=False)
            assert [d.envelope.id for d in got] == [e.id for e in events]
            got[1].nack()  # read again from there, marked redelivered
            again = receive_all(sub, 2, timeout=5, ack=False)
            assert [d.envelope.id for d in again] == [e.id for e in events[1:]]
            assert all(d.redelivered for d in again)
            # While it reads (a process killed now leaves this much): no group, no stream made.
            assert client.xinfo_groups(prefix + "order") == []
            assert not client.exists(prefix + "missing")
        finally:
            sub.close()
            sub.close()
        assert client.xinfo_groups(prefix + "order") == []
    finally:
        router.close()
        client.delete(prefix + "order", prefix + "missing")
        client.close()


# -- RabbitMQ -------------------------------------------------------------------------------------


def _amqp_queue_exists(url: str, queue: str) -> bool:
    pika = require_module("pika", "rabbitmq")
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 405:  # RESOURCE_LOCKED: exclusive to another connection, so it exists
            return True
        assert exc.reply_code == 404, exc
        return False
    finally:
        if connection.is_open:
            connection.close()


@pytest.fixture
def amqp_prefix():
    require_module("pika", "rabbitmq")
    url = service_url("rabbitmq")
    prefix = _prefix()
    router = open_router(url, destinations=Destinations(prefix=prefix))
    assert router.publish([make_event()])[0].ok  # declares the exchange (the message is dropped)
    router.close()
    yield url, prefix
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_delete(prefix + "g")
    channel.exchange_delete(prefix + "order")
    connection.close()


def test_amqp_an_ephemeral_group_is_an_exclusive_queue_gone_once_closed(amqp_prefix):
    url, prefix = amqp_prefix
    sub = open_subscription(url, group=prefix + "g", destinations=[prefix + "order"], ephemeral=True)
    router = open_router(url, destinations=Destinations(prefix=prefix))
    try:
        assert_one_event_comes_through(router, sub)
        assert _amqp_queue_exists(url, prefix + "g")
    finally:
        sub.close()
        sub.close()
        router.close()
    assert not _amqp_queue_exists(url, prefix + "g")


def test_amqp_an_ephemeral_groups_queue_goes_with_a_killed_process(amqp_prefix):
    url, prefix = amqp_prefix
    code = (
        "import sys; from outbox.routers import open_subscription\n"
        f"s = open_subscription({url!r}, group={prefix + 'g'!r}, destinations=[{prefix + 'order'!r}], ephemeral=True)\n"
        "print('open', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
        assert _amqp_queue_exists(url, prefix + "g")
    finally:
        proc.kill()  # SIGKILL: no close, no finally
        proc.wait(10)
    deadline = time.monotonic() + 5
    while _amqp_queue_exists(url, prefix + "g") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _amqp_queue_exists(url, prefix + "g")


def test_amqp_an_ephemeral_group_creates_no_exchange_and_names_the_missing_one():
    require_module("pika", "rabbitmq")
    url = service_url("rabbitmq")
    prefix = _prefix()
    with pytest.raises(RouterError) as refused:
        open_subscription(url, group=prefix + "g", destinations=[prefix + "nothing"], ephemeral=True)
    assert f"no exchange {prefix + 'nothing'!r}" in str(refused.value) and "guest:***@" in str(refused.value)
    assert not _amqp_queue_exists(url, prefix + "g")
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            connection.channel().exchange_declare(prefix + "nothing", passive=True)
    finally:
        connection.close()


# -- NATS JetStream -------------------------------------------------------------------------------


def _nats(url, work):
    import nats

    async def main():
        nc = await nats.connect(url)
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


def _consumers(url, stream) -> list:
    async def work(js):
        return await js.consumers_info(stream)

    return _nats(url, work)


@pytest.fixture
def nats_stream():
    require_module("nats", "nats")
    url = service_url("nats")
    prefix = _prefix()
    router = open_router(url, destinations=Destinations(prefix=prefix))
    events = [make_event(key="1", data={"n": n}) for n in range(3)]
    assert all(r.ok for r in router.publish(events))
    router.close()
    yield url, prefix, events

    async def drop(js):
        await js.delete_stream(prefix + "order")

    _nats(url, drop)


def test_nats_an_ephemeral_group_is_an_ephemeral_consumer_deleted_on_close(nats_stream):
    url, prefix, events = nats_stream
    sub = open_subscription(url, group="strangler-tail-x", destinations=[prefix + "order"], ephemeral=True)
    try:
        got = receive_all(sub, 3, timeout=5, ack=False)
        assert [d.envelope.id for d in got] == [e.id for e in events]
        [info] = _consumers(url, prefix + "order")
        assert info.name == "strangler-tail-x" and info.config.durable_name is None
        assert 0 < info.config.inactive_threshold <= 60
    finally:
        sub.close()
        sub.close()
    assert _consumers(url, prefix + "order") == []


def test_nats_an_ephemeral_groups_consumer_goes_after_a_killed_process(nats_stream, monkeypatch):
    from outbox.routers import nats as nats_router

    url, prefix, _ = nats_stream
    monkeypatch.setattr(nats_router, "EPHEMERAL_INACTIVE", 1.0)
    sub = open_subscription(url, group="strangler-tail-x", destinations=[prefix + "order"], ephemeral=True)
    sub.client.loop.run(sub.client.nc.close(), timeout=10)  # the connection drops; close() never runs
    sub.client.loop.stop()
    deadline = time.monotonic() + 10
    while _consumers(url, prefix + "order") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _consumers(url, prefix + "order") == []


def test_nats_an_ephemeral_group_creates_no_stream():
    require_module("nats", "nats")
    url = service_url("nats")
    prefix = _prefix()
    with pytest.raises(RouterError, match=f"no stream '{prefix}nothing'"):
        open_subscription(url, group="strangler-tail-x", destinations=[prefix + "nothing"], ephemeral=True)

    async def names(js):
        return [info.config.name for info in await js.streams_info()]

    assert prefix + "nothing" not in _nats(url, names)


# -- MQTT -----------------------------------------------------------------------------------------


def _session_present(url: str, client_id: str) -> bool:
    """Connect as ``client_id`` without clean start: does the broker still hold its session? (Then end it.)"""
    import queue

    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    answers: queue.Queue = queue.Queue()
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, u, flags, rc, p: answers.put(flags.session_present)
    parts = urlsplit(url)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0  # this look ends whatever session there is
    client.connect(parts.hostname, parts.port or 1883, clean_start=False, properties=props)
    client.loop_start()
    try:
        return answers.get(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_mqtt_an_ephemeral_group_is_a_clean_session_gone_once_closed():
    require_module("paho.mqtt.client", "mqtt")
    url = service_url("mqtt")
    prefix = _prefix()
    sub = open_subscription(url, group=prefix + "g", destinations=[prefix + "order"], ephemeral=True)
    router = open_router(url, destinations=Destinations(prefix=prefix))
    try:
        assert_one_event_comes_through(router, sub)
    finally:
        sub.close()
        router.close()
    assert _session_present(url, prefix + "g") is False


# -- file -----------------------------------------------------------------------------------------


def test_file_an_ephemeral_group_writes_no_offsets(tmp_path):
    url = f"file://{tmp_path}/events"
    router = open_router(url)
    events = [make_event(key=str(n)) for n in range(3)]
    assert all(r.ok for r in router.publish(events))
    sub = open_subscription(url, group="strangler-tail-x", destinations=["order"], ephemeral=True)
    got = receive_all(sub, 3, timeout=5)  # acked: still nothing written
    sub.close()
    assert [d.envelope.id for d in got] == [e.id for e in events]
    assert not (tmp_path / "events" / ".groups").exists()


# -- routers that do not say they can -------------------------------------------------------------


class _DurableOnly:
    """A third-party router's class that knows nothing of ephemeral groups (and ignores unknown options)."""

    opened: list = []

    @classmethod
    def subscribe(cls, url, *, group, destinations, **options):
        cls.opened.append((group, options))
        return object()


def test_a_router_that_does_not_declare_ephemeral_groups_is_refused_before_it_opens_anything(monkeypatch):
    from outbox import routers
    from outbox.routers import supports_ephemeral

    monkeypatch.setattr(routers, "router_class", lambda url: _DurableOnly)
    assert not supports_ephemeral("memo://x")
    with pytest.raises(RouterError, match="cannot open an ephemeral group.*EPHEMERAL_GROUPS = True"):
        open_subscription("memo://x", group="g", destinations=["order"], ephemeral=True)
    assert _DurableOnly.opened == []
    open_subscription("memo://x", group="g", destinations=["order"])  # a durable group, as before
    assert _DurableOnly.opened == [("g", {})]  # not even ephemeral=False is passed on


@pytest.mark.parametrize("scheme", ["file", "redis", "rediss", "amqp", "amqps", "nats", "tls", "nats+tls",
                                    "mqtt", "mqtts"])
def test_every_router_of_strangler_opens_ephemeral_groups(scheme):
    from outbox.routers import router_class, supports_ephemeral

    try:
        cls = router_class(f"{scheme}://127.0.0.1:1/x")
    except RouterError as exc:  # its client library is missing: fails in CI, where every extra is installed
        pytest.fail(str(exc)) if in_ci() else pytest.skip(str(exc))
    assert supports_ephemeral(cls)
