"""PostgreSQL NOTIFY carries small new rows: a caught-up relay publishes them without a claim."""

from __future__ import annotations

import json
import threading
import time

import pytest

from outbox import emit
from outbox.relay import Relay, RelayOptions
from outbox.routers import open_router
from tests.outbox.relay_helpers import (
    FlakyRouter,
    file_events,
    migrated_engine,
    pending_count,
    wait_until,
)

#: No poll and no lease renewal within a test: only notifications can explain a publish.
QUIET = dict(poll_interval=120, lease_seconds=120)


class CountingRelay(Relay):
    """Counts claim queries and mark statements (with how many rows each marked)."""

    claims = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.marked_rows: list[int] = []

    def _claim(self, exclude):
        self.claims += 1
        return super()._claim(exclude)

    def _mark(self, batch, results):
        self.marked_rows.append(len(batch.rows))
        return super()._mark(batch, results)


@pytest.fixture
def relay_running(postgresql_url, tmp_path):
    started = []

    def start(router=None, **options):
        engine = migrated_engine(postgresql_url)
        relay = CountingRelay(engine, router or open_router(f"file://{tmp_path}/events"),
                              options=RelayOptions(**{**QUIET, **options}))
        runner = threading.Thread(target=relay.run)
        runner.start()
        started.append((relay, runner, engine))
        wait_until(lambda: relay._listening and relay.claims >= 1, timeout=10, what="the relay to listen")
        return relay, engine

    yield start
    for relay, runner, engine in started:
        relay.stop()
        runner.join(30)
        engine.dispose()


def _emit_each_in_its_own_transaction(engine, keys, data=None) -> list[str]:
    ids = []
    for n, key in enumerate(keys):
        with engine.begin() as conn:
            ids.append(emit(conn, "shop.order.created", aggregate="order", key=key, data=data or {"n": n}))
    return ids


def test_a_caught_up_relay_publishes_notified_rows_in_commit_order_without_claiming(relay_running, tmp_path):
    relay, engine = relay_running()
    wait_until(lambda: relay.claims >= 1 and relay._claim_needed is False, timeout=5, what="the first claim")
    claims_before = relay.claims
    _emit_each_in_its_own_transaction(engine, ["a", "b", "a", "c", "a"])
    wait_until(lambda: pending_count(engine) == 0, timeout=5, what="the notified rows to be published")
    events = file_events(tmp_path / "events")
    assert [json.loads(e.data)["n"] for e in events] == [0, 1, 2, 3, 4]
    assert relay.claims == claims_before  # straight from the notifications


def test_rows_published_from_notifications_are_marked_together_within_the_mark_interval(relay_running, tmp_path):
    relay, engine = relay_running(mark_interval=0.5)
    wait_until(lambda: relay.claims >= 1 and relay._claim_needed is False, timeout=5, what="the first claim")
    marks_before, batches_before = len(relay.marked_rows), relay.stats.batches
    for n in range(12):
        _emit_each_in_its_own_transaction(engine, [f"k{n % 3}"])
        time.sleep(0.01)  # each commit its own notification, its own published batch
    wait_until(lambda: len(file_events(tmp_path / "events")) == 12, timeout=5, what="the notified rows to be sent")
    wait_until(lambda: pending_count(engine) == 0, timeout=5, what="the gathered marks")
    gathered, batches = relay.marked_rows[marks_before:], relay.stats.batches - batches_before
    assert sum(gathered) == 12 and len(gathered) < batches  # fewer mark statements than published batches


def test_with_mark_interval_0_each_notified_batch_is_marked_at_once(relay_running, tmp_path):
    relay, engine = relay_running(mark_interval=0)
    wait_until(lambda: relay.claims >= 1 and relay._claim_needed is False, timeout=5, what="the first claim")
    marks_before = len(relay.marked_rows)
    for n in range(5):
        _emit_each_in_its_own_transaction(engine, [f"k{n}"])
        wait_until(lambda: pending_count(engine) == 0, timeout=5, what="each row marked on its own")
    assert relay.marked_rows[marks_before:] == [1] * 5


def test_a_relay_stopped_within_the_mark_interval_marks_what_it_published(postgresql_url, tmp_path):
    engine = migrated_engine(postgresql_url)
    relay = CountingRelay(engine, open_router(f"file://{tmp_path}/events"),
                          options=RelayOptions(**{**QUIET, "mark_interval": 30}))
    runner = threading.Thread(target=relay.run)
    runner.start()
    try:
        wait_until(lambda: relay._listening and relay.claims >= 1 and relay._claim_needed is False, timeout=10,
                   what="the relay to listen")
        _emit_each_in_its_own_transaction(engine, ["a", "b", "c"])
        wait_until(lambda: len(file_events(tmp_path / "events")) == 3, timeout=5, what="the rows to be sent")
        assert pending_count(engine) == 3  # sent, their mark still gathering
    finally:
        relay.stop()
        runner.join(30)
    assert pending_count(engine) == 0
    engine.dispose()


