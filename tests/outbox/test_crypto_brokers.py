"""On real brokers: emit-time-encrypted events carry no plaintext, and the consumer opens them.

Runs once the broker routers are installed (entry points ``redis``, ``amqp``,
``nats``); until then each case skips, naming the missing router.
"""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import create_engine

from outbox import inbox
from outbox.consumer import Consumer
from outbox.routers import Destinations, RouterError, open_router, open_subscription, router_class
from outbox.testing.services import service_url
from tests.outbox.crypto_helpers import make_world, sealed_envelope

CANARY = "canary.broker@example.com"


def router_or_skip(service: str) -> str:
    url = service_url(service)
    try:
        router_class(url)
    except RouterError as exc:
        pytest.skip(f"no router for {service} yet: {exc}")
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


@pytest.mark.parametrize("service", ["redis", "rabbitmq", "nats"])
def test_encrypted_events_on_the_broker_hold_no_plaintext_and_the_consumer_opens_them(service, tmp_path, sqlite_url):
    url = router_or_skip(service)
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
        assert raw and CANARY.encode() not in raw
    assert all(CANARY.encode() not in e.data and json.loads(e.data)["recipients"] for e in events)
