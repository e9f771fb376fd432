"""``strangler relay`` and ``strangler outbox retry|purge`` as a user runs them."""

from __future__ import annotations

import datetime as dt
import json

from click.testing import CliRunner
from sqlalchemy import update

from tests.outbox.relay_helpers import (
    emit_events,
    file_events,
    migrated_engine,
    outbox,
    pending_count,
    rows,
)
from toolkit.cli import cli


def test_relay_once_drains_and_exits_0(sqlite_url, tmp_path):
    engine = migrated_engine(sqlite_url)
    emit_events(engine, ["a", "b"], per_key=150)
    result = CliRunner().invoke(cli, ["relay", "--db", sqlite_url, "--router", f"file://{tmp_path}/ev",
                                      "--once", "--batch", "100"])
    assert result.exit_code == 0, result.output
    assert len(file_events(tmp_path / "ev")) == 300 and pending_count(engine) == 0
    engine.dispose()


def test_relay_names_an_unknown_router_scheme_and_exits_2(sqlite_url):
    migrated_engine(sqlite_url).dispose()
    result = CliRunner().invoke(cli, ["relay", "--db", sqlite_url, "--router", "kafkaa://broker:9092", "--once"])
    assert result.exit_code == 2
    assert "kafkaa://broker:9092" in result.output and "installed:" in result.output


def test_relay_without_a_database_is_a_usage_error():
    result = CliRunner().invoke(cli, ["relay", "--db", "", "--router", "file://./x", "--once"])
    assert result.exit_code == 2 and "--db" in result.output


def test_relay_help_has_an_example():
    result = CliRunner().invoke(cli, ["relay", "--help"])
    assert result.exit_code == 0 and "strangler relay --db" in result.output


def test_outbox_retry_brings_dead_rows_back(sqlite_url):
    engine = migrated_engine(sqlite_url)
    emit_events(engine, ["a"], per_key=3)
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(update(outbox).values(dead_at=now, attempts=10, last_error="rejected"))
    result = CliRunner().invoke(cli, ["outbox", "retry", "--db", sqlite_url, "--json", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"retried": 3, "batches": 2}
    assert all(r.dead_at is None and r.attempts == 0 for r in rows(engine))
    missing = CliRunner().invoke(cli, ["outbox", "retry", "--db", sqlite_url, "--id", "no-such-id"])
    assert missing.exit_code == 1 and "not dead rows" in missing.output
    engine.dispose()


def test_outbox_purge_takes_an_age_and_reports_batches(sqlite_url):
    engine = migrated_engine(sqlite_url)
    emit_events(engine, ["a"], per_key=5)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    with engine.begin() as conn:
        conn.execute(update(outbox).values(published_at=old))
    result = CliRunner().invoke(cli, ["outbox", "purge", "--db", sqlite_url, "--published-before", "7d",
                                      "--batch-size", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert (json.loads(result.output)["purged"], json.loads(result.output)["batches"]) == (5, 3)
    assert rows(engine) == []
    engine.dispose()


def test_outbox_purge_rejects_a_bad_cutoff_with_examples(sqlite_url):
    result = CliRunner().invoke(cli, ["outbox", "purge", "--db", sqlite_url, "--published-before", "last week"])
    assert result.exit_code == 2 and "7d" in result.output
