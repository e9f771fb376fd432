"""A message that is not a CloudEvent is dead-lettered as malformed; the consumer handles the rest and goes on.

Each broker is written to directly with its own client (the way a stray
producer or an operator's ``redis-cli xadd`` would), between two events the
router published. Nothing after the bad message may be lost, and nothing may be
left unacked: a restarted consumer finds no work.
"""

from __future__ import annotations

import uuid

import pytest

from outbox.consumer import Consumer
from outbox.routers import Delivery, Destinations, open_router, open_subscription
from outbox.testing.conformance import make_event
from outbox.testing.services import require_module, service_url

ROUTERS = ["file", "redis", "rabbitmq", "nats", "mqtt"]
#: The stray message of the user's report: a CloudEvent's specversion and id, nothing else.
NOT_A_CLOUDEVENT = b'{"specversion": "1.0", "id": "x1"}'


# -- writing a stray message with each broker's own client -----------------------------------------


def write_file(url: str, destination: str) -> None:
    with open(f"{url[len('file://'):]}/{destination}.jsonl", "ab") as handle:
        handle.write(NOT_A_CLOUDEVENT + b"\n")


def write_redis(url: str, destination: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.xadd(destination, {"ce_specversion": "1.0", "ce_id": "x1", "data": "{}"})
    finally:
        client.close()


def write_rabbitmq(url: str, destination: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        properties = pika.BasicProperties(headers={"cloudEvents_specversion": "1.0", "cloudEvents_id": "x1"},
                                          delivery_mode=2)
        connection.channel().basic_publish(destination, "stray", b"{}", properties)
    finally:
        connection.close()


def write_nats(url: str, destination: str) -> None:
    from tests.outbox.test_router_nats import _run

    async def work(js):
        await js.publish(f"{destination}.stray", b"{}", headers={"ce-specversion": "1.0", "ce-id": "x1"})

    _run(url, work)


def write_mqtt(url: str, destination: str) -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from tests.outbox.test_router_mqtt import _client

    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = [("specversion", "1.0"), ("id", "x1")]
    client = _client(url, f"stray-{uuid.uuid4().hex[:8]}")
    client.loop_start()
    try:
        client.publish(destination, b"{}", qos=1, properties=properties).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


STRAY_WRITERS = {"file": write_file, "redis": write_redis, "rabbitmq": write_rabbitmq, "nats": write_nats,
                 "mqtt": write_mqtt}


def cleanup(name: str, url: str, prefix: str) -> None:
    """Delete what the test created on the broker, with the router conformance suite's own cleanup."""
    if name == "file":
        return
    from tests.outbox import test_router_amqp, test_router_mqtt, test_router_nats, test_router_redis

    suites = {"redis": test_router_redis.TestRedisRouter, "rabbitmq": test_router_amqp.TestAmqpRouter,
              "nats": test_router_nats.TestNatsRouter, "mqtt": test_router_mqtt.TestMqttRouter}
    suites[name]().cleanup(url, prefix)


# -- fixtures -------------------------------------------------------------------------------------


MODULES = {"redis": ("redis", "redis"), "rabbitmq": ("pika", "rabbitmq"), "nats": ("nats", "nats"),
           "mqtt": ("paho.mqtt.client", "mqtt")}


@pytest.fixture(params=ROUTERS)
def broker(request, tmp_path):
    """(name, router URL, destination, group) on fresh, prefixed names; the group exists before publishing."""
    name = request.param
    if name == "file":
        url = f"file://{tmp_path}/events"
    else:
        require_module(*MODULES[name])
        url = service_url(name)
    prefix = f"c{uuid.uuid4().hex[:10]}-"
    destination, group = prefix + "order", prefix + "g"
    open_subscription(url, group=group, destinations=[destination]).close()  # bind the queue / start the session
    yield name, url, prefix, destination, group
    cleanup(name, url, prefix)


def orders_consumer(engine, handled: list) -> Consumer:
    consumer = Consumer("orders", engine)
    consumer.add_handler("shop.order.created", lambda event, session: handled.append(event.data["key"]))
    return consumer


def publish(url: str, prefix: str, *keys: str) -> None:
    router = open_router(url, destinations=Destinations(prefix=prefix))
    try:
        assert all(result.ok for result in router.publish([make_event(key=key) for key in keys]))
    finally:
        router.close()


def run(consumer: Consumer, url: str, destination: str, group: str):
    return consumer.run(url, destinations=[destination], group=group, until_idle=True, poll=1.0,
                        install_signals=False)


# -- the specification ----------------------------------------------------------------------------


def test_a_message_that_is_not_a_cloudevent_is_dead_lettered_and_the_rest_is_handled(broker, inbox_engine):
    name, url, prefix, destination, group = broker
    publish(url, prefix, "1")
    STRAY_WRITERS[name](url, destination)
    publish(url, prefix, "2")

    handled: list = []
    stats = run(orders_consumer(inbox_engine, handled), url, destination, group)

    assert (handled, stats.handled, stats.rejected) == (["1", "2"], 2, 1)
    (letter,) = orders_consumer(inbox_engine, []).dead_letters()
    assert letter["reason"] == "malformed"
    assert "source" in letter["error"]  # what the message lacked
    assert b"x1" in letter["event"]  # the message as received
    assert letter["event_id"]  # where the broker held it


def test_a_restart_after_a_malformed_message_finds_no_work(broker, inbox_engine):
    name, url, prefix, destination, group = broker
    STRAY_WRITERS[name](url, destination)
    publish(url, prefix, "1")
    assert run(orders_consumer(inbox_engine, []), url, destination, group).total() == 2

    again = run(orders_consumer(inbox_engine, []), url, destination, group)

    assert again.total() == 0  # the bad message and the good one were both acked


def test_a_garbage_line_in_the_file_router_moves_its_offset_on(tmp_path, inbox_engine):
    url = f"file://{tmp_path}/events"
    publish(url, "", "1")
    with open(tmp_path / "events" / "order.jsonl", "ab") as handle:
        handle.write(b"\x00garbage that is not JSON\n[1, 2]\n")
    publish(url, "", "2")

    handled: list = []
    stats = run(orders_consumer(inbox_engine, handled), url, "order", "orders")

    assert (handled, stats.rejected) == (["1", "2"], 2)
    letters = orders_consumer(inbox_engine, []).dead_letters()
    assert [letter["event"] for letter in letters] == [b"\x00garbage that is not JSON\n", b"[1, 2]\n"]
    assert all("order.jsonl byte " in letter["event_id"] for letter in letters)  # where each line was
    assert run(orders_consumer(inbox_engine, []), url, "order", "orders").total() == 0


def test_an_unreadable_delivery_carries_the_raw_bytes_and_the_reason_and_no_envelope():
    acked = []
    delivery = Delivery.unreadable(b"junk", ValueError("not JSON"), "order", location="order.jsonl byte 0",
                                   ack=lambda: acked.append(True))

    assert (delivery.envelope, delivery.raw, delivery.malformed) == (None, b"junk", "ValueError: not JSON")
    delivery.ack()
    assert acked == [True]


def test_a_malformed_message_over_the_size_cap_keeps_its_first_megabyte(inbox_engine):
    from outbox.consumer import MAX_MALFORMED_BYTES

    consumer = orders_consumer(inbox_engine, [])
    huge = b"x" * (MAX_MALFORMED_BYTES + 10)
    delivery = Delivery.unreadable(huge, "not a CloudEvent", "order", location="order.jsonl byte 0", ack=None)

    assert consumer.handle(delivery) == "rejected"
    (letter,) = consumer.dead_letters()
    assert (len(letter["event"]), letter["reason"]) == (MAX_MALFORMED_BYTES, "malformed")
    assert letter["error"] == "not a CloudEvent"
