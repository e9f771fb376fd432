"""The relay: drains every backend, never skips a late commit, keeps order per key, fails well."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import insert, select, update

from outbox import emit
from outbox.maintenance import purge_published, retry_dead
from outbox.relay import Relay, RelayOptions
from outbox.routers import open_router
from outbox.table import get_lease_table, partition_for
from tests.outbox.relay_helpers import (
    FlakyRouter,
    emit_events,
    file_events,
    first_seen_order,
    migrated_engine,
    outbox,
    pending_count,
    rows,
    wait_until,
)

FAST = dict(retry_base=0.05, retry_max=0.2, poll_interval=0.05, lease_seconds=5)


@pytest.fixture
def events_dir(tmp_path):
    return tmp_path / "events"


def test_drain_publishes_every_row_once_in_order_per_key_on_every_backend(database_url, events_dir):
    engine = migrated_engine(database_url)
    sent = emit_events(engine, [f"k{n}" for n in range(7)], per_key=40)
    router = open_router(f"file://{events_dir}")
    stats = Relay(engine, router, options=RelayOptions(batch=100)).drain()
    assert stats.published == 280 and stats.failed == 0
    assert first_seen_order(file_events(events_dir)) == sent
    assert pending_count(engine) == 0
    assert all(r.published_by for r in rows(engine))
    emitted_at = {r.id: r.timestamp for r in rows(engine)}
    assert {e.id: e.time for e in file_events(events_dir)} == emitted_at  # the same instant, in UTC
    engine.dispose()


def test_a_row_that_commits_after_a_later_one_is_still_published(postgresql_url, events_dir):
    engine = migrated_engine(postgresql_url)
    relay = Relay(engine, open_router(f"file://{events_dir}"), options=RelayOptions(**FAST))
    runner = threading.Thread(target=relay.run)
    runner.start()
    try:
        slow = engine.connect()
        slow_tx = slow.begin()
        emit(slow, "shop.order.created", aggregate="order", key="early", data={"key": "early", "n": 0})
        emit_events(engine, ["late"], per_key=5)  # higher positions, committed first
        wait_until(lambda: len(file_events(events_dir)) == 5, what="the later rows to be published")
        slow_tx.commit()
        slow.close()
        wait_until(lambda: len(file_events(events_dir)) == 6, what="the early row, committed last")
    finally:
        relay.stop()
        runner.join(30)
    positions = {json.loads(r.payload)["key"]: r.position for r in rows(engine)}
    assert positions["early"] < positions["late"]
    assert file_events(events_dir)[-1].subject == "early"
    engine.dispose()


def test_a_crash_between_publish_and_mark_publishes_again(sqlite_url, events_dir):
    engine = migrated_engine(sqlite_url)
    sent = emit_events(engine, ["a", "b"], per_key=10)

    class CrashAfterPublish(FlakyRouter):
        def publish(self, batch):
            super().publish(batch)
            raise KeyboardInterrupt("the process dies before marking")

    with pytest.raises(KeyboardInterrupt):
        Relay(engine, CrashAfterPublish(f"file://{events_dir}"), options=RelayOptions(**FAST)).drain()
    assert len(file_events(events_dir)) == 20 and pending_count(engine) == 20  # published, never marked

    Relay(engine, open_router(f"file://{events_dir}"), options=RelayOptions(**FAST)).drain()
    assert pending_count(engine) == 0
    assert len(file_events(events_dir)) == 40  # at least once: every event twice, same ids
    assert first_seen_order(file_events(events_dir)) == sent
    engine.dispose()


def test_a_poison_row_goes_dead_with_its_error_while_other_keys_flow_and_retry_brings_it_back(sqlite_url, events_dir):
    engine = migrated_engine(sqlite_url)
    emit_events(engine, ["good"], per_key=3)
    with engine.begin() as conn:
        emit(conn, "shop.order.changed", aggregate="order", key="bad", data={"key": "bad", "n": 0, "poison": True})
    emit_events(engine, ["bad"], per_key=3, start=1)
    emit_events(engine, ["good"], per_key=1, start=3)
    router = FlakyRouter(f"file://{events_dir}", poison=lambda e: b"poison" in e.data)
    relay = Relay(engine, router, options=RelayOptions(max_attempts=3, **FAST))

    relay.drain()
    published = first_seen_order(file_events(events_dir))
    assert published == {"good": [0, 1, 2, 3]}  # "bad" is held back behind its failed head row
    [head] = [r for r in rows(engine) if r.aggregateid == "bad" and r.attempts]
    assert head.attempts == 1 and "poison" in head.last_error and head.available_at is not None

    wait_until(lambda: (relay.drain(), rows(engine))[1] and any(r.dead_at for r in rows(engine)),
               what="the poison row to go dead")
    relay.drain()
    [dead] = [r for r in rows(engine) if r.dead_at]
    assert dead.attempts == 3 and "rejected: poison" in dead.last_error and dead.payload  # payload kept
    assert first_seen_order(file_events(events_dir))["bad"] == [1, 2, 3]  # its key flows again

    assert retry_dead(engine).rows == 1
    router.poison = lambda e: False
    relay.drain()
    assert pending_count(engine) == 0 and not any(r.dead_at for r in rows(engine))
    assert first_seen_order(file_events(events_dir))["bad"] == [1, 2, 3, 0]
    engine.dispose()


def test_a_permanent_failure_is_logged_with_its_reason_and_what_happens_next(sqlite_url, events_dir, caplog):
    """The reason is in last_error too; but an operator reads the log, where it was only a count."""
    engine = migrated_engine(sqlite_url)
    with engine.begin() as conn:
        emit(conn, "shop.order.changed", aggregate="order", key="bad", data={"key": "bad", "n": 0, "poison": True})
    router = FlakyRouter(f"file://{events_dir}", poison=lambda e: b"poison" in e.data)
    relay = Relay(engine, router, options=RelayOptions(max_attempts=2, **FAST))

    with caplog.at_level("WARNING", logger="strangler.relay"):
        relay.drain()
        wait_until(lambda: (relay.drain(), any(r.dead_at for r in rows(engine)))[1], what="the row to go dead")

    failures = [r for r in caplog.records if getattr(r, "relay", {}).get("event") == "publish_failed"]
    first, last = failures[0], failures[-1]
    assert "rejected: poison" in first.getMessage() and "attempt 1 of 2, again in" in first.getMessage()
    assert first.relay["type"] == "shop.order.changed" and first.relay["attempts"] == 1
    assert "dead after 2 attempts: 'strangler outbox retry' once fixed" in last.getMessage()
    engine.dispose()


def test_a_transform_that_raises_fails_its_row_and_holds_back_only_its_key(sqlite_url, events_dir):
    engine = migrated_engine(sqlite_url)
    sent = emit_events(engine, ["x", "y"], per_key=3)

    def transform(envelope):
        if envelope.subject == "x":
            raise ValueError("no key for this reader")
        return envelope

    relay = Relay(engine, open_router(f"file://{events_dir}"), envelope_transform=transform,
                  options=RelayOptions(max_attempts=5, **FAST))
    relay.drain()
    assert first_seen_order(file_events(events_dir)) == {"y": sent["y"]}
    failed = [r for r in rows(engine) if r.attempts]
    assert [r.aggregateid for r in failed] == ["x"]  # the head only; x's later rows wait untouched
    assert "envelope transform failed: ValueError: no key for this reader" in failed[0].last_error
    engine.dispose()


def test_a_relay_that_lost_its_lease_cannot_mark(database_url, events_dir):
    engine = migrated_engine(database_url)
    emit_events(engine, ["a"], per_key=3)
    leases = get_lease_table()
    partition = partition_for("order", "a")

    class LeaseStolenDuringPublish(FlakyRouter):
        def publish(self, batch):
            with engine.begin() as conn:  # another relay takes the partition meanwhile
                conn.execute(update(leases).where(leases.c.lease_partition == partition)
                             .values(owner="other-relay", fence=leases.c.fence + 1,
                                     expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)))
            return super().publish(batch)

    relay = Relay(engine, LeaseStolenDuringPublish(f"file://{events_dir}"), options=RelayOptions(**FAST))
    stats = relay.drain()
    assert len(file_events(events_dir)) == 3  # published (at least once) ...
    assert pending_count(engine) == 3 and stats.lost_marks == 3  # ... but never marked by the fenced relay
    engine.dispose()


def _insert_pending_rows(engine, count: int) -> None:
    """``count`` pending rows of ~100-byte events, in one statement: enough that reading them all per claim shows."""
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(insert(outbox), [
            dict(id=f"e{n}", aggregatetype="order", aggregateid=f"k{n % 50}", type="shop.order.changed",
                 payload=json.dumps({"n": n, "note": "x" * 80}).encode(), timestamp=now, source="/t", content_type="application/json",
                 lease_partition=partition_for("order", f"k{n % 50}"), attempts=0)
            for n in range(count)
        ])


def _plan_nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


def test_a_postgresql_claim_reads_the_claim_index_in_order_on_an_outbox_never_analyzed(postgresql_url, events_dir):
    """With no statistics the planner guessed a handful of pending rows: it read them all and sorted them."""
    engine = migrated_engine(postgresql_url)
    _insert_pending_rows(engine, 6000)
    relay = Relay(engine, open_router(f"file://{events_dir}"))
    relay._start()
    assert len(relay._claim(()).rows) == 200  # opens the claim connection, as the relay uses it
    compiled = relay._claim_statement(False, False, []).compile(dialect=engine.dialect)
    params = {**compiled.params, "now": dt.datetime.now(dt.UTC).replace(tzinfo=None)}
    [[plan]] = relay._claim_conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled.string}", params).all()
    nodes = list(_plan_nodes(plan[0]["Plan"]))
    assert [n["Node Type"] for n in nodes] == ["Limit", "Index Scan"], nodes
    assert nodes[1]["Index Name"] == f"ix_{outbox.name}_claim"
    relay._close_claim_connection()
    engine.dispose()


def test_a_postgresql_claim_fetches_binary_and_reads_every_byte_as_written(postgresql_url, events_dir):
    """Binary results: a bytea arrives as it is, not as hex twice its size; the values must not change."""
    import psycopg

    engine = migrated_engine(postgresql_url)
    payload = bytes(range(256)) * 6  # every byte value, a sealed event's size
    now = dt.datetime.now(dt.UTC).replace(microsecond=123456)
    with engine.begin() as conn:
        conn.execute(insert(outbox), [dict(
            id="e1", aggregatetype="order", aggregateid="k1", type="shop.order.changed", payload=payload,
            timestamp=now, tracingspancontext="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            source="/t", content_type="application/octet-stream", lease_partition=partition_for("order", "k1"),
            attempts=0,
        )])
    relay = Relay(engine, open_router(f"file://{events_dir}"))
    relay._start()
    [row] = relay._claim(()).rows
    assert relay._claim_conn.connection.driver_connection.cursor().format == psycopg.pq.Format.BINARY
    assert (row.envelope.data, row.envelope.time, row.envelope.traceparent, row.partition, row.attempts) == (
        payload, now, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", partition_for("order", "k1"), 0)
    relay._close_claim_connection()
    engine.dispose()


@pytest.mark.parametrize("outbox_analyzed", [True, False], ids=["outbox-analyzed", "outbox-never-analyzed"])
def test_a_postgresql_mark_reads_its_rows_by_primary_key_whatever_the_statistics(
    postgresql_url, events_dir, outbox_analyzed
):
    """The fenced mark must not become a join of lease rows and the claim index, nor a scan of that index.

    Written as a join, with no statistics on the lease table yet (64 rows,
    below autovacuum's threshold for a while), the planner ran the mark as a
    nested loop: one claim-index scan per lease row and per position, 3.5× slower.
    On an outbox never analyzed (new, or just truncated) it read every pending
    row through the claim index (``published_at IS NULL``) for each mark: a
    5,000-row backlog drained at a third of its rate.
    """
    engine = migrated_engine(postgresql_url)
    _insert_pending_rows(engine, 6000)
    relay = Relay(engine, open_router(f"file://{events_dir}"))
    relay.leases.ensure_tables(engine)
    with engine.begin() as conn:
        relay.leases.refresh(conn, dt.datetime.now(dt.UTC))
    order = ["now", "owner", "positions", "partitions", "fences"]
    numbered = re.sub(r":(\w+)", lambda m: f"${order.index(m[1]) + 1}", relay._pg_mark_statement().text)
    with engine.connect() as conn:
        if outbox_analyzed:
            conn.exec_driver_sql(f"ANALYZE {outbox.name}")
        conn.exec_driver_sql(f"PREPARE mark(timestamp, text, text, text, text) AS {numbered}")
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")  # what a prepared statement ends with
        [[plan]] = conn.exec_driver_sql(
            "EXPLAIN (FORMAT JSON) EXECUTE mark(now()::timestamp, 'relay', '{1,2}', '{1,2}', '{1,1}')").all()
        conn.rollback()
    update_node = plan[0]["Plan"]
    [rows_node] = [child for child in update_node["Plans"] if child.get("Parent Relationship") == "Outer"]
    # The rows come straight from the primary key (an index scan, or a bitmap of it); whether they are
    # still pending and the lease check are filters on them, never a join, never a scan of all pending rows.
    assert rows_node["Node Type"] in ("Index Scan", "Bitmap Heap Scan"), rows_node
    index_node = rows_node if rows_node["Node Type"] == "Index Scan" else rows_node["Plans"][0]
    assert index_node.get("Index Name") == f"pk_{outbox.name}", rows_node
    assert "position" in index_node["Index Cond"]
    assert "lease_partition" not in index_node["Index Cond"] and "published_at" not in index_node["Index Cond"]
    engine.dispose()


def test_purge_deletes_only_old_published_rows_in_bounded_batches(sqlite_url):
    engine = migrated_engine(sqlite_url)
    now = dt.datetime.now(dt.UTC)
    old = now - dt.timedelta(days=10)
    base = dict(aggregatetype="order", aggregateid="1", type="shop.order.x", payload=b"{}", timestamp=old,
                source="/t", content_type="application/json", lease_partition=0, published_at=None, dead_at=None)
    with engine.begin() as conn:
        conn.execute(insert(outbox), [dict(base, id=f"p{n}", published_at=old) for n in range(2500)]
                     + [dict(base, id="recent", published_at=now), dict(base, id="pending"),
                        dict(base, id="dead", dead_at=old)])
    deletes = []
    sa_event.listen(engine, "before_cursor_execute",
                    lambda conn, cur, statement, params, ctx, many: deletes.append(statement)
                    if statement.lstrip().upper().startswith("DELETE") else None)
    result = purge_published(engine, now - dt.timedelta(days=1), batch_size=1000)
    assert (result.rows, result.batches) == (2500, 3)
    assert len(deletes) == 3 and all("IN (" in d.upper() or "IN(" in d.upper() for d in deletes)
    assert sorted(r.id for r in rows(engine)) == ["dead", "pending", "recent"]
    assert purge_published(engine, now - dt.timedelta(days=1), batch_size=1000, max_batches=1).rows == 0
    engine.dispose()


def test_the_traceparent_captured_at_emit_travels_with_the_event(sqlite_url, events_dir):
    from opentelemetry.sdk.trace import TracerProvider

    engine = migrated_engine(sqlite_url)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("checkout") as span:
        with engine.begin() as conn:
            emit(conn, "shop.order.created", aggregate="order", key="1", data={"n": 0})
        context = span.get_span_context()
    Relay(engine, open_router(f"file://{events_dir}"), options=RelayOptions(**FAST)).drain()
    [event] = file_events(events_dir)
    assert event.traceparent == f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    engine.dispose()


def test_partitions_are_shared_between_relays(sqlite_url, events_dir):
    engine = migrated_engine(sqlite_url)
    first = Relay(engine, open_router(f"file://{events_dir}"), options=RelayOptions(**FAST))
    second = Relay(engine, open_router(f"file://{events_dir}"), options=RelayOptions(**FAST))
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        assert len(first.leases.refresh(conn, now)) == 64
    with engine.begin() as conn:
        assert second.leases.refresh(conn, now) == []  # all taken; it is now a live member
    with engine.begin() as conn:
        first.leases.refresh(conn, now)  # sees two relays: gives back half
    with engine.begin() as conn:
        assert len(second.leases.refresh(conn, now)) == 32
    assert set(first.leases.state.held).isdisjoint(second.leases.state.held)
    leases = get_lease_table()
    with engine.connect() as conn:
        fences = dict(conn.execute(select(leases.c.lease_partition, leases.c.fence)).all())
    assert {fences[p] for p in second.leases.state.held} == {2}  # taken twice: fence moved twice
    engine.dispose()


def test_a_failed_publish_leaves_its_reason_in_the_stats_the_first_one_kept(sqlite_url, events_dir):
    engine = migrated_engine(sqlite_url)
    emit_events(engine, ["a", "b"], per_key=3)
    router = FlakyRouter(f"file://{events_dir}", poison=lambda e: True)
    router.down = True
    relay = Relay(engine, router, options=RelayOptions(**FAST))

    stats = relay.drain()
    assert stats.failed == 6 and stats.first_error == "broker down (test)"
    router.down = False
    stats = relay.drain()  # each run starts its own totals
    assert stats.failed and stats.first_error == "rejected: poison (test)"
    router.poison = lambda e: False
    wait_until(lambda: relay.drain().published, what="the rows to be due again")
    assert relay.stats.first_error is None
    engine.dispose()


def test_a_once_run_that_met_a_database_error_says_so_in_its_stats(sqlite_url, events_dir):
    engine = migrated_engine(sqlite_url)
    emit_events(engine, ["a"], per_key=2)
    relay = Relay(engine, open_router(f"file://{events_dir}"), options=RelayOptions(**FAST))
    claim = relay._claim

    def claim_fails_once(*args):
        relay._claim = claim
        raise RuntimeError("connection lost (test)")

    relay._claim = claim_fails_once
    stats = relay.drain()
    assert stats.published == 0 and stats.database_error == "RuntimeError: connection lost (test)"
    stats = relay.drain()
    assert stats.published == 2 and stats.database_error is None
    engine.dispose()


def test_ready_needs_a_recent_database_round_trip_partitions_and_no_broker_outage(sqlite_url, events_dir):
    """/readyz: a round trip that hangs raises nothing, so a stale success counts as none."""
    engine = migrated_engine(sqlite_url)
    emit_events(engine, ["a"], per_key=2)
    router = FlakyRouter(f"file://{events_dir}")
    relay = Relay(engine, router, options=RelayOptions(**FAST))
    assert not relay.ready()  # holds nothing yet

    relay._start()  # takes the partitions: the round trip worked just now
    assert relay.ready()
    relay._db_ok_at -= FAST["lease_seconds"]  # as if the last round trip that worked was a lease ago
    assert not relay.ready()

    router.down = True
    readiness = []
    runner = threading.Thread(target=relay.run)
    runner.start()
    wait_until(lambda: router.calls >= 2, what="the relay to meet the broker outage")
    readiness.append(relay.ready())
    router.down = False
    wait_until(lambda: relay.ready(), what="the relay to be ready once the broker is back")
    relay.stop()
    runner.join(10)
    assert readiness == [False]  # the database answered all along; the broker did not
    engine.dispose()


def test_partitions_handed_to_another_relay_are_logged(sqlite_url, events_dir, caplog):
    engine = migrated_engine(sqlite_url)
    first = Relay(engine, open_router(f"file://{events_dir}"), owner="relay-1", options=RelayOptions(**FAST))
    second = Relay(engine, open_router(f"file://{events_dir}"), owner="relay-2", options=RelayOptions(**FAST))
    first._start()
    second._start()  # joins: short of its share

    with caplog.at_level("INFO", logger="strangler.relay"):
        first._refresh()  # hands back what the second is short of

    [given] = [r for r in caplog.records if r.getMessage() == "gave up partitions"]
    assert given.relay["lost"] > 0 and given.relay["held"] == 64 - given.relay["lost"]
    engine.dispose()


@pytest.mark.parametrize("url, expected", [
    ("postgresql+psycopg://app@db/shop", {"connect_timeout": 10, "keepalives": 1, "tcp_user_timeout": 30000}),
    ("postgresql+psycopg://app@db/shop?connect_timeout=3", {"keepalives": 1}),  # the URL's own wins
    ("mysql+pymysql://app@db/shop", {"connect_timeout": 10, "read_timeout": 120}),
    ("sqlite:///shop.db", {}),
])
def test_the_relays_database_connection_gets_network_timeouts_the_url_does_not_set(url, expected):
    from outbox.relay import network_timeouts

    timeouts = network_timeouts(url)

    assert expected.items() <= timeouts.items()
    assert "connect_timeout" not in timeouts if "connect_timeout=" in url else True
