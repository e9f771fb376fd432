"""The relay as deployed: several processes, a broker that goes away, metrics, NOTIFY, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from sqlalchemy import select

from outbox import emit
from outbox.metrics import MetricsServer, RelayMetrics
from outbox.relay import Relay, RelayOptions
from outbox.routers import open_router
from outbox.table import get_lease_table
from outbox.testing.services import require_module
from tests.outbox.relay_helpers import (
    emit_events,
    file_events,
    first_seen_order,
    migrated_engine,
    pending_count,
    rows,
    wait_until,
)


def start_relay(db_url: str, router_url: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    environment = {**os.environ, "STRANGLER_RELAY_LEASE_SECONDS": "3", "STRANGLER_RELAY_POLL_INTERVAL": "0.2",
                   **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-c", "from toolkit.cli import main; main()", "relay", "--db", db_url, "--router", router_url, *extra],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return process.returncode, err


@pytest.mark.slow
def test_three_relay_processes_keep_every_aggregates_order_and_lose_nothing(postgresql_url, tmp_path):
    engine = migrated_engine(postgresql_url)
    router_url = f"file://{tmp_path}/events"
    relays = [start_relay(postgresql_url, router_url) for _ in range(3)]
    keys = [f"agg{n}" for n in range(30)]
    sent: dict[str, list[int]] = {k: [] for k in keys}
    leases = get_lease_table()

    def owners() -> int:
        with engine.connect() as conn:
            return len(set(conn.execute(select(leases.c.owner).where(leases.c.owner.is_not(None))).scalars()))

    try:
        wait_until(lambda: owners() == 3, timeout=60, what="the three relays to share the partitions")
        for round_ in range(20):  # 600 events, interleaved across 30 aggregates, over a few seconds
            for key, ns in emit_events(engine, keys, per_key=1, start=round_).items():
                sent[key].extend(ns)
            time.sleep(0.15)
        wait_until(lambda: pending_count(engine) == 0, timeout=90, what="all 600 rows to be published")
    finally:
        outcomes = [stop(p) for p in relays]
    assert [code for code, _ in outcomes] == [0, 0, 0], [err[-2000:] for _, err in outcomes]
    assert first_seen_order(file_events(tmp_path / "events")) == sent
    assert len({r.published_by for r in rows(engine)}) == 3  # the partitions really were shared
    assert all('"event":"batch"' in err or '"event":"start"' in err for _, err in outcomes)
    engine.dispose()


def test_sigterm_finishes_the_batch_marks_it_and_exits_0(sqlite_url, tmp_path):
    engine = migrated_engine(sqlite_url)
    process = start_relay(sqlite_url, f"file://{tmp_path}/events")
    try:
        emit_events(engine, ["a", "b"], per_key=50)
        wait_until(lambda: pending_count(engine) == 0, what="the rows to be published")
    finally:
        code, err = stop(process)
    assert code == 0, err
    assert '"msg":"relay stopped"' in err and '"published":100' in err
    assert "payload" not in err and '"key"' not in err  # logs never carry event data
    engine.dispose()


def test_a_broker_outage_backs_off_keeps_the_rows_and_resumes(sqlite_url, own_redis):
    import redis

    url, start, kill = own_redis
    engine = migrated_engine(sqlite_url)
    relay = Relay(engine, open_router(url), options=RelayOptions(poll_interval=0.05, outage_max=0.5))
    runner = threading.Thread(target=relay.run)
    runner.start()
    try:
        sent = emit_events(engine, ["a", "b", "c"], per_key=10)
        wait_until(lambda: pending_count(engine) == 0, what="the first rows to be published")
        kill()
        later = emit_events(engine, ["a", "b", "c"], per_key=10, start=10)
        wait_until(lambda: relay.stats.failed > 0, what="the relay to notice the outage")
        time.sleep(1)  # several backoffs while the broker is down
        assert pending_count(engine) == 30
        assert all(r.attempts == 0 and r.dead_at is None for r in rows(engine))  # an outage is not the rows' fault
        start()
        wait_until(lambda: pending_count(engine) == 0, what="the relay to resume")
    finally:
        relay.stop()
        runner.join(30)
    client = redis.Redis.from_url(url)
    from outbox.routers.redis import envelope_of

    events = [envelope_of(fields) for _, fields in client.xrange("order")]
    client.close()
    expected = {k: sent[k] + later[k] for k in sent}
    assert first_seen_order(events) == expected  # nothing lost, order kept across the outage
    engine.dispose()


def test_metrics_endpoint_serves_the_named_metrics_and_health(sqlite_url, tmp_path):
    require_module("prometheus_client", "metrics")
    engine = migrated_engine(sqlite_url)
    emit_events(engine, ["a"], per_key=5)
    metrics = RelayMetrics("file")
    relay = Relay(engine, open_router(f"file://{tmp_path}/events"), metrics=metrics,
                  options=RelayOptions(poll_interval=0.05))
    server = MetricsServer(metrics, 0, healthy=relay.healthy, ready=relay.ready, host="127.0.0.1").start()
    runner = threading.Thread(target=relay.run)
    runner.start()
    try:
        wait_until(lambda: pending_count(engine) == 0, what="the rows to be published")
        base = f"http://127.0.0.1:{server.port}"
        body = urllib.request.urlopen(f"{base}/metrics").read().decode()
        health = urllib.request.urlopen(f"{base}/healthz").status
        ready = urllib.request.urlopen(f"{base}/readyz").status
    finally:
        relay.stop()
        runner.join(30)
        server.close()
    assert 'strangler_relay_published_total{router="file",type="shop.order.changed"} 5.0' in body
    for name in ("strangler_relay_failed_total", "strangler_relay_dead_total",
                 "strangler_relay_batch_publish_seconds_bucket", "strangler_relay_publish_lag_seconds_bucket",
                 "strangler_relay_oldest_pending_age_seconds", "strangler_relay_blocked_keys"):
        assert name in body
    assert (health, ready) == (200, 200)
    engine.dispose()


def test_postgresql_notify_wakes_the_relay_at_commit(postgresql_url, tmp_path):
    engine = migrated_engine(postgresql_url)
    # A poll interval far beyond the wait below: only NOTIFY can explain the publish.
    relay = Relay(engine, open_router(f"file://{tmp_path}/events"), options=RelayOptions(poll_interval=120))
    runner = threading.Thread(target=relay.run)
    runner.start()
    try:
        # Idle long enough that a polling relay's next look is over 4 s away (its sleep doubles
        # up to poll_interval); only a notification explains a publish within 3 s.
        time.sleep(5.5)
        with engine.begin() as conn:
            emit(conn, "shop.order.created", aggregate="order", key="1", data={"n": 0})
        wait_until(lambda: pending_count(engine) == 0, timeout=3, what="NOTIFY to wake the relay")
    finally:
        relay.stop()
        runner.join(30)
    assert len(file_events(tmp_path / "events")) == 1
    engine.dispose()
