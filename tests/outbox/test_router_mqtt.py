"""The MQTT 5 router against the Mosquitto on this machine: the conformance suite."""

from __future__ import annotations

import queue
import uuid
from urllib.parse import urlsplit

import pytest

from outbox.testing.conformance import RouterConformance
from outbox.testing.services import require_module, service_url
from tests.outbox.routers_helpers import sdk_from_headers


def _client(url, client_id, clean_start=True):
    import paho.mqtt.client as mqtt

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    parts = urlsplit(url)
    client.connect(parts.hostname, parts.port or 1883, clean_start=clean_start)
    return client


class TestMqttRouter(RouterConformance):
    nack_redelivers = False  # MQTT has no negative ack: the next connection redelivers

    @pytest.fixture
    def router_url(self):
        require_module("paho.mqtt.client", "mqtt")
        return service_url("mqtt")

    @pytest.fixture
    def unreachable_url(self):
        return "mqtt://127.0.0.1:1"

    def prepare_read(self, router_url, destination):
        self._raw: queue.Queue = queue.Queue()
        client = _client(router_url, f"raw-{uuid.uuid4().hex[:8]}")
        client.on_message = lambda c, u, msg: self._raw.put(msg)
        subscribed = queue.Queue()
        client.on_subscribe = lambda *args: subscribed.put(True)
        client.subscribe(destination, qos=1)
        client.loop_start()
        subscribed.get(timeout=10)
        self._raw_client = client

    def read_published(self, router_url, destination, count):
        try:
            out = []
            for _ in range(count):
                msg = self._raw.get(timeout=10)
                attrs = dict(msg.properties.UserProperty)
                out.append(sdk_from_headers(attrs, msg.properties.ContentType, msg.payload))
            return out
        finally:
            self._raw_client.disconnect()
            self._raw_client.loop_stop()

    def cleanup(self, router_url, prefix):
        # End the persistent session the suite's group left on the broker.
        client = _client(router_url, prefix + "g", clean_start=True)
        client.disconnect()
