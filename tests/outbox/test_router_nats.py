"""The NATS JetStream router against the nats-server on this machine: the conformance suite."""

from __future__ import annotations

import asyncio

import pytest

from outbox.routers import Destinations, open_router
from outbox.routers.nats import NatsRouter
from outbox.testing.conformance import RouterConformance, make_event, receive_all
from outbox.testing.services import require_module, service_url
from tests.outbox.routers_helpers import sdk_from_headers


def _run(url, work):
    import nats

    async def main():
        nc = await nats.connect(url.replace("nats+tls://", "tls://"))
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


class TestNatsRouter(RouterConformance):
    @pytest.fixture
    def router_url(self):
        require_module("nats", "nats")
        return service_url("nats")

    @pytest.fixture
    def unreachable_url(self):
        return "nats://127.0.0.1:1"

    def read_published(self, router_url, destination, count):
        async def work(js):
            out = []
            for seq in range(1, count + 1):
                msg = await js.get_msg(destination, seq)
                headers = dict(msg.headers or {})
                attrs = {k[3:]: v for k, v in headers.items() if k.lower().startswith("ce-")}
                assert headers["Nats-Msg-Id"] == attrs["id"]
                out.append(sdk_from_headers(attrs, headers.get("content-type"), msg.data))
            return out

        return _run(router_url, work)

    def cleanup(self, router_url, prefix):
        async def work(js):
            for info in await js.streams_info():
                if info.config.name.startswith(prefix):
                    await js.delete_stream(info.config.name)

        _run(router_url, work)


def test_a_republished_event_is_dropped_by_the_server_as_a_duplicate():
    import uuid

    url = service_url("nats")
    prefix = f"c{uuid.uuid4().hex[:10]}-"
    router = open_router(url, destinations=Destinations(prefix=prefix))
    event = make_event()
    try:
        assert router.publish([event])[0].ok
        assert router.publish([event])[0].ok  # e.g. after a crash between publish and mark

        async def count(js):
            return (await js.stream_info(prefix + "order")).state.messages

        assert _run(url, count) == 1
    finally:
        router.close()

        async def drop(js):
            await js.delete_stream(prefix + "order")

        _run(url, drop)


def _take_three_and_drop(url: str, prefix: str, group: str, **options):
    """Publish 8 events of one key, take 5 as ``group``, ack the first 2 and drop the consumer."""
    router = open_router(url, destinations=Destinations(prefix=prefix))
    events = [make_event(key="1", data={"seq": n}) for n in range(8)]
    try:
        assert all(result.ok for result in router.publish(events))
    finally:
        router.close()
    first = NatsRouter.subscribe(url, group=group, destinations=[prefix + "order"], **options)
    taken = receive_all(first, 5, ack=False)
    assert [d.envelope.id for d in taken] == [e.id for e in events[:5]]
    taken[0].ack()
    taken[1].ack()
    first.close()  # dies holding events 2, 3 and 4

    async def acked(js):  # the server takes acks in on a queue of its own: wait until it has both
        for _ in range(100):
            info = await js.consumer_info(prefix + "order", group)
            if info.ack_floor.stream_seq >= 2:
                return info.num_ack_pending
            await asyncio.sleep(0.05)
        raise AssertionError(f"the acks never reached the server: {info}")

    assert _run(url, acked) == 3
    return [e.id for e in events]


def _drop_stream(url: str, name: str) -> None:
    async def drop(js):
        await js.delete_stream(name)

    _run(url, drop)


def test_a_reopened_group_gets_the_unacked_messages_first_in_order():
    import uuid

    require_module("nats", "nats")
    url = service_url("nats")
    prefix = f"r{uuid.uuid4().hex[:10]}-"
    try:
        ids = _take_three_and_drop(url, prefix, f"{prefix}svc")
        second = NatsRouter.subscribe(url, group=f"{prefix}svc", destinations=[prefix + "order"])
        try:
            # At once, not after ack_wait (30 s): the three unacked, then the rest, in stream order.
            got = receive_all(second, 6, timeout=5)
        finally:
            second.close()
        assert [d.envelope.id for d in got] == ids[2:]
        assert [d.redelivered for d in got] == [True, True, True, False, False, False]
    finally:
        _drop_stream(url, prefix + "order")


def test_without_rewind_the_newer_messages_come_before_the_unacked_ones():
    import uuid

    require_module("nats", "nats")
    url = service_url("nats")
    prefix = f"r{uuid.uuid4().hex[:10]}-"
    try:
        ids = _take_three_and_drop(url, prefix, f"{prefix}svc", rewind="0")
        second = NatsRouter.subscribe(url, group=f"{prefix}svc", destinations=[prefix + "order"], rewind="0")
        try:
            got = receive_all(second, 3, timeout=5)
        finally:
            second.close()
        # JetStream keeps the dead consumer's three for ack_wait; the newer ones overtake them.
        assert [d.envelope.id for d in got] == ids[5:]
    finally:
        _drop_stream(url, prefix + "order")


def test_a_message_the_stream_refuses_fails_for_good_at_once():
    import time
    import uuid

    from nats.js.api import StreamConfig

    require_module("nats", "nats")
    url = service_url("nats")
    prefix = f"r{uuid.uuid4().hex[:10]}-"
    name = prefix + "order"

    async def small(js):
        await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"], max_msg_size=16))

    _run(url, small)
    router = open_router(url, destinations=Destinations(prefix=prefix))
    try:
        started = time.monotonic()
        result = router.publish([make_event()])[0]
        # The stream's error reply, not an ack timeout (30 s): a refusal is permanent.
        assert not result.ok and result.permanent
        assert "10054" in result.error or "maximum" in result.error
        assert time.monotonic() - started < 10
    finally:
        router.close()
        _drop_stream(url, name)
