"""``trace_event``: the journey of one event from the outbox row, the broker and each service's inbox."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import create_engine, update

from outbox import emit, inbox
from outbox.consumer import Consumer
from outbox.migrate import standalone_config, upgrade
from outbox.relay import Relay
from outbox.routers import open_router
from outbox.table import get_outbox_table
from outbox.trace import TraceError, trace_event
from toolkit.cli import cli


@pytest.fixture
def monolith(database_url):
    upgrade(standalone_config(database_url))
    engine = create_engine(database_url)
    yield database_url, engine
    engine.dispose()


@pytest.fixture
def router_url(tmp_path):
    return f"file://{tmp_path}/events"


def emit_orders(engine, *numbers) -> list[str]:
    with engine.begin() as conn:
        return [
            emit(conn, "shop.order.created", aggregate="order", key=n, data={"id": n})
            for n in numbers
        ]


def relay(engine, router_url):
    router = open_router(router_url)
    try:
        return Relay(engine, router, owner="relay-test-1").drain()
    finally:
        router.close()


def service(name, tmp_path, fail=False):
    url = f"sqlite:///{tmp_path}/{name}.db"
    inbox.upgrade(url)
    engine = create_engine(url)
    consumer = Consumer(name, engine)

    @consumer.handler("shop.order.*")
    def handle(event, session):
        if fail:
            raise RuntimeError(f"{name} cannot handle order {event.data['id']}")

    return url, engine, consumer


def test_the_journey_runs_from_the_commit_through_the_relay_and_broker_to_each_service(
    monolith, router_url, tmp_path
):
    db_url, engine = monolith
    event_id, other = emit_orders(engine, 1, 2)
    relay(engine, router_url)
    billing_url, billing_engine, billing = service("billing", tmp_path)
    shipping_url, shipping_engine, shipping = service("shipping", tmp_path, fail=True)
    billing.run(
        router_url, destinations=["order"], until_idle=True, install_signals=False, poll=0.1
    )
    shipping.run(
        router_url, destinations=["order"], until_idle=True, install_signals=False, poll=0.1
    )

    journey = trace_event(
        event_id, db_url, router_url=router_url, inbox_urls=[billing_url, shipping_url]
    )

    assert journey.found and journey.type == "shop.order.created" and journey.aggregate == "order:1"
    steps = [hop.step for hop in journey.hops]
    assert steps[:3] == ["emitted", "published", "on-broker"]
    published = journey.hop("published")
    assert published.details["relay"] == "relay-test-1"
    assert published.details["attempts"] == 0 and published.details["destination"] == "order"
    assert published.latency_seconds is not None and published.latency_seconds >= 0
    assert sorted(h.details["group"] for h in journey.hops if h.step == "delivered") == [
        "billing",
        "shipping",
    ]
    handled = journey.hop("handled")
    assert handled.details["service"] == "billing" and handled.latency_seconds >= 0
    dead = journey.hop("dead-lettered")
    assert dead.details["service"] == "shipping" and dead.details["reason"] == "handler"
    assert "cannot handle order 1" in dead.details["error"]
    assert journey.event_id == event_id and other not in json.dumps(journey.as_dict())
    # Every latency counts from the commit: after the publish, the service's is the longer one.
    emitted = journey.hop("emitted").at
    for hop in journey.hops:
        if hop.latency_seconds is not None:
            assert hop.latency_seconds == (hop.at - emitted).total_seconds()
    assert handled.latency_seconds > published.latency_seconds
    billing_engine.dispose()
    shipping_engine.dispose()


def test_a_pending_event_says_no_relay_has_published_it(monolith):
    db_url, engine = monolith
    (event_id,) = emit_orders(engine, 7)

    journey = trace_event(event_id, db_url)

    assert [h.step for h in journey.hops] == ["emitted", "pending"]
    assert any("is a relay running" in note for note in journey.notes)


def test_a_dead_row_shows_its_attempts_and_last_error(monolith):
    db_url, engine = monolith
    (event_id,) = emit_orders(engine, 8)
    table = get_outbox_table()
    with engine.begin() as conn:
        conn.execute(
            update(table)
            .where(table.c.id == event_id)
            .values(
                attempts=10,
                last_error="broker rejected: too large",
                dead_at=dt.datetime.now(dt.timezone.utc),
            )
        )

    journey = trace_event(event_id, db_url)

    dead = journey.hop("dead")
    assert (
        dead.details["attempts"] == 10
        and dead.details["last_error"] == "broker rejected: too large"
    )
    assert any(f"strangler outbox retry {event_id}" in note for note in journey.notes)


def test_a_purged_row_still_leaves_the_services_inbox(sqlite_url, router_url, tmp_path):
    upgrade(standalone_config(sqlite_url))
    engine = create_engine(sqlite_url)
    (event_id,) = emit_orders(engine, 3)
    relay(engine, router_url)
    billing_url, billing_engine, billing = service("billing", tmp_path)
    billing.run(
        router_url, destinations=["order"], until_idle=True, install_signals=False, poll=0.1
    )
    with engine.begin() as conn:
        conn.execute(get_outbox_table().delete())

    journey = trace_event(event_id, sqlite_url, inbox_urls=[billing_url])

    assert journey.found
    assert [h.step for h in journey.hops] == ["handled"]
    assert any("not in strangler_outbox" in note for note in journey.notes)
    engine.dispose()
    billing_engine.dispose()


def test_an_unknown_event_is_found_nowhere(sqlite_url):
    upgrade(standalone_config(sqlite_url))
    assert trace_event("0193a6c2-0000-7000-8000-000000000000", sqlite_url).found is False


def test_a_database_without_the_outbox_names_the_command_to_run(tmp_path):
    with pytest.raises(TraceError, match="strangler outbox migrate"):
        trace_event("x", f"sqlite:///{tmp_path}/empty.db")


def test_the_cli_prints_each_hop_with_its_latency_and_exits_1_when_found_nowhere(
    sqlite_url, router_url, tmp_path
):
    from click.testing import CliRunner

    upgrade(standalone_config(sqlite_url))
    engine = create_engine(sqlite_url)
    (event_id,) = emit_orders(engine, 4)
    relay(engine, router_url)
    runner = CliRunner()

    text = runner.invoke(
        cli, ["events", "trace", event_id, "--db", sqlite_url, "--router", router_url]
    )
    assert text.exit_code == 0, text.output
    assert "emitted" in text.output and "published" in text.output and " ms" in text.output

    as_json = runner.invoke(cli, ["events", "trace", event_id, "--db", sqlite_url, "--json"])
    assert as_json.exit_code == 0
    assert [h["step"] for h in json.loads(as_json.output)["hops"]] == ["emitted", "published"]

    missing = runner.invoke(cli, ["events", "trace", "nope", "--db", sqlite_url])
    assert missing.exit_code == 1
    bad = runner.invoke(cli, ["events", "trace", "x", "--db", f"sqlite:///{tmp_path}/none.db"])
    assert bad.exit_code == 2 and "strangler outbox migrate" in bad.output
    engine.dispose()


def test_the_broker_hop_on_redis_reads_the_router_url_as_the_router_does():
    from outbox.testing.services import service_url
    from outbox.trace import _on_redis

    url = service_url("redis")
    # destination_prefix is the router's, not redis-py's: handed to redis-py it failed on connect
    assert _on_redis(f"{url}?destination_prefix=trace_test_", "no-such-event", ["order"]) is None
    with pytest.raises(TraceError, match="unknown option"):
        _on_redis(f"{url}?max_len=10", "no-such-event", ["order"])


def test_without_router_the_cli_reads_the_configured_router_where_it_can_look_events_up(
    sqlite_url, router_url, tmp_path
):
    from click.testing import CliRunner

    upgrade(standalone_config(sqlite_url))
    engine = create_engine(sqlite_url)
    (event_id,) = emit_orders(engine, 5)
    relay(engine, router_url)
    runner = CliRunner()

    def steps(router):
        result = runner.invoke(cli, ["events", "trace", event_id, "--db", sqlite_url, "--json"],
                               env={"STRANGLER_ROUTER": router})
        assert result.exit_code == 0, result.output
        return [h["step"] for h in json.loads(result.output)["hops"]]

    assert steps(router_url) == ["emitted", "published", "on-broker"]
    # A configured router a trace cannot read (NATS, a folder not made yet) leaves the outbox's hops.
    assert steps("nats://127.0.0.1:4222") == ["emitted", "published"]
    assert steps(f"file://{tmp_path}/not-yet") == ["emitted", "published"]
    engine.dispose()
