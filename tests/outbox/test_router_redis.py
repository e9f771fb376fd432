"""The Redis Streams router against the Redis on this machine: the conformance suite."""

from __future__ import annotations

import pytest

from outbox.testing.conformance import RouterConformance
from outbox.testing.services import require_module, service_url
from tests.outbox.routers_helpers import sdk_from_headers


class TestRedisRouter(RouterConformance):
    @pytest.fixture(autouse=True)
    def quick_adoption(self, monkeypatch):
        """A subscription reopened waits up to ADOPT_AFTER (5 s) for the closed one's name to age; 0.3 s here."""
        from outbox.routers import redis as redis_router

        monkeypatch.setattr(redis_router, "ADOPT_AFTER", 0.3)

    @pytest.fixture
    def router_url(self):
        require_module("redis", "redis")
        return service_url("redis")

    @pytest.fixture
    def unreachable_url(self):
        return "redis://127.0.0.1:1/0"

    def read_published(self, router_url, destination, count):
        import redis

        client = redis.Redis.from_url(router_url)
        try:
            entries = client.xrange(destination, count=count)
        finally:
            client.close()
        events = []
        for _, fields in entries:
            fields = {k.decode(): v for k, v in fields.items()}
            attrs = {k[3:]: v.decode() for k, v in fields.items() if k.startswith("ce_")}
            events.append(sdk_from_headers(attrs, attrs.get("datacontenttype"), fields["data"]))
        return events

    def cleanup(self, router_url, prefix):
        import redis

        client = redis.Redis.from_url(router_url)
        try:
            for key in client.scan_iter(match=f"{prefix}*"):
                client.delete(key)
        finally:
            client.close()


def test_maxlen_trims_the_stream():
    import uuid

    from outbox.routers import Destinations, open_router
    from outbox.testing.conformance import make_event

    url = service_url("redis")
    prefix = f"c{uuid.uuid4().hex[:10]}-"
    router = open_router(url, destinations=Destinations(prefix=prefix), maxlen=10)
    import redis

    client = redis.Redis.from_url(url)
    try:
        for _ in range(5):
            assert all(r.ok for r in router.publish([make_event(key=str(n)) for n in range(200)]))
        assert client.xlen(prefix + "order") < 1000
    finally:
        router.close()
        client.delete(prefix + "order")
        client.close()


def test_a_wrongtype_key_is_a_permanent_failure():
    import uuid

    import redis

    from outbox.routers import Destinations, open_router
    from outbox.testing.conformance import make_event

    url = service_url("redis")
    prefix = f"c{uuid.uuid4().hex[:10]}-"
    client = redis.Redis.from_url(url)
    client.set(prefix + "order", "not a stream")
    router = open_router(url, destinations=Destinations(prefix=prefix))
    try:
        [result] = router.publish([make_event()])
        assert not result.ok and result.permanent and "WRONGTYPE" in result.error
    finally:
        router.close()
        client.delete(prefix + "order")
        client.close()


@pytest.mark.parametrize("maxlen", [None, 1000])
def test_the_routers_packed_xadd_is_byte_for_byte_redis_pys(maxlen):
    """The router packs XADD itself for speed; what it sends must be what redis-py would send."""
    require_module("redis", "redis")
    from redis.connection import PythonRespSerializer

    from outbox.routers.redis import entry_fields, pack_event
    from outbox.testing.conformance import make_event

    event = make_event(key="é-1")  # non-ASCII: lengths are bytes, not characters
    args = ["XADD", "orders"] + (["MAXLEN", "~", str(maxlen)] if maxlen else []) + ["*"]
    for name, value in entry_fields(event).items():
        args += [name, value]
    serializer = PythonRespSerializer(buffer_cutoff=1 << 30, encode=lambda v: v.encode() if isinstance(v, str) else v)
    assert pack_event("orders", event, maxlen) == b"".join(serializer.pack(*args))


def test_after_a_nack_every_unacked_entry_comes_again_in_order_before_new_ones():
    """More entries pending than one receive returns: all are read again, in order, then new ones."""
    require_module("redis", "redis")
    import uuid

    from outbox.routers import Destinations, open_router, open_subscription
    from outbox.testing.conformance import make_event

    url = service_url("redis")
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    router = open_router(url, destinations=Destinations(prefix=prefix))
    subscription = open_subscription(url, group="g", destinations=[prefix + "order"])
    try:
        first = [make_event(key="k", data={"n": n}) for n in range(25)]
        assert all(r.ok for r in router.publish(first))
        taken = [d for _ in range(3) for d in subscription.receive(max_events=10, timeout=1)]
        assert [d.envelope.id for d in taken] == [e.id for e in first]  # none acked
        taken[3].nack()
        later = [make_event(key="k", data={"n": n}) for n in range(25, 30)]
        assert all(r.ok for r in router.publish(later))
        again = []
        while len(again) < 30:
            batch = subscription.receive(max_events=10, timeout=1)
            assert batch, f"only {len(again)} of 30 came"
            again += batch
        assert [d.envelope.id for d in again] == [e.id for e in first + later]
        assert all(d.redelivered for d in again[:25]) and not any(d.redelivered for d in again[25:])
    finally:
        subscription.close()
        router.close()
        import redis

        redis.Redis.from_url(url).delete(prefix + "order")


@pytest.mark.parametrize("death", ["closed", "killed"])
def test_an_entry_its_dead_process_left_unacked_is_taken_over_by_one_still_running(death):
    """A process of the group gone mid-handler: after claim_idle a running one delivers its entry again.

    Each process is a consumer of its own name, so no other process reads the
    entry from its pending list: the claim is what brings it back. Killed, the
    process does not even close its subscription.
    """
    require_module("redis", "redis")
    import time
    import uuid

    from outbox.routers import Destinations, open_router, open_subscription
    from outbox.testing.conformance import make_event

    url = service_url("redis")
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    stream = prefix + "order"
    router = open_router(url, destinations=Destinations(prefix=prefix))
    survivor = open_subscription(f"{url}?claim_idle=0.5", group="g", destinations=[stream])
    try:
        assert survivor.receive(timeout=0.1) == []  # up and reading new entries
        event = make_event()
        assert all(r.ok for r in router.publish([event]))
        dying = open_subscription(url, group="g", destinations=[stream])
        [taken] = dying.receive(timeout=1)
        if death == "closed":
            dying.close()  # stopped before the ack: the entry stays pending
        else:
            dying.client.close()  # killed: the connection drops, nothing is cleaned up
        assert taken.envelope.id == event.id

        time.sleep(0.6)
        [again] = survivor.receive(timeout=1)
        assert again.envelope.id == event.id and again.redelivered
        again.ack()
        time.sleep(0.6)
        assert survivor.receive(timeout=0.2) == []  # acked: not claimed again
    finally:
        survivor.close()
        router.close()
        import redis

        redis.Redis.from_url(url).delete(stream)
