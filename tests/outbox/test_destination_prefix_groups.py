"""Two environments sharing a broker, their services' groups of one name, read only their own events.

On RabbitMQ a group is a queue and on MQTT a session, both named across the
broker: ``destination_prefix`` names them too, or staging's service would read
production's events from the queue both bound.
"""

from __future__ import annotations

import json
import uuid

import pytest

from outbox.routers import open_router, open_subscription
from outbox.testing.conformance import make_event, receive_all
from outbox.testing.services import require_module, service_url


def delete_amqp(url: str, queues: list[str], exchanges: list[str]) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange)
    finally:
        connection.close()


@pytest.mark.parametrize("service, module, extra", [("rabbitmq", "pika", "rabbitmq"), ("mqtt", "paho.mqtt", "mqtt")])
def test_one_group_name_in_two_environments_reads_only_its_own_events(service, module, extra):
    require_module(module, extra)
    url = service_url(service)
    run = uuid.uuid4().hex[:8]
    separator = "&" if "?" in url else "?"
    environments = {name: f"{url}{separator}destination_prefix={name[0]}{run}_" for name in ("staging", "production")}
    group = f"svc{run}"
    subscriptions = {name: open_subscription(u, group=group, destinations=["order"]) for name, u in environments.items()}
    try:
        for name, environment_url in environments.items():
            router = open_router(environment_url)
            try:
                events = [make_event(key=f"{name}-{n}", data={"from": name}) for n in range(3)]
                assert all(result.ok for result in router.publish(events))
            finally:
                router.close()
        for name, subscription in subscriptions.items():
            received = receive_all(subscription, 3, timeout=10)
            received += subscription.receive(max_events=10, timeout=1.0)  # nothing more: none of the other's
            assert [json.loads(d.envelope.data)["from"] for d in received] == [name] * 3
    finally:
        for subscription in subscriptions.values():
            subscription.close()
        if service == "rabbitmq":
            delete_amqp(url, [f"{name[0]}{run}_{group}" for name in environments],
                        [f"{name[0]}{run}_order" for name in environments])
