"""On MQTT, ``strangler verify`` ends the persistent session of each consumer group it opened.

A group's session outlives its connection on purpose (one day), so the broker would keep
the stage's sessions, and queue for them, long after the run. A session is checked the way
a returning consumer would find it: reconnecting with its client id and clean start off.
"""

from __future__ import annotations

import json
import threading
import uuid
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from outbox.faults.stage import cleanup_broker, with_query
from outbox.routers import open_subscription
from outbox.testing.services import require_module, service_url
from toolkit.cli import cli


@pytest.fixture
def mqtt_url():
    require_module("paho.mqtt.client", "mqtt")
    return service_url("mqtt")


def session_present(url: str, client_id: str, *, keep: bool = False) -> bool:
    """Whether the broker holds a session for ``client_id``; ``keep`` leaves it (else it ends at the disconnect)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    answered, flags = threading.Event(), {}

    def on_connect(client, userdata, connect_flags, reason_code, properties):
        flags["present"] = connect_flags.session_present
        answered.set()

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.on_connect = on_connect
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 24 * 3600 if keep else 0
    parts = urlsplit(url)
    client.connect(parts.hostname, parts.port or 1883, clean_start=False, properties=props)
    client.loop_start()
    try:
        assert answered.wait(10), "the broker did not answer the CONNECT"
    finally:
        client.disconnect()
        client.loop_stop()
    return flags["present"]


def test_the_clean_up_ends_a_groups_persistent_session(mqtt_url):
    prefix = f"sv{uuid.uuid4().hex[:10]}_"
    open_subscription(with_query(mqtt_url, destination_prefix=prefix), group="svc", destinations=["item"]).close()
    assert session_present(mqtt_url, f"{prefix}svc", keep=True)  # the check sees a session that is there

    cleanup_broker(mqtt_url, prefix, [f"{prefix}item"], ["svc"])

    assert not session_present(mqtt_url, f"{prefix}svc")


def test_verify_leaves_no_session_of_its_consumer_groups_on_the_broker(mqtt_url, sqlite_url):
    result = CliRunner().invoke(cli, [
        "verify", "--db", sqlite_url, "--router", mqtt_url, "--scenario", "relay-kill",
        "--events", "30", "--kills", "1", "--seconds", "5", "--json",
    ])
    assert result.exit_code == 0, result.output
    stage = json.loads(result.stdout)["stage"]
    prefix = f"{stage}_"
    # Opened through the prefixed URL, each group's client id carries the prefix again.
    checker, consumer = f"{prefix}{prefix}check", f"{prefix}{stage}_svc"
    assert not session_present(mqtt_url, checker)
    assert not session_present(mqtt_url, consumer)
