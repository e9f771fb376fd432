"""The router protocol: how the relay hands events to a broker, and how consumers read them back.

A router is a class registered under the ``strangler.routers`` entry-point
group, keyed by URL scheme. Its guarantees, which the relay relies on and
``outbox.testing.conformance`` checks for every router:

* ``publish(batch)`` returns one ``PublishResult`` per event, in batch order.
  ``ok`` means the broker has accepted the message durably (publisher
  confirm, stream append, JetStream ack, MQTT PUBACK, fsync); nothing is ever
  reported ok before that. A batch may fail halfway: each event's own result
  says which were accepted, and the relay re-publishes only those that were not.
* A failed result says whether the failure is ``permanent`` (this message
  will never be accepted: too large, rejected by the broker) or transient
  (connection lost, broker down): the relay backs off on transient failures
  and counts permanent ones toward the row's dead letter.
* Within one destination, events of one partition key published in one call,
  or in successive calls, are stored in that order.
* Once an event fails before it is sent (too large, cannot be encoded), the
  router sends none of the later events of the same partition key in that
  call and reports them failed, not permanent, with ``HELD_BACK`` in the
  error: the relay retries them after the failed one, so the key's order holds.
* A router is used from one thread at a time; ``close()`` releases its
  connections and may be called twice.
* A router whose class sets ``EPHEMERAL_GROUPS = True`` takes
  ``subscribe(..., ephemeral=True)``: a group that lives only as long as that
  subscription and leaves nothing on the broker once closed
  (``open_subscription`` in ``outbox.routers`` says more).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from ..envelope import Envelope


#: Error text of an event not sent because an earlier event of its partition key failed in the same call.
HELD_BACK = "held back: an earlier event of its partition key failed in this batch"


class RouterError(Exception):
    """A router cannot be opened or used; the message names the URL and what to fix."""


@dataclasses.dataclass(frozen=True)
class PublishResult:
    """What happened to one event of a batch."""

    event_id: str
    error: str | None = None
    permanent: bool = False

    @property
    def ok(self) -> bool:
        """True when the broker accepted the event."""
        return self.error is None


@dataclasses.dataclass(frozen=True)
class Destinations:
    """Which stream / exchange / subject / topic an event goes to.

    By default one destination per aggregate type; ``by_type`` maps event-type
    patterns (fnmatch, e.g. ``shop.order.*``) to a destination name instead,
    first match wins. ``prefix`` is put before every destination name.
    """

    by_type: Mapping[str, str] = dataclasses.field(default_factory=dict)
    prefix: str = ""

    def for_event(self, event: Envelope) -> str:
        """Return the destination name of ``event``."""
        for pattern, name in self.by_type.items():
            if fnmatch.fnmatchcase(event.type, pattern):
                return self.prefix + name
        return self.prefix + (event.aggregatetype or event.type.rsplit(".", 1)[0])


#: What decoding a message raises when it is not a CloudEvent (``EnvelopeError`` and ``UnicodeDecodeError``
#: are ``ValueError``s; JSON that is not an object fails with the others).
NOT_A_CLOUDEVENT = (ValueError, TypeError, KeyError, AttributeError)


@dataclasses.dataclass
class Delivery:
    """One message received by a consumer; ``ack`` after the handler's transaction committed.

    A message that cannot be read as a CloudEvent is still delivered, with no
    envelope: ``malformed`` says why, ``raw`` holds what the broker holds and
    ``location`` where. Raising instead would stop the consumer at that message
    for good, and leave the readable messages fetched with it unacked; handed
    over, it is dead-lettered and acked like any event that fails its checks.
    """

    envelope: Envelope | None
    destination: str
    _ack: object = dataclasses.field(repr=False, default=None)
    _nack: object = dataclasses.field(repr=False, default=None)
    redelivered: bool = False
    malformed: str | None = None
    raw: bytes = dataclasses.field(repr=False, default=b"")
    location: str = ""

    @classmethod
    def unreadable(cls, raw: bytes, problem: Exception | str, destination: str, *, location: str,
                   ack: object, nack: object = None, redelivered: bool = False) -> "Delivery":
        """Return the delivery of a message that is not a CloudEvent: ``problem`` says why, ``location`` where."""
        reason = f"{type(problem).__name__}: {problem}" if isinstance(problem, Exception) else problem
        return cls(None, destination, ack, nack, redelivered, malformed=reason or "not a CloudEvent",
                   raw=bytes(raw), location=location)

    def ack(self) -> None:
        """Tell the broker the event is handled: it is not delivered to this group again."""
        if callable(self._ack):
            self._ack()

    def nack(self) -> None:
        """Tell the broker the event was not handled: it will be delivered again."""
        if callable(self._nack):
            self._nack()


def raw_message(headers: Mapping[Any, Any] | None, body: bytes) -> bytes:
    """Return what a dead letter keeps of a binary-mode message: its headers as one JSON line, then the body.

    Brokers with a binary binding keep the CloudEvent's attributes in headers,
    so the body alone would not show what was wrong with them.
    """
    head = {_text(name): _text(value) for name, value in (headers or {}).items()}
    return json.dumps(head, sort_keys=True).encode() + b"\n" + bytes(body or b"")


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, (bytes, bytearray)) else str(value)


@runtime_checkable
class Router(Protocol):
    """Publishes batches of CloudEvents to one broker."""

    def publish(self, batch: Sequence[Envelope]) -> list[PublishResult]:
        """Publish ``batch``; return one result per event, in order, each only after the broker's ack."""

    def close(self) -> None:
        """Release connections; safe to call twice."""


@runtime_checkable
class Subscription(Protocol):
    """Reads events back from a broker for one consumer group (the reverse of a router)."""

    def receive(self, max_events: int = 100, timeout: float = 1.0) -> list[Delivery]:
        """Return up to ``max_events`` deliveries, waiting at most ``timeout`` seconds for the first.

        A message that is not a CloudEvent is returned as ``Delivery.unreadable``, never raised.
        """

    def close(self) -> None:
        """Release connections; unacked deliveries are delivered again later."""
