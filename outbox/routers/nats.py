"""``nats://`` (``tls://``, ``nats+tls://``) router: NATS JetStream, a stream per destination.

Mapping (CloudEvents NATS binding, binary mode): the payload is the event's
data; every attribute is a ``ce-<attribute>`` header except ``datacontenttype``,
which is ``content-type``. ``Nats-Msg-Id`` is the event id, so within the
stream's duplicate window the server drops a re-publish (after a relay crash
between publish and mark). The subject is ``<destination>.<event type>``; the
stream ``<destination>`` (created if missing, file storage) captures
``<destination>.>``.

A batch is published asynchronously and its JetStream acks are awaited once
for the whole batch. A connection problem, a timeout or "no responders" is
transient; a message over the server's ``max_payload`` or rejected by the
stream is permanent.

nats-py is asyncio; the router runs it on a private event loop thread, so to
the relay it is an ordinary synchronous router.

Options (keyword or URL query): ``ack_timeout`` (seconds, default 30),
``max_bytes`` (default: the server's max_payload), ``ca_file``, ``cert_file``,
``key_file`` (TLS, with ``tls://`` or ``nats+tls://``); consumer side,
``rewind`` (default on, ``rewind=0`` turns it off).

Consumer side: a durable pull consumer named after the group on each
destination's stream; ``ack`` acks, ``nack`` asks for redelivery. An
ephemeral group (``open_subscription(..., ephemeral=True)``) is an ephemeral
pull consumer of that name instead, deleted on ``close`` and by the server
after ``EPHEMERAL_INACTIVE`` seconds without a pull (a process killed); it
reads only streams that exist already and is never rewound.

Rewind: JetStream gives a dead consumer's unacked messages back only after
``ack_wait``, behind the newer ones its restarted process already pulled, so
an aggregate's events would be handled out of order. When a subscription opens
a durable consumer that has messages pending acknowledgement (a previous
process died holding them), it recreates the consumer, with its configuration
otherwise unchanged, to start at the ack floor's next stream sequence:
everything not yet acked in sequence comes again, in stream order, before
anything newer. Messages above the floor that were acked already come again
too (the inbox absorbs them). This assumes one process per group: a process
that opens the group while another still holds messages rewinds under it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..envelope import Envelope
from .base import NOT_A_CLOUDEVENT, Delivery, Destinations, PublishResult, RouterError, raw_message
from .common import TLS_OPTIONS, KeyGate, masked_url, require, split_options, tls_context, too_large

OPTIONS = ("ack_timeout", "max_bytes", "duplicate_window", "rewind", *TLS_OPTIONS)
#: Seconds without a pull after which the server deletes an ephemeral group's consumer.
EPHEMERAL_INACTIVE = 30.0
_TLS_SCHEMES = ("tls", "nats+tls")


class _Loop:
    """An asyncio event loop on a daemon thread; ``run`` calls a coroutine from sync code."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="strangler-nats", daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        if not self.loop.is_running():
            self.loop.close()


def _server(url: str, opts: dict) -> tuple[str, Any]:
    parts = urlsplit(url)
    if parts.scheme in _TLS_SCHEMES:
        return urlunsplit(("tls", parts.netloc, "", "", "")), tls_context(url, opts)
    if any(opts.get(name) for name in TLS_OPTIONS):
        raise RouterError(f"{masked_url(url)}: TLS options need a tls:// or nats+tls:// URL")
    return urlunsplit(("nats", parts.netloc, "", "", "")), None


def headers_of(event: Envelope) -> dict[str, str]:
    """Return the NATS headers of ``event`` per the CloudEvents NATS binding, plus Nats-Msg-Id."""
    headers = {"ce-" + name: value for name, value in event.attributes().items() if name != "datacontenttype"}
    headers["content-type"] = event.datacontenttype
    headers["Nats-Msg-Id"] = event.id
    return headers


def envelope_of(headers: dict[str, str] | None, data: bytes) -> Envelope:
    """Rebuild the envelope of a message written per the NATS binding."""
    attrs = {}
    for name, value in (headers or {}).items():
        lower = name.lower()
        if lower.startswith("ce-"):
            attrs[lower[3:]] = value
        elif lower == "content-type":
            attrs["datacontenttype"] = value
    return Envelope.from_attributes(attrs, data)


async def _quiet(exc: Exception) -> None:
    """nats-py's error callback: the router reports errors through its results instead."""


