"""The RabbitMQ router against the RabbitMQ on this machine: the conformance suite."""

from __future__ import annotations

import pytest

from outbox.testing.conformance import RouterConformance
from outbox.testing.services import require_module, service_url


class TestAmqpRouter(RouterConformance):
    @pytest.fixture
    def router_url(self):
        require_module("pika", "rabbitmq")
        return service_url("rabbitmq")

    @pytest.fixture
    def unreachable_url(self):
        return "amqp://guest:guest@127.0.0.1:1/%2F"

    def _channel(self, url):
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(url))
        return connection, connection.channel()

    def prepare_read(self, router_url, destination):
        connection, channel = self._channel(router_url)
        try:
            channel.exchange_declare(destination, exchange_type="topic", durable=True)
            channel.queue_declare(destination + "-raw", durable=True)
            channel.queue_bind(destination + "-raw", destination, routing_key="#")
        finally:
            connection.close()

    def read_published(self, router_url, destination, count):
        from cloudevents.core.bindings import amqp

        connection, channel = self._channel(router_url)
        events = []
        try:
            while len(events) < count:
                method, properties, body = channel.basic_get(destination + "-raw", auto_ack=True)
                if method is None:
                    break
                assert properties.delivery_mode == 2 and method.routing_key.startswith("shop.")
                message = amqp.AMQPMessage(
                    properties={"content-type": properties.content_type},
                    application_properties=dict(properties.headers or {}),
                    application_data=body,
                )
                events.append(amqp.from_binary_event(message))
        finally:
            connection.close()
        return events

    def cleanup(self, router_url, prefix):
        connection, channel = self._channel(router_url)
        try:
            for queue in ("g", "order-raw"):
                channel.queue_delete(prefix + queue)
            for exchange in ("order", "payment"):
                channel.exchange_delete(prefix + exchange)
        finally:
            connection.close()


def test_a_message_the_broker_refuses_fails_alone_and_permanently_and_holds_back_its_key(tmp_path):
    """RabbitMQ closes the channel over a message above its max_message_size (406): the router
    finds that one message, fails it as permanent, publishes the others and holds back its key."""
    pika = require_module("pika", "rabbitmq")
    from outbox.faults.stage import StageError, private_broker
    from outbox.routers import Destinations, open_router
    from outbox.routers.base import HELD_BACK
    from outbox.testing.conformance import make_event
    from outbox.testing.services import in_ci

    try:
        broker_cm = private_broker("amqp", tmp_path, config="max_message_size = 4096\n")
        broker = broker_cm.__enter__()
    except StageError as exc:
        if in_ci():
            raise
        pytest.skip(str(exc))
    try:
        connection = pika.BlockingConnection(pika.URLParameters(broker.url))
        channel = connection.channel()
        channel.exchange_declare("refusal-order", exchange_type="topic", durable=True)
        channel.queue_declare("refusal-seen", durable=True)
        channel.queue_bind("refusal-seen", "refusal-order", routing_key="#")
        router = open_router(broker.url, destinations=Destinations(prefix="refusal-"), max_bytes=1 << 20)
        batch = [make_event(key="a", data={"n": 1}), make_event(key="b", data={"n": 2}),
                 make_event(key="a", data={"blob": "x" * 8000}), make_event(key="a", data={"n": 3}),
                 make_event(key="c", data={"n": 4})]
        results = router.publish(batch)
        assert [r.ok for r in results] == [True, True, False, False, True], results
        assert results[2].permanent and "406" in results[2].error and "rabbitmq refused it" in results[2].error
        assert not results[3].permanent and results[3].error == HELD_BACK
        assert router.publish([batch[3]])[0].ok  # the channel is usable again
        seen = []
        while (message := channel.basic_get("refusal-seen", auto_ack=True))[0] is not None:
            seen.append(message[1].message_id)
        # Events sent before the refused one may arrive twice (their confirms were lost with the
        # channel, so they were sent again): at least once. The refused one never arrives.
        assert set(seen) == {batch[0].id, batch[1].id, batch[4].id, batch[3].id}
        router.close()
        connection.close()
    finally:
        broker_cm.__exit__(None, None, None)
