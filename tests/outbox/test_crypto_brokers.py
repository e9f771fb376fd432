"""On real brokers: emit-time-encrypted events carry no plaintext, and the consumer opens them.

What the broker stores is read back raw, with the broker's own client (Redis
stream entries, RabbitMQ message bodies and headers, JetStream messages), and
searched for a customer e-mail address that every event carries.
"""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import create_engine

from outbox import inbox
from outbox.consumer import Consumer
from outbox.routers import Destinations, open_router, open_subscription, router_class
from outbox.testing.services import service_url
from tests.outbox.crypto_helpers import make_world, sealed_envelope

CANARY = "canary.broker@example.com"


def router_url(service: str) -> str:
    url = service_url(service)
    router_class(url)  # installed, or this fails naming the extra
    return url


def raw_redis_entries(url: str, prefix: str) -> bytes:
    import redis

    client = redis.Redis.from_url(url)
    try:
        dump = b""
        for key in client.scan_iter(match=f"*{prefix}*".encode()):
            if client.type(key) == b"stream":
                dump += repr(client.xrange(key)).encode()
                client.delete(key)
        return dump
    finally:
        client.close()


class RawAmqpQueue:
    """A queue of our own bound to the destination's exchange: it receives every message raw."""

    def __init__(self, url: str, exchange: str):
        import pika

        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.queue_bind(self.queue, exchange, routing_key="#")
        self.exchange = exchange

    def drain(self) -> bytes:
        dump = b""
        while True:
            method, properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                break
            dump += body + repr(properties.headers).encode()
        self.channel.exchange_delete(self.exchange)
        self.connection.close()
        return dump


def raw_jetstream_messages(url: str, stream: str, count: int) -> bytes:
    import asyncio

    import nats

    async def read() -> bytes:
        client = await nats.connect(url)
        try:
            js = client.jetstream()
            dump = b""
            for seq in range(1, count + 1):
                msg = await js.get_msg(stream, seq)
                dump += (msg.data or b"") + repr(msg.headers).encode()
            await js.delete_stream(stream)
            return dump
        finally:
            await client.close()

    return asyncio.run(read())


@pytest.mark.parametrize("service", ["redis", "rabbitmq", "nats"])
def test_encrypted_events_on_the_broker_hold_no_plaintext_and_the_consumer_opens_them(service, tmp_path, sqlite_url):
    url = router_url(service)
    world = make_world(tmp_path)
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    destinations = Destinations(prefix=prefix)
    events = [sealed_envelope(world.sealer(), {"id": n, "email": CANARY}, subject=str(n)) for n in range(3)]

    inbox.upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    consumer = Consumer("billing", engine, keys_dir=str(world.keys), policy=str(world.policy_path))
    received = []
    consumer.add_handler("shop.order.created", lambda event, session: received.append(event.data))
    # Subscribe first, so queue-based brokers have the binding before the publish.
    subscription = open_subscription(url, group=f"{prefix}billing", destinations=[f"{prefix}order"])
    raw_queue = RawAmqpQueue(url, f"{prefix}order") if service == "rabbitmq" else None
    router = open_router(url, destinations=destinations)
    try:
        assert all(r.ok for r in router.publish(events))
    finally:
        router.close()
    for _ in range(20):
        consumer.run(subscription=subscription, until_idle=True, poll=0.5, install_signals=False)
        if len(received) == 3:
            break
        subscription = open_subscription(url, group=f"{prefix}billing", destinations=[f"{prefix}order"])
    engine.dispose()
    assert sorted(d["id"] for d in received) == [0, 1, 2]
    assert all(d["email"] == CANARY for d in received)
    if service == "redis":
        raw = raw_redis_entries(url, prefix)
    elif service == "rabbitmq":
        raw = raw_queue.drain()
    else:
        raw = raw_jetstream_messages(url, f"{prefix}order", len(events))
    assert raw.count(b"shop.order.created") >= len(events)  # what was read is really the events
    assert CANARY.encode() not in raw
    assert all(CANARY.encode() not in e.data and json.loads(e.data)["recipients"] for e in events)
