"""Routers are found by URL scheme; options every router understands are taken from the URL."""

from __future__ import annotations

import pytest

from outbox.routers import RouterError, available_schemes, open_router, router_class


def test_every_broker_scheme_has_a_router():
    assert {"file", "redis", "amqp", "nats", "mqtt"} <= set(available_schemes())


@pytest.mark.parametrize(
    "url, message",
    [("no-scheme-here", "has no scheme"), ("gopher://x", "no router for scheme 'gopher'")],
)
def test_unknown_schemes_are_refused_naming_what_is_installed(url, message):
    with pytest.raises(RouterError, match=message):
        router_class(url)


def test_a_destination_prefix_in_the_url_keeps_environments_apart(tmp_path):
    import datetime as dt

    from outbox.envelope import Envelope
    from outbox.routers import open_subscription

    url = f"file://{tmp_path}/events?destination_prefix=staging_"
    event = Envelope(id="p1", source="/shop", type="shop.order.created", subject="1",
                     time=dt.datetime.now(dt.timezone.utc), data=b"{}", aggregatetype="order", partitionkey="1")
    router = open_router(url)
    assert router.publish([event])[0].ok
    assert sorted(p.name for p in (tmp_path / "events").glob("*.jsonl")) == ["staging_order.jsonl"]
    received = open_subscription(url, group="g", destinations=["order"]).receive(timeout=0.2)
    assert [d.envelope.id for d in received] == ["p1"]
    assert open_subscription(f"file://{tmp_path}/events", group="h", destinations=["order"]).receive(timeout=0.1) == []
