"""``mqtt://`` and ``mqtts://`` router: MQTT 5 (Mosquitto and others), QoS 1, a topic per destination.

Mapping (CloudEvents MQTT binding, MQTT 5 binary mode): the payload is the
event's data; ``datacontenttype`` is the PUBLISH ``Content Type`` property and
every other attribute a User Property named as the attribute (``id``,
``type``, ``traceparent``, …). The topic is the destination, so one aggregate
type's events share one ordered topic; consumers filter on the ``type`` user
property.

Messages go out with QoS 1 and an event is reported published only after its
PUBACK; the PUBACKs of a batch are awaited together. A PUBACK with a failure
reason code (e.g. 0x97 payload too large, 0x87 not authorised) is permanent;
a lost connection or a timeout is transient.

Options (keyword or URL query): ``ack_timeout`` (seconds, default 30),
``max_bytes`` (default 256 MiB, the protocol's limit), ``client_id``,
``ca_file``, ``cert_file``, ``key_file`` (TLS, with ``mqtts://``).

Consumer side: a persistent session (client id = the group, clean start off,
one-day expiry) subscribed with QoS 1 to each destination topic; acks are
manual (``ack`` sends the PUBACK). MQTT has no negative ack: an unacked
message is delivered again when the session reconnects. An ephemeral group
(``open_subscription(..., ephemeral=True)``) is a clean session (clean start,
session expiry 0): the broker drops it when the connection ends, however the
process ends.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from ..envelope import Envelope
from .base import NOT_A_CLOUDEVENT, Delivery, Destinations, PublishResult, RouterError, raw_message
from .common import TLS_OPTIONS, KeyGate, as_int, masked_url, require, split_options, too_large

OPTIONS = ("ack_timeout", "max_bytes", "client_id", *TLS_OPTIONS)
DEFAULT_MAX_BYTES = 256 * 1024 * 1024 - 1024
SESSION_EXPIRY = 24 * 3600


def _client(url: str, opts: dict, client_id: str, *, clean_start: bool):
    mqtt = require("paho.mqtt.client", "mqtt", urlsplit(url).scheme)
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    parts = urlsplit(url)
    tls = parts.scheme == "mqtts"
    if not tls and any(opts.get(name) for name in TLS_OPTIONS):
        raise RouterError(f"{masked_url(url)}: TLS options need an mqtts:// URL")
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
    )
    if parts.username:
        client.username_pw_set(unquote(parts.username), unquote(parts.password) if parts.password else None)
    if tls:
        try:
            client.tls_set(ca_certs=opts.get("ca_file") or None, certfile=opts.get("cert_file") or None,
                           keyfile=opts.get("key_file") or None)
        except (OSError, ValueError) as exc:
            raise RouterError(f"{masked_url(url)}: cannot load TLS files: {exc}") from exc
    connect_props = Properties(PacketTypes.CONNECT)
    connect_props.SessionExpiryInterval = 0 if clean_start else SESSION_EXPIRY
    host, port = parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883)
    return mqtt, client, (host, port, connect_props)


def properties_of(event: Envelope):
    """Return the PUBLISH properties of ``event`` per the CloudEvents MQTT 5 binding."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = event.datacontenttype
    props.UserProperty = [(name, value) for name, value in event.attributes().items() if name != "datacontenttype"]
    return props


def envelope_of(properties, payload: bytes) -> Envelope:
    """Rebuild the envelope of a message written per the MQTT binding."""
    attrs = dict(getattr(properties, "UserProperty", None) or [])
    content_type = getattr(properties, "ContentType", None)
    if content_type:
        attrs["datacontenttype"] = content_type
    return Envelope.from_attributes(attrs, payload)


