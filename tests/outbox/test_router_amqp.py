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