def test_a_relay_whose_listen_connection_is_killed_connects_again_and_loses_nothing(relay_running, tmp_path):
    from sqlalchemy import text

    relay, engine = relay_running()
    wait_until(lambda: relay.claims >= 1 and relay._claim_needed is False, timeout=5, what="the first claim")
    with engine.connect() as conn:
        killed = conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
        )).scalars().all()
    assert killed == [True]
    _emit_each_in_its_own_transaction(engine, ["a", "b"])  # committed while nobody may be listening
    wait_until(lambda: pending_count(engine) == 0, timeout=10, what="the rows of the gap to be published")
    wait_until(lambda: relay._listening and relay._claim_needed is False, timeout=10, what="LISTEN again")
    claims_before = relay.claims
    _emit_each_in_its_own_transaction(engine, ["a", "c"])
    wait_until(lambda: pending_count(engine) == 0, timeout=5, what="the rows after the gap")
    assert [json.loads(e.data)["n"] for e in file_events(tmp_path / "events")] == [0, 1, 0, 1]
    assert relay.claims == claims_before  # notified again, no claim needed


def test_a_notification_too_large_to_carry_its_row_still_wakes_a_claim(relay_running, tmp_path):
    relay, engine = relay_running()
    claims_before = relay.claims
    _emit_each_in_its_own_transaction(engine, ["big"], data={"blob": "x" * 9000})
    wait_until(lambda: pending_count(engine) == 0, timeout=5, what="a claim woken by an empty notification")
    assert relay.claims > claims_before
    assert len(file_events(tmp_path / "events")) == 1


def test_a_notified_row_behind_its_keys_failed_row_waits_for_it(relay_running, tmp_path):
    first = {}

    def poison_once(event):  # the first event of key "k" is refused once
        if event.partitionkey == "k" and not first:
            first["id"] = event.id
            return True
        return False

    router = FlakyRouter(f"file://{tmp_path}/events", poison=poison_once)
    relay, engine = relay_running(router, poll_interval=0.3, retry_base=0.5, retry_max=0.5)
    (k1,) = _emit_each_in_its_own_transaction(engine, ["k"])
    wait_until(lambda: bool(first) and bool(relay.blocked), timeout=5, what="the first row to fail")
    k2, _ = _emit_each_in_its_own_transaction(engine, ["k", "other"])  # notified while "k" is held back
    wait_until(lambda: pending_count(engine) == 0, timeout=10, what="everything published")
    assert [e.id for e in file_events(tmp_path / "events") if e.partitionkey == "k"] == [k1, k2]


def test_the_notification_of_a_sealed_size_row_is_the_same_since_strangler_0004(postgresql_url):
    """strangler_0004 strips base64's line breaks more cheaply; the relay must read the same text."""
    import base64

    import psycopg

    from outbox import migrate

    payload = bytes(range(256)) * 5  # 1,280 bytes: its base64 spans many 76-character lines
    plain_url = postgresql_url.replace("postgresql+psycopg://", "postgresql://")
    cfg = migrate.standalone_config(postgresql_url)
    texts = {}
    with psycopg.connect(plain_url, autocommit=True) as listener, psycopg.connect(plain_url) as writer:
        for revision in ("strangler_0003", "strangler_0004"):
            migrate.upgrade(cfg, revision)
            listener.execute("LISTEN strangler_outbox")
            writer.execute(
                "INSERT INTO strangler_outbox (position, id, aggregatetype, aggregateid, type, payload, "
                "\"timestamp\", source, content_type, lease_partition) VALUES "
                "(%s, %s, 'order', 'k', 't', %s, '2026-01-01', '/s', 'application/octet-stream', 3)",
                (len(texts) + 1, f"id-{revision}", payload))
            writer.commit()
            [note] = list(listener.notifies(timeout=5, stop_after=1))
            listener.execute("UNLISTEN strangler_outbox")
            texts[revision] = note.payload.replace(f"id-{revision}", "id").replace(f"[{len(texts) + 1},", "[n,")
    assert texts["strangler_0003"] == texts["strangler_0004"]
    [row] = json.loads(texts["strangler_0004"].replace("[n,", "[0,"))
    assert base64.b64decode(row[5]) == payload
    assert migrate.current_revision(postgresql_url) == "strangler_0004"
