"""The router conformance suite: what every router promises, checked against its real broker.

Every router in strangler runs it, and so can a third-party router::

    from outbox.testing.conformance import RouterConformance

    class TestMyRouter(RouterConformance):
        @pytest.fixture
        def router_url(self):
            return "mybroker://127.0.0.1:9999"

        def read_published(self, router_url, destination, count):
            ...  # read with the broker's own client; return cloudevents SDK events

The suite checks: one ok result per event, in batch order; order per key across
batches and destinations; a partial failure (an event over ``max_bytes``) fails
only that event, permanently, and holds back the later events of its key; an unreachable broker fails a batch transiently
without raising; ``close()`` twice; a round trip through the router's own
subscription with the same attributes and data; acked events are not delivered
again and unacked ones are; and what the broker holds, read with the broker's
own client and decoded by the ``cloudevents`` SDK, has the same attributes and data.

Hooks a subclass may set or override:

* ``router_url`` fixture (required), ``unreachable_url`` fixture (a URL where
  nothing listens; a router without a broker, like ``file``, sets
  ``test_an_unreachable_broker_fails_the_batch_transiently_without_raising = None``),
* ``router_options`` fixture (extra keyword options for ``open_router``),
* ``read_published(router_url, destination, count)`` returning SDK events
  (``None``: not implemented, that check skips),
* ``prepare_read(router_url, destination)`` before that publish,
* ``cleanup(router_url, prefix)`` to delete what the tests created,
* ``nack_redelivers`` (False for brokers without a negative ack, e.g. MQTT).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
import uuid
from typing import Any

import pytest

from ..envelope import Envelope
from ..routers import Destinations, open_router, open_subscription
from ..routers.base import HELD_BACK


def make_event(type: str = "shop.order.created", key: str = "1", aggregate: str = "order",
               data: Any = None, **attrs: Any) -> Envelope:
    """Return a valid event of ``aggregate``/``key`` with JSON ``data``."""
    return Envelope(
        id=str(uuid.uuid4()), source="/conformance", type=type, subject=key,
        time=dt.datetime.now(dt.UTC),
        data=json.dumps(data if data is not None else {"key": key}).encode(),
        aggregatetype=aggregate, partitionkey=key, **attrs,
    )


def receive_all(subscription, count: int, *, timeout: float = 20.0, ack: bool = True) -> list:
    """Receive until ``count`` deliveries arrived or ``timeout`` passed; ack each unless told not to."""
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        for delivery in subscription.receive(max_events=count - len(out), timeout=1.0):
            if ack:
                delivery.ack()
            out.append(delivery)
    return out


class RouterConformance:
    """Subclass as ``Test<Name>`` and provide ``router_url``; see the module docstring."""

    nack_redelivers = True

    # -- hooks ------------------------------------------------------------------------------

    @pytest.fixture
    def router_url(self) -> str:
        raise NotImplementedError("provide a router_url fixture")

    @pytest.fixture
    def unreachable_url(self) -> str | None:
        return None

    @pytest.fixture
    def router_options(self) -> dict:
        return {}

    def read_published(self, router_url: str, destination: str, count: int) -> list | None:
        """Read ``count`` events of ``destination`` with the broker's own client, as cloudevents SDK events."""
        return None

    def prepare_read(self, router_url: str, destination: str) -> None:
        """Called before the publish that ``read_published`` reads (e.g. bind a queue, subscribe a topic)."""

    def cleanup(self, router_url: str, prefix: str) -> None:
        """Delete the streams, exchanges, queues or topics named with ``prefix``."""

    # -- fixtures -----------------------------------------------------------------------------

    @pytest.fixture
    def prefix(self, router_url):
        prefix = f"c{uuid.uuid4().hex[:10]}-"
        yield prefix
        self.cleanup(router_url, prefix)

    @pytest.fixture
    def open(self, router_url, router_options, prefix):
        """Open routers and subscriptions on ``prefix``-ed destinations; all closed at the end."""
        opened: list = []

        def router(**options):
            r = open_router(router_url, destinations=Destinations(prefix=prefix), **{**router_options, **options})
            opened.append(r)
            return r

        def subscription(group: str, *aggregates: str):
            s = open_subscription(router_url, group=prefix + group, destinations=[prefix + a for a in aggregates])
            opened.append(s)
            return s

        yield router, subscription
        for item in reversed(opened):
            try:
                item.close()
            except Exception:
                pass

    # -- the checks -----------------------------------------------------------------------------

    def test_publish_reports_one_ok_result_per_event_in_order(self, open):
        router, subscription = open
        sub = subscription("g", "order")
        events = [make_event(key=str(n % 3)) for n in range(25)]
        results = router().publish(events)
        assert [r.event_id for r in results] == [e.id for e in events]
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
        assert len(receive_all(sub, 25)) == 25

    def test_order_per_key_holds_across_batches_and_destinations(self, open):
        router, subscription = open
        sub = subscription("g", "order", "payment")
        r = router()
        sent: dict[str, list[str]] = {}
        for round_ in range(3):
            batch = []
            for n in range(20):
                aggregate = "order" if n % 2 else "payment"
                event = make_event(type=f"shop.{aggregate}.changed", key=f"{aggregate}-{n % 4}",
                                   aggregate=aggregate, data={"round": round_, "n": n})
                batch.append(event)
                sent.setdefault(event.partitionkey, []).append(event.id)
            assert all(result.ok for result in r.publish(batch))
        got: dict[str, list[str]] = {}
        for delivery in receive_all(sub, 60):
            ids = got.setdefault(delivery.envelope.partitionkey, [])
            if delivery.envelope.id not in ids:
                ids.append(delivery.envelope.id)
        assert got == sent

    def test_round_trip_keeps_every_attribute_and_the_data(self, open):
        router, subscription = open
        sub = subscription("g", "order")
        event = make_event(
            key="42", data={"total": "19.90", "text": "päid ✓"},
            traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tracestate="vendor=x",
        )
        secret = Envelope(**{**_fields(make_event(key="43")), "data": b"\x00\x01binary",
                             "datacontenttype": "application/jose+json"})
        assert all(r.ok for r in router().publish([event, secret]))
        received = {d.envelope.id: d.envelope for d in receive_all(sub, 2)}
        assert received[event.id].attributes() == event.attributes()
        assert json.loads(received[event.id].data) == json.loads(event.data)
        assert received[secret.id].attributes() == secret.attributes()
        assert received[secret.id].data == secret.data

    def test_an_oversized_event_fails_alone_and_permanently(self, open):
        router, subscription = open
        sub = subscription("g", "order")
        small = [make_event(key="1"), make_event(key="2")]
        big = make_event(key="3", data={"blob": "x" * 4096})
        follower = make_event(key="3")  # same key after the failed one: must not overtake it
        results = router(max_bytes=2048).publish([small[0], big, follower, small[1]])
        assert [r.ok for r in results] == [True, False, False, True]
        assert results[1].permanent and "bytes" in results[1].error
        assert not results[2].permanent and results[2].error == HELD_BACK
        assert {d.envelope.id for d in receive_all(sub, 2)} == {small[0].id, small[1].id}
        assert receive_all(sub, 1, timeout=1) == []

    def test_an_unreachable_broker_fails_the_batch_transiently_without_raising(self, unreachable_url, prefix):
        assert unreachable_url, (
            "give an unreachable_url fixture, or set this test to None in a router without a broker"
        )
        router = open_router(unreachable_url, destinations=Destinations(prefix=prefix))
        try:
            events = [make_event(key="1"), make_event(key="2")]
            results = router.publish(events)
        finally:
            router.close()
        assert [r.event_id for r in results] == [e.id for e in events]
        assert not any(r.ok for r in results)
        assert not any(r.permanent for r in results)

    def test_close_twice_is_harmless(self, open):
        router, _ = open
        r = router()
        assert r.publish([make_event()])[0].ok
        r.close()
        r.close()

    def test_acked_events_are_not_delivered_again_and_unacked_ones_are(self, open, router_url, prefix):
        router, subscription = open
        sub = subscription("g", "order")
        events = [make_event(key="1"), make_event(key="2")]
        assert all(r.ok for r in router().publish(events))
        first = receive_all(sub, 2, ack=False)
        assert len(first) == 2
        first[0].ack()
        if self.nack_redelivers:
            first[1].nack()
        sub.close()
        again = open_subscription(router_url, group=prefix + "g", destinations=[prefix + "order"])
        try:
            redelivered = receive_all(again, 1)
            assert [d.envelope.id for d in redelivered] == [events[1].id]
            assert receive_all(again, 1, timeout=2) == []
        finally:
            again.close()

    def test_the_broker_holds_what_the_cloudevents_sdk_reads_back(self, open, router_url, prefix):
        router, subscription = open
        subscription("g", "order")  # brokers that drop unrouted messages need a consumer first
        self.prepare_read(router_url, prefix + "order")
        event = make_event(key="7", data={"n": 7, "note": "sdk"},
                           traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        assert router().publish([event])[0].ok
        read = self.read_published(router_url, prefix + "order", 1)
        if read is None:
            pytest.skip("this router's test does not read the broker with its own client")
        [sdk_event] = read
        attributes = {k: (v if isinstance(v, str) else _rfc3339(v)) for k, v in sdk_event.get_attributes().items()}
        expected = event.attributes()
        assert {k: attributes.get(k) for k in expected if k != "time"} == {k: v for k, v in expected.items() if k != "time"}
        assert _parse(attributes["time"]) == event.time
        assert sdk_event.get_data() == json.loads(event.data)


def _fields(event: Envelope) -> dict:
    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.init}


def _rfc3339(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def _parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)
