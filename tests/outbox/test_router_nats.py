"""The NATS JetStream router against the nats-server on this machine: the conformance suite."""

from __future__ import annotations

import asyncio

import pytest

from outbox.routers import Destinations, open_router
from outbox.testing.conformance import RouterConformance, make_event
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