class MqttRouter:
    """Publishes QoS 1 messages with MQTT 5 user properties; PUBACKs awaited per batch."""

    #: The consumer group names a broker-wide object, so ``destination_prefix`` prefixes it too.
    GROUP_NAMES_ARE_GLOBAL = True
    #: ``open_subscription(..., ephemeral=True)`` opens a clean session, dropped when it disconnects.
    EPHEMERAL_GROUPS = True

    def __init__(self, url: str, *, destinations: Destinations | None = None, **options):
        self.url, opts = split_options(url, options, OPTIONS)
        self.destinations = destinations or Destinations()
        self.ack_timeout = float(opts.get("ack_timeout", 30))
        self.max_bytes = as_int(opts.get("max_bytes", DEFAULT_MAX_BYTES), "max_bytes", url)
        client_id = opts.get("client_id") or f"strangler-relay-{uuid.uuid4().hex[:12]}"
        self.mqtt, self.client, self._address = _client(self.url, opts, client_id, clean_start=True)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self._lock = threading.Condition()
        self._acked: dict[int, int] = {}  # mid -> reason code of its PUBACK
        self._connected = threading.Event()
        self.client.on_publish = self._on_publish
        self.client.on_connect = lambda c, u, f, rc, p: self._connected.set() if not rc.is_failure else None
        self.client.on_disconnect = lambda c, u, f, rc, p: self._connected.clear()
        self._started = False
        self._closed = False

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            self._acked[mid] = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
            self._lock.notify_all()

    def _connect(self) -> bool:
        if self._connected.is_set():
            return True
        host, port, props = self._address
        try:
            if not self._started:
                self.client.connect(host, port, keepalive=30, clean_start=True, properties=props)
                self.client.loop_start()
                self._started = True
            # After a drop, paho's network thread reconnects on its own.
        except OSError:
            return False
        return self._connected.wait(5)

    def publish(self, batch: Sequence[Envelope]) -> list[PublishResult]:
        """Publish every event at QoS 1, then await the batch's PUBACKs."""
        results: list[PublishResult | None] = [None] * len(batch)
        if not self._connect():
            return [PublishResult(e.id, f"mqtt: cannot connect to {self._address[0]}:{self._address[1]}") for e in batch]
        sent: list[tuple[int, int]] = []
        gate = KeyGate()
        for index, event in enumerate(batch):
            held = gate.held(event)
            if held is not None:
                results[index] = held
                continue
            if len(event.data) > self.max_bytes:
                results[index] = gate.fail(event, too_large(event.id, len(event.data), self.max_bytes, "mqtt"))
                continue
            info = self.client.publish(self.destinations.for_event(event), event.data, qos=1,
                                       properties=properties_of(event))
            if info.rc != self.mqtt.MQTT_ERR_SUCCESS:
                results[index] = PublishResult(event.id, f"mqtt: publish failed: {self.mqtt.error_string(info.rc)}")
                continue
            sent.append((index, info.mid))
        deadline = time.monotonic() + self.ack_timeout
        with self._lock:
            waiting = [mid for _, mid in sent]
            while waiting and time.monotonic() < deadline and self._connected.is_set():
                waiting = [mid for mid in waiting if mid not in self._acked]
                if waiting:
                    self._lock.wait(0.05)
            for index, mid in sent:
                code = self._acked.pop(mid, None)
                if code is None:
                    results[index] = PublishResult(batch[index].id, "mqtt: no PUBACK (connection lost or timeout)")
                elif code >= 0x80:
                    results[index] = PublishResult(batch[index].id, f"mqtt: broker refused, reason code {code:#x}", True)
                else:
                    results[index] = PublishResult(batch[index].id)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Disconnect; safe twice."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            self.client.disconnect()
            self.client.loop_stop()

    @classmethod
    def subscribe(cls, url: str, *, group: str, destinations: list[str], ephemeral: bool = False,
                  **options) -> MqttSubscription:
        """Subscribe to ``destinations`` (topics) in the session ``group``: persistent, or clean if ``ephemeral``."""
        return MqttSubscription(url, group, destinations, ephemeral=ephemeral, **options)


class MqttSubscription:
    """A persistent MQTT 5 session with manual QoS 1 acks."""

    def __init__(self, url: str, group: str, destinations: list[str], *, ephemeral: bool = False, **options):
        if not destinations:
            raise RouterError(f"{masked_url(url)}: name at least one destination (topic) to read")
        self.url, opts = split_options(url, options, OPTIONS)
        self.ephemeral = ephemeral
        self.mqtt, self.client, (host, port, props) = _client(self.url, opts, group, clean_start=ephemeral)
        self.client.manual_ack_set(True)
        self._queue: queue.Queue = queue.Queue()
        self._subscribed = threading.Event()
        self.client.on_message = lambda c, u, msg: self._queue.put(msg)
        self.client.on_subscribe = lambda c, u, mid, codes, p: self._subscribed.set()
        topics = [(d, 1) for d in destinations]
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topics) if not rc.is_failure else None
        try:
            self.client.connect(host, port, keepalive=30, clean_start=ephemeral, properties=props)
        except OSError as exc:
            raise RouterError(f"{masked_url(url)}: cannot connect: {exc}") from exc
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RouterError(f"{masked_url(url)}: the broker did not confirm the subscription of {group!r}")

    def receive(self, max_events: int = 100, timeout: float = 1.0) -> list[Delivery]:
        """Return up to ``max_events`` deliveries, waiting at most ``timeout`` for the first."""
        out: list[Delivery] = []
        try:
            msg = self._queue.get(timeout=timeout)
        except queue.Empty:
            return out
        while True:
            out.append(self._delivery(msg))
            if len(out) >= max_events:
                return out
            try:
                msg = self._queue.get_nowait()
            except queue.Empty:
                return out

    def _delivery(self, msg) -> Delivery:
        ack = lambda: self.client.ack(msg.mid, msg.qos)  # noqa: E731
        try:
            envelope = envelope_of(msg.properties, msg.payload)
        except NOT_A_CLOUDEVENT as exc:
            headers = dict(getattr(msg.properties, "UserProperty", None) or [])
            headers["content-type"] = getattr(msg.properties, "ContentType", None) or ""
            return Delivery.unreadable(raw_message(headers, msg.payload), exc, msg.topic,
                                       location=f"topic {msg.topic} message {msg.mid}", ack=ack,
                                       redelivered=bool(msg.dup))
        return Delivery(envelope=envelope, destination=msg.topic, redelivered=bool(msg.dup), _ack=ack)

    def close(self) -> None:
        """Disconnect, keeping a persistent session (unacked messages come again at the next connection)."""
        self.client.disconnect()
        self.client.loop_stop()