def _api_error(nats, error: dict) -> Exception:
    """The JetStream API error of an error reply (nats-py's ``from_error`` raises it in some versions)."""
    try:
        return nats.js.errors.APIError.from_error(error)
    except nats.js.errors.APIError as exc:
        return exc


class _Client:
    """One NATS connection with JetStream, (re)connected on demand on the private loop."""

    def __init__(self, url: str, opts: dict):
        self.nats = require("nats", "nats", urlsplit(url).scheme)
        self.url = url
        self.server, self.tls = _server(url, opts)
        self.loop = _Loop()
        self.nc = None
        self.js = None
        self._acks: dict[str, asyncio.Future] = {}
        self._ack_prefix = ""
        self._ack_numbers = itertools.count()

    async def connect(self):
        if self.nc is not None and self.nc.is_connected:
            return self.js
        if self.nc is not None:
            await self._close()
        kwargs: dict[str, Any] = {
            "servers": [self.server], "connect_timeout": 3, "allow_reconnect": False,
            # One try: the relay's own backoff decides when to try again.
            "max_reconnect_attempts": 1, "reconnect_time_wait": 0, "error_cb": _quiet,
            "disconnected_cb": self._on_disconnect,
        }
        if self.tls is not None:
            kwargs["tls"] = self.tls
        self.nc = await self.nats.connect(**kwargs)
        self.js = self.nc.jetstream()
        self._ack_prefix = self.nc.new_inbox()
        await self.nc.subscribe(self._ack_prefix + ".*", cb=self._on_ack)
        return self.js

    async def publish_async(self, subject: str, data: bytes, headers: dict[str, str]) -> asyncio.Future:
        """Publish to JetStream; the future gets the ack, or the stream's error as an ``APIError``.

        Its own reply handling rather than nats-py's ``publish_async``, whose
        futures never complete when the stream answers with an error (nats-py
        2.x raises the error inside its reply callback), which would turn every
        refusal into an ack timeout.
        """
        reply = f"{self._ack_prefix}.{next(self._ack_numbers)}"
        future = asyncio.get_running_loop().create_future()
        self._acks[reply] = future
        await self.nc.publish(subject, data, reply=reply, headers=headers)
        return future

    async def _on_disconnect(self) -> None:
        """The connection is gone: no ack will come, so the batch fails now rather than at ``ack_timeout``."""
        for future in self._acks.values():
            if not future.done():
                future.set_exception(ConnectionError("nats: connection lost before the JetStream ack"))

    def forget_cancelled(self) -> None:
        """Stop waiting for the acks of publishes that timed out."""
        self._acks = {reply: future for reply, future in self._acks.items() if not future.done()}

    async def _on_ack(self, msg) -> None:
        future = self._acks.pop(msg.subject, None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(self.nats.js.errors.NoStreamResponseError())
            return
        try:
            reply = json.loads(msg.data)
        except ValueError:
            future.set_exception(RouterError(f"not a JetStream ack: {msg.data[:200]!r}"))
            return
        if isinstance(reply, dict) and "error" in reply:
            future.set_exception(_api_error(self.nats, reply["error"]))
        else:
            future.set_result(reply)

    async def _close(self):
        nc, self.nc, self.js = self.nc, None, None
        acks, self._acks = self._acks, {}
        for future in acks.values():
            future.cancel()
        if nc is not None:
            try:
                await nc.close()
            except Exception:
                pass

    def close(self):
        if self.loop.loop.is_closed():
            return
        try:
            self.loop.run(self._close(), timeout=10)
        finally:
            self.loop.stop()


class NatsRouter:
    """Publishes to JetStream with acks awaited per batch."""

    #: ``open_subscription(..., ephemeral=True)`` opens ephemeral consumers, deleted on close or when inactive.
    EPHEMERAL_GROUPS = True

    def __init__(self, url: str, *, destinations: Destinations | None = None, **options):
        self.url, opts = split_options(url, options, OPTIONS)
        self.destinations = destinations or Destinations()
        self.ack_timeout = float(opts.get("ack_timeout", 30))
        self.max_bytes = int(opts["max_bytes"]) if opts.get("max_bytes") else None
        self.duplicate_window = float(opts.get("duplicate_window", 120))
        self.client = _Client(self.url, opts)
        self._streams: set[str] = set()

    async def _stream(self, js, name: str) -> None:
        if name in self._streams:
            return
        errors = self.client.nats.js.errors
        try:
            await js.stream_info(name)
        except errors.NotFoundError:
            from nats.js.api import StreamConfig

            try:
                await js.add_stream(StreamConfig(
                    name=name, subjects=[f"{name}.>"], duplicate_window=self.duplicate_window,
                ))
            except errors.BadRequestError as exc:
                if "already" not in str(exc):
                    raise
        self._streams.add(name)

    async def _publish(self, batch: Sequence[Envelope]) -> list[PublishResult]:
        nats = self.client.nats
        results: list[PublishResult | None] = [None] * len(batch)
        try:
            js = await self.client.connect()
        except Exception as exc:
            return [PublishResult(e.id, f"nats unreachable: {type(exc).__name__}: {exc}") for e in batch]
        limit = self.max_bytes or self.client.nc.max_payload
        futures: list[tuple[int, asyncio.Future]] = []
        try:
            gate = KeyGate()
            for index, event in enumerate(batch):
                held = gate.held(event)
                if held is not None:
                    results[index] = held
                    continue
                headers = headers_of(event)
                size = len(event.data) + sum(len(k) + len(v) + 4 for k, v in headers.items())
                if size > limit:
                    results[index] = gate.fail(event, too_large(event.id, size, limit, "nats"))
                    continue
                destination = self.destinations.for_event(event)
                await self._stream(js, destination)
                future = await self.client.publish_async(f"{destination}.{event.type}", event.data, headers)
                futures.append((index, future))
            await self.client.nc.flush(timeout=self.ack_timeout)
            done, _ = await asyncio.wait([f for _, f in futures], timeout=self.ack_timeout) if futures else (set(), set())
        except Exception as exc:
            error = f"nats: {type(exc).__name__}: {exc}"
            await self.client._close()
            for index, future in futures:
                if future.done() and not future.cancelled() and future.exception() is None:
                    results[index] = PublishResult(batch[index].id)
                else:
                    results[index] = PublishResult(batch[index].id, error)
            return [r or PublishResult(batch[i].id, error) for i, r in enumerate(results)]
        for index, future in futures:
            if future not in done:
                future.cancel()
                results[index] = PublishResult(batch[index].id, "nats: no JetStream ack within the timeout")
            elif future.exception() is not None:
                exc = future.exception()
                permanent = isinstance(exc, nats.js.errors.APIError) and getattr(exc, "code", 0) in (400, 413)
                results[index] = PublishResult(batch[index].id, f"nats: {type(exc).__name__}: {exc}", permanent)
            else:
                results[index] = PublishResult(batch[index].id)
        self.client.forget_cancelled()
        return results  # type: ignore[return-value]

    def publish(self, batch: Sequence[Envelope]) -> list[PublishResult]:
        """Publish every event and await the batch's JetStream acks."""
        return self.client.loop.run(self._publish(list(batch)))

    def close(self) -> None:
        """Close the connection and stop the private loop; safe twice."""
        self.client.close()

    @classmethod
    def subscribe(cls, url: str, *, group: str, destinations: list[str], ephemeral: bool = False,
                  **options) -> NatsSubscription:
        """Read ``destinations`` (streams) through pull consumers named ``group``: durable, or ``ephemeral``."""
        return NatsSubscription(url, group, destinations, ephemeral=ephemeral, **options)


class NatsSubscription:
    """Durable JetStream pull consumers, one per destination stream."""

    def __init__(self, url: str, group: str, destinations: list[str], *, ephemeral: bool = False, **options):
        if not destinations:
            raise RouterError(f"{masked_url(url)}: name at least one destination (stream) to read")
        self.url, opts = split_options(url, options, OPTIONS)
        self.client = _Client(self.url, opts)
        self.group = group
        self.destinations = list(destinations)
        self.ephemeral = ephemeral
        self.rewind = str(opts.get("rewind", "1")).strip().lower() not in ("0", "false", "no", "off")
        self.subs: list = []
        #: stream → the last stream sequence delivered before a rewind: anything up to it comes again.
        self.rewound: dict[str, int] = {}
        try:
            self.client.loop.run(self._open(), timeout=30)
        except Exception as exc:
            self.close()
            if isinstance(exc, RouterError):
                raise
            raise RouterError(f"{masked_url(url)}: cannot open consumer {group!r}: {type(exc).__name__}: {exc}") from exc

    async def _open(self) -> None:
        js = await self.client.connect()
        errors = self.client.nats.js.errors
        from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

        for name in self.destinations:
            try:
                await js.stream_info(name)
            except errors.NotFoundError:
                if self.ephemeral:  # creates nothing that would outlive it
                    raise RouterError(
                        f"{masked_url(self.url)}: no stream {name!r}: nothing was published to that destination "
                        "yet, or its name is misspelt"
                    ) from None
                try:
                    await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"]))
                except errors.BadRequestError:
                    pass
            if self.ephemeral:
                # A name but no durable name: ephemeral, gone after inactive_threshold without a pull.
                await js.add_consumer(name, ConsumerConfig(
                    name=self.group, ack_policy=AckPolicy.EXPLICIT, filter_subject=f"{name}.>",
                    inactive_threshold=EPHEMERAL_INACTIVE,
                ))
                self.subs.append((name, await js.pull_subscribe_bind(consumer=self.group, stream=name)))
                continue
            if self.rewind:
                await self._rewind(js, name)
            self.subs.append((name, await js.pull_subscribe(f"{name}.>", durable=self.group, stream=name)))

    async def _rewind(self, js, stream: str) -> None:
        """Restart the durable consumer at its ack floor if a previous process left messages unacked.

        Deleting and adding it again is the only way to move a consumer back on
        this server version; its configuration is kept but for where it starts.
        """
        try:
            info = await js.consumer_info(stream, self.group)
        except self.client.nats.js.errors.NotFoundError:
            return
        if not info.num_ack_pending:
            return
        from nats.js.api import DeliverPolicy

        start = (info.ack_floor.stream_seq if info.ack_floor else 0) + 1
        config = dataclasses.replace(
            info.config, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start, opt_start_time=None,
        )
        await js.delete_consumer(stream, self.group)
        await js.add_consumer(stream, config)
        self.rewound[stream] = info.delivered.stream_seq if info.delivered else 0

    async def _fetch(self, max_events: int, timeout: float) -> list[Delivery]:
        out: list[Delivery] = []
        per = max(timeout / len(self.subs), 0.05)
        for name, sub in self.subs:
            if len(out) >= max_events:
                break
            try:
                messages = await sub.fetch(max_events - len(out), timeout=per)
            except TimeoutError:
                continue
            except self.client.nats.errors.TimeoutError:
                continue
            for msg in messages:
                redelivered = (msg.metadata.num_delivered > 1
                               or msg.metadata.sequence.stream <= self.rewound.get(name, 0))
                ack = lambda m=msg: self.client.loop.run(m.ack(), timeout=30)  # noqa: E731
                nack = lambda m=msg: self.client.loop.run(m.nak(), timeout=30)  # noqa: E731
                try:
                    envelope = envelope_of(msg.headers, msg.data)
                except NOT_A_CLOUDEVENT as exc:
                    out.append(Delivery.unreadable(
                        raw_message(msg.headers, msg.data), exc, name,
                        location=f"stream {name} sequence {msg.metadata.sequence.stream}",
                        ack=ack, nack=nack, redelivered=redelivered,
                    ))
                    continue
                out.append(Delivery(envelope=envelope, destination=name, redelivered=redelivered,
                                    _ack=ack, _nack=nack))
        return out

    def receive(self, max_events: int = 100, timeout: float = 1.0) -> list[Delivery]:
        """Return up to ``max_events`` deliveries, waiting at most about ``timeout``."""
        return self.client.loop.run(self._fetch(max_events, timeout), timeout=timeout + 30)

    async def _delete_consumers(self) -> None:
        """Delete the ephemeral group's consumers (the server would, after ``EPHEMERAL_INACTIVE``)."""
        for name, _ in self.subs:
            try:
                await self.client.js.delete_consumer(name, self.group)
            except Exception:  # gone already, or the server out of reach: inactivity removes it
                pass

    def close(self) -> None:
        """Close the connection, deleting an ephemeral group's consumers; safe twice.

        A durable group's unacked messages come first when it opens again (rewind).
        """
        if self.ephemeral and self.subs and self.client.js is not None and not self.client.loop.loop.is_closed():
            try:
                self.client.loop.run(self._delete_consumers(), timeout=10)
            except Exception:
                pass
            self.subs = []
        self.client.close()
