"""``strangler events trace`` with a ``destination_prefix`` in the router URL reads what the relay published to.

The relay and the consumers put the prefix before every destination name; trace names
destinations as consumers do (``--destination order``) and looks at the prefixed stream.
"""

from __future__ import annotations

import json
import uuid

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine

from outbox import emit, inbox
from outbox.consumer import Consumer
from outbox.migrate import standalone_config, upgrade
from outbox.relay import Relay
from outbox.routers import open_router
from outbox.testing.services import require_module, service_url
from toolkit.cli import cli


@pytest.fixture
def prefixed_redis():
    """A Redis router URL with a prefix of this test's own; its streams are deleted afterwards."""
    redis = require_module("redis", "redis")
    base = service_url("redis")
    prefix = f"trace_{uuid.uuid4().hex[:8]}_"
    yield f"{base}?destination_prefix={prefix}", prefix
    client = redis.Redis.from_url(base)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def published(sqlite_url, prefixed_redis, tmp_path):
    """One order event emitted, relayed through the prefixed URL, and handled by the group billing."""
    router_url, prefix = prefixed_redis
    upgrade(standalone_config(sqlite_url))
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        event_id = emit(conn, "shop.order.created", aggregate="order", key=1, data={"id": 1})
    router = open_router(router_url)
    try:
        Relay(engine, router, owner="trace-prefix-test").drain()
    finally:
        router.close()
    billing_url = f"sqlite:///{tmp_path}/billing.db"
    inbox.upgrade(billing_url)
    billing_engine = create_engine(billing_url)
    billing = Consumer("billing", billing_engine)
    billing.handler("shop.order.*")(lambda event, session: None)
    billing.run(router_url, destinations=["order"], until_idle=True, install_signals=False, poll=0.1)
    yield event_id, sqlite_url, router_url, prefix
    billing_engine.dispose()
    engine.dispose()


def trace(*args):
    result = CliRunner().invoke(cli, ["events", "trace", *args, "--json"], catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)


def hop(journey, step):
    return next((h for h in journey["hops"] if h["step"] == step), None)


@pytest.mark.parametrize("named", [(), ("--destination", "order")], ids=["default", "named-as-consumers-name-it"])
def test_trace_finds_the_event_on_the_prefixed_stream_the_relay_published_to(published, named):
    event_id, db_url, router_url, prefix = published
    code, journey = trace(event_id, "--db", db_url, "--router", router_url, *named)
    assert code == 0
    assert hop(journey, "published")["destination"] == f"{prefix}order"
    on_broker = hop(journey, "on-broker")
    assert on_broker is not None, journey["notes"]
    assert on_broker["destination"] == f"{prefix}order" and on_broker["where"] == f"redis stream {prefix}order"
    assert [h["group"] for h in journey["hops"] if h["step"] == "delivered"] == ["billing"]


def test_without_the_outbox_row_trace_searches_only_the_prefixes_streams(published):
    event_id, _, router_url, prefix = published
    code, journey = trace(event_id, "--router", router_url)
    assert code == 0
    assert hop(journey, "on-broker")["destination"] == f"{prefix}order"

    other = router_url.replace(prefix, f"{prefix}other_")
    code, journey = trace(event_id, "--router", other)
    assert code == 1
    assert f"all starting with '{prefix}other_'" in journey["notes"][0]
