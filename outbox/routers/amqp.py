"""``amqp://`` and ``amqps://`` router: RabbitMQ, a durable topic exchange per destination.

Mapping (CloudEvents AMQP binding, binary mode): the body is the event's data;
``datacontenttype`` is the AMQP ``content-type`` property and every other
attribute an application property (AMQP 0-9-1 header) named
``cloudEvents_<attribute>`` (the ``_`` form of the binding, readable by JMS).
The routing key is the event type, so consumers bind ``shop.order.*``.
Messages are persistent (delivery mode 2), ``message_id`` is the event id.

A batch is published with publisher confirms, and the confirms are awaited
once per batch, not per message: every message is written, then the broker's
acks (often one ``multiple`` ack) are collected. A nack or a lost connection
fails the unconfirmed events as transient; an event over ``max_bytes``
(default 16 MiB, RabbitMQ 4's default limit) is a permanent failure before sending,
and so is a message over which the broker closes the channel with ``406
PRECONDITION_FAILED`` (over its own ``max_message_size``): the unconfirmed
events are then sent one at a time to find it.
Exchanges are declared (topic, durable) the first time a destination is used.

Note: a topic exchange drops messages no queue is bound to; open the consumers'
subscriptions (which declare and bind their queues) before events flow.

Options (keyword or URL query): ``max_bytes``, ``confirm_timeout`` (seconds,
default 30), ``ca_file``, ``cert_file``, ``key_file`` (TLS, with ``amqps://``).

Consumer side: a durable queue named after the group, bound with ``#`` to each
destination's exchange; ``ack`` is ``basic.ack``, ``nack`` requeues. An
ephemeral group (``open_subscription(..., ephemeral=True)``) is an exclusive,
non-durable queue instead: RabbitMQ deletes it when its connection closes, also
when the process is killed; it binds only to exchanges that exist already.

Errors name pika's underlying reason (``describe_error``: its connection errors
have an empty text, the cause being in their arguments), and pika's own log
records are quietened (``quiet_pika``): the router reports failures itself,
once, where pika logs eight lines and a traceback per connection attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from ..envelope import Envelope
from .base import NOT_A_CLOUDEVENT, Delivery, Destinations, PublishResult, RouterError, raw_message
from .common import TLS_OPTIONS, KeyGate, as_int, masked_url, require, split_options, tls_context, too_large

OPTIONS = ("max_bytes", "confirm_timeout", "prefetch", *TLS_OPTIONS)
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
PREFIX = "cloudEvents_"


#: The level ``quiet_pika`` gives pika's loggers: only a crash of pika itself gets through.
PIKA_LOG_LEVEL = logging.CRITICAL


def quiet_pika() -> None:
    """Keep pika's log records out of the application's log, unless the application set pika's level itself.

    pika logs every failed connection attempt at ERROR, as eight lines and a
    traceback, while the router already reports the failure (a publish result,
    a ``RouterError``, the consumer's one warning per outage). The ``pika``
    logger's level is raised only while it is unset (``NOTSET``): an
    application that set it, or a level on one of pika's module loggers, keeps
    what it chose.
    """
    logger = logging.getLogger("pika")
    if logger.level == logging.NOTSET:
        logger.setLevel(PIKA_LOG_LEVEL)


def describe_error(exc: BaseException, url: str = "") -> str:
    """Return ``<type>: <reason>`` for a pika exception, with the cause pika wraps in its arguments.

    ``AMQPConnectionError`` prints as nothing: its reason is an argument, an
    ``AMQPConnectorSocketConnectError`` holding a ``ConnectionRefusedError``, or
    an ``AMQPConnectionWorkflowFailed`` holding the error of each attempt. The
    URL's password, should any text carry it, is shown as ``***``.
    """
    text = str(exc).strip()
    if not text or text in ("()", "''"):
        causes = _causes(exc)
        text = "; ".join(causes) if causes else "no reason given"
    password = urlsplit(url).password if url else None
    if password and len(password) >= 4:  # a shorter one would hide ordinary words
        for secret in {password, unquote(password)}:
            text = text.replace(secret, "***")
    return f"{type(exc).__name__}: {text}"


def _causes(exc: BaseException, depth: int = 0) -> list[str]:
    """The innermost errors inside a pika exception, as ``<type>: <text>``; distinct, in order."""
    if isinstance(getattr(exc, "exception", None), BaseException):  # AMQPConnector*Error
        inner = [exc.exception]
    elif getattr(exc, "exceptions", None):  # AMQPConnectionWorkflowFailed: one per attempt
        inner = list(exc.exceptions)
    else:
        inner = [arg for arg in exc.args if isinstance(arg, BaseException)]
    if not inner or depth > 5:
        text = str(exc).strip()
        return [f"{type(exc).__name__}: {text}" if text else type(exc).__name__] if depth else []
    out: list[str] = []
    for cause in inner:
        for text in _causes(cause, depth + 1):
            if text not in out:
                out.append(text)
    return out


def _parameters(url: str, opts: dict):
    pika = require("pika", "rabbitmq", urlsplit(url).scheme)
    quiet_pika()
    scheme = urlsplit(url).scheme
    try:
        params = pika.URLParameters(url)
    except Exception as exc:
        raise RouterError(f"{masked_url(url)}: not an AMQP URL ({exc}); e.g. amqp://guest:guest@127.0.0.1:5672/%2F") from exc
    if scheme == "amqps":
        params.ssl_options = pika.SSLOptions(tls_context(url, opts), urlsplit(url).hostname)
    elif any(opts.get(name) for name in TLS_OPTIONS):
        raise RouterError(f"{masked_url(url)}: TLS options need an amqps:// URL")
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.blocked_connection_timeout = 30
    return pika, params


def properties_of(pika, event: Envelope):
    """Return the AMQP properties of ``event`` per the CloudEvents AMQP binding."""
    headers = {PREFIX + name: value for name, value in event.attributes().items() if name != "datacontenttype"}
    return pika.BasicProperties(
        content_type=event.datacontenttype, delivery_mode=2, message_id=event.id, headers=headers
    )


def envelope_of(properties, body: bytes) -> Envelope:
    """Rebuild the envelope of a message written per the AMQP binding (``_`` or ``:`` prefix)."""
    attrs = {}
    for name, value in (properties.headers or {}).items():
        for prefix in (PREFIX, "cloudEvents:"):
            if name.startswith(prefix):
                attrs[name[len(prefix):]] = value.decode() if isinstance(value, bytes) else str(value)
    if properties.content_type:
        attrs["datacontenttype"] = properties.content_type
    return Envelope.from_attributes(attrs, body)


class AmqpRouter:
    """Publishes to RabbitMQ topic exchanges with publisher confirms awaited per batch."""

    #: ``open_subscription(..., ephemeral=True)`` opens an exclusive queue, deleted with its connection.
    EPHEMERAL_GROUPS = True

    #: The consumer group names a broker-wide object, so ``destination_prefix`` prefixes it too.
    GROUP_NAMES_ARE_GLOBAL = True

    def __init__(self, url: str, *, destinations: Destinations | None = None, **options):
        self.url, opts = split_options(url, options, OPTIONS)
        self.destinations = destinations or Destinations()
        self.max_bytes = as_int(opts.get("max_bytes", DEFAULT_MAX_BYTES), "max_bytes", url)
        self.confirm_timeout = float(opts.get("confirm_timeout", 30))
        self.pika, self.params = _parameters(self.url, opts)
        self._connection = None
        self._channel = None
        self._declared: set[str] = set()
        self._tag = 0
        self._pending: dict[int, int] = {}
        self._outcome: dict[int, str | None] = {}
        #: Set when the broker closed the channel (its reply code and text say why).
        self._closed_by = None

    def _connect(self) -> None:
        if self._connection is not None and self._connection.is_open and self._channel.is_open:
            return
        self._drop()
        self._connection = self.pika.BlockingConnection(self.params)
        self._channel = self._connection.channel()
        selected: list[bool] = []
        # Confirms on the underlying channel, so a batch's acks are collected together
        # (BlockingChannel.confirm_delivery would wait for each message's ack in turn).
        self._channel._impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=lambda _: selected.append(True))
        self._channel._impl.add_on_close_callback(self._on_channel_closed)
        deadline = time.monotonic() + 10
        while not selected and time.monotonic() < deadline:
            self._connection.process_data_events(time_limit=0.001)
        if not selected:
            raise RouterError(f"{masked_url(self.url)}: the broker did not enable publisher confirms")
        self._tag = 0
        self._declared.clear()

    def _on_confirm(self, frame) -> None:
        method = frame.method
        ok = isinstance(method, self.pika.spec.Basic.Ack)
        tags = [t for t in self._pending if t <= method.delivery_tag] if method.multiple else [method.delivery_tag]
        for tag in tags:
            index = self._pending.pop(tag, None)
            if index is not None:
                self._outcome[index] = None if ok else "the broker nacked the message (publisher confirm)"

    def _on_channel_closed(self, channel, reason) -> None:
        if isinstance(reason, self.pika.exceptions.ChannelClosedByBroker):
            self._closed_by = reason

    def _drop(self) -> None:
        try:
            if self._connection is not None and self._connection.is_open:
                self._connection.close()
        except Exception:  # already broken: nothing to release
            pass
        self._connection = self._channel = None

    def publish(self, batch: Sequence[Envelope]) -> list[PublishResult]:
        """Publish every event, then await the batch's publisher confirms.

        When the broker closes the channel over a message (``406
        PRECONDITION_FAILED``: over its ``max_message_size``, for one), the
        events it had not confirmed are sent again one at a time, each confirm
        awaited, so the one it refuses is found and failed as permanent while
        the others are published and the later events of its key held back.
        """
        results: list[PublishResult | None] = [None] * len(batch)
        gate = KeyGate()
        to_send: list[int] = []
        for index, event in enumerate(batch):
            held = gate.held(event)
            if held is not None:
                results[index] = held
            elif len(event.data) > self.max_bytes:
                results[index] = gate.fail(event, too_large(event.id, len(event.data), self.max_bytes, "amqp"))
            else:
                to_send.append(index)
        outcome, error, refused = self._send(batch, to_send)
        if refused is not None:
            unconfirmed = [index for index in to_send if outcome.get(index, "unconfirmed") is not None]
            error = None
            for index in unconfirmed:
                event = batch[index]
                held = gate.held(event)
                if held is not None or error is not None:
                    results[index] = held or PublishResult(event.id, error)
                    continue
                one, error, refused = self._send(batch, [index])
                if refused is not None:
                    error = None
                    results[index] = gate.fail(event, PublishResult(event.id, f"rabbitmq refused it: {refused}", True))
                else:
                    results[index] = PublishResult(event.id, one.get(index, error or "unconfirmed"))
        for index in to_send:
            if results[index] is None:
                results[index] = PublishResult(batch[index].id, outcome.get(index, error or "unconfirmed"))
        return results  # type: ignore[return-value]

    def _send(self, batch: Sequence[Envelope], indexes: list[int]) -> tuple[dict[int, str | None], str | None, str | None]:
        """Publish ``batch[indexes]`` and await their confirms.

        Return (outcome by index: None when confirmed, else why not; the error of
        the whole send, if it failed; the broker's reason when it closed the
        channel over a message, which the caller pins down).
        """
        self._pending.clear()
        self._outcome = {}
        if not indexes:
            return {}, None, None
        error = refused = None
        try:
            self._connect()
            impl = self._channel._impl
            for index in indexes:
                event = batch[index]
                exchange = self.destinations.for_event(event)
                if exchange not in self._declared:
                    self._channel.exchange_declare(exchange, exchange_type="topic", durable=True)
                    self._declared.add(exchange)
                impl.basic_publish(exchange, event.type, event.data, properties_of(self.pika, event))
                self._tag += 1
                self._pending[self._tag] = index
            deadline = time.monotonic() + self.confirm_timeout
            while self._pending and time.monotonic() < deadline and self._closed_by is None:
                # Short slices: confirms arrive on the underlying channel, which does not end
                # a longer process_data_events early.
                self._connection.process_data_events(time_limit=0.001)
        except RouterError:
            raise
        except Exception as exc:  # connection or channel lost: whatever is unconfirmed is transient
            self._drop()
            error = f"rabbitmq: {describe_error(exc, self.url)}"
        else:
            if self._pending:
                error = "rabbitmq: no publisher confirm within the timeout"
                self._drop()
        closed_by, self._closed_by = self._closed_by, None
        if closed_by is not None:  # the broker closed the channel: it says why
            error = f"rabbitmq closed the channel: {closed_by.reply_code} {closed_by.reply_text}"
            if closed_by.reply_code == 406:
                refused = f"{closed_by.reply_code} {closed_by.reply_text}"
            self._drop()
        outcome = {index: self._outcome.get(index, error or "unconfirmed") for index in indexes}
        self._pending.clear()
        return outcome, error, refused

    def close(self) -> None:
        """Close the connection; safe twice."""
        self._drop()

    @classmethod
    def subscribe(cls, url: str, *, group: str, destinations: list[str], ephemeral: bool = False,
                  **options) -> AmqpSubscription:
        """Consume ``destinations`` (exchanges) through the durable queue ``group`` (exclusive if ``ephemeral``)."""
        return AmqpSubscription(url, group, destinations, ephemeral=ephemeral, **options)


class AmqpSubscription:
    """A durable RabbitMQ queue bound to the destinations' exchanges; ephemeral: an exclusive one."""

    def __init__(self, url: str, group: str, destinations: list[str], *, ephemeral: bool = False, **options):
        if not destinations:
            raise RouterError(f"{masked_url(url)}: name at least one destination (exchange) to read")
        self.url, opts = split_options(url, options, OPTIONS)
        prefetch = as_int(opts.get("prefetch", 500), "prefetch", url)
        self.pika, params = _parameters(self.url, opts)
        try:
            self.connection = self.pika.BlockingConnection(params)
        except Exception as exc:
            raise RouterError(f"{masked_url(url)}: cannot connect: {describe_error(exc, self.url)}") from exc
        self.queue = group
        self.ephemeral = ephemeral
        self._buffer: list[Delivery] = []
        try:
            self.channel = self.connection.channel()
            self.channel.basic_qos(prefetch_count=prefetch)
            if ephemeral:
                self._check_exchanges(destinations)
                # Exclusive: deleted by RabbitMQ when this connection closes, however the process ends.
                self.channel.queue_declare(group, durable=False, exclusive=True, auto_delete=True)
            else:
                self.channel.queue_declare(group, durable=True)
            for exchange in destinations:
                if not ephemeral:
                    self.channel.exchange_declare(exchange, exchange_type="topic", durable=True)
                self.channel.queue_bind(group, exchange, routing_key="#")
            self.channel.basic_consume(group, self._on_message)
        except RouterError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise RouterError(f"{masked_url(url)}: cannot open queue {group!r}: {describe_error(exc, self.url)}") from exc

    def _check_exchanges(self, destinations: list[str]) -> None:
        """Raise ``RouterError`` naming the first destination without an exchange (an ephemeral group creates none)."""
        for exchange in destinations:
            try:
                self.channel.exchange_declare(exchange, exchange_type="topic", passive=True)
            except self.pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
                raise RouterError(
                    f"{masked_url(self.url)}: no exchange {exchange!r}: nothing was published to that destination "
                    "yet, or its name is misspelt"
                ) from None

    def _on_message(self, channel, method, properties, body) -> None:
        tag = method.delivery_tag
        ack = lambda: self.channel.basic_ack(tag)  # noqa: E731
        nack = lambda: self.channel.basic_nack(tag, requeue=True)  # noqa: E731
        try:
            envelope = envelope_of(properties, body)
        except NOT_A_CLOUDEVENT as exc:
            headers = {**(properties.headers or {}), "content-type": properties.content_type or ""}
            self._buffer.append(Delivery.unreadable(
                raw_message(headers, body), exc, method.exchange,
                location=f"queue {self.queue} message {properties.message_id or tag}",
                ack=ack, nack=nack, redelivered=method.redelivered,
            ))
            return
        self._buffer.append(Delivery(envelope=envelope, destination=method.exchange, redelivered=method.redelivered,
                                     _ack=ack, _nack=nack))

    def receive(self, max_events: int = 100, timeout: float = 1.0) -> list[Delivery]:
        """Return up to ``max_events`` deliveries, waiting at most ``timeout`` for the first."""
        deadline = time.monotonic() + timeout
        while not self._buffer and time.monotonic() < deadline:
            self.connection.process_data_events(time_limit=min(0.1, max(0.0, deadline - time.monotonic())))
        if self._buffer:
            self.connection.process_data_events(time_limit=0)
        out, self._buffer = self._buffer[:max_events], self._buffer[max_events:]
        return out

    def close(self) -> None:
        """Close the connection; unacked messages are requeued by the broker."""
        try:
            if self.connection.is_open:
                self.connection.close()
        except Exception:
            pass
