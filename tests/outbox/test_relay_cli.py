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
from outbox.testing.databases import table_names
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


def test_relay_settings_reach_the_relay(tmp_path):
    from toolkit.commands.relay import relay_options
    from toolkit.config import load_config

    path = tmp_path / "strangler.toml"
    path.write_text('outbox_table = "shop_outbox"\n[relay]\nretry_base = 3\nretry_max = 90\n'
                    'outage_max = 4\ncoalesce = 0.01\nmark_interval = 0.05\nbatch = 7\n')
    options = relay_options(load_config(path, environ={}))
    assert (options.retry_base, options.retry_max, options.outage_max, options.coalesce) == (3.0, 90.0, 4.0, 0.01)
    assert options.mark_interval == 0.05
    assert (options.batch, options.table_name) == (7, "shop_outbox")


def test_relay_retry_base_from_the_environment_delays_a_failed_row(sqlite_url, tmp_path):
    engine = migrated_engine(sqlite_url)
    emit_events(engine, ["a"], per_key=1)
    with engine.begin() as conn:  # a row that is not a valid event: a permanent failure
        conn.execute(update(outbox).values(source=""))
    env = {"STRANGLER_RELAY_RETRY_BASE": "400", "STRANGLER_RELAY_RETRY_MAX": "400"}
    before = dt.datetime.now(dt.UTC)
    result = CliRunner().invoke(cli, ["relay", "--db", sqlite_url, "--router", f"file://{tmp_path}/ev", "--once"],
                                env=env)
    assert result.exit_code == 1, result.output
    [row] = rows(engine)
    assert row.attempts == 1 and row.published_at is None
    assert 200 <= (row.available_at - before).total_seconds() <= 401  # 400 s times a jitter of 0.5 to 1
    engine.dispose()


def test_relay_with_a_bad_setting_exits_2_naming_the_key(sqlite_url):
    migrated_engine(sqlite_url).dispose()
    result = CliRunner().invoke(cli, ["relay", "--db", sqlite_url, "--router", "file://./x", "--once"],
                                env={"STRANGLER_RELAY_COALESCE": "5"})
    assert result.exit_code == 2
    assert "relay.coalesce = 5.0" in result.output and "relay.poll_interval" in result.output


def test_relay_once_against_an_unreachable_broker_says_why_publishes_failed(sqlite_url):
    engine = migrated_engine(sqlite_url)
    emit_events(engine, ["a"], per_key=3)
    result = CliRunner().invoke(cli, ["relay", "--db", sqlite_url, "--router", "redis://:secret@127.0.0.1:1/0",
                                      "--once", "--log-level", "error"])
    assert result.exit_code == 1
    assert "3 publishes failed (0 rows dead" in result.output
    assert "redis unreachable" in result.output and "Connection refused" in result.output
    assert "secret" not in result.output
    assert pending_count(engine) == 3
    engine.dispose()


def test_relay_on_a_database_without_the_outbox_says_to_migrate_it(tmp_path):
    url = f"sqlite:///{tmp_path}/empty.db"
    (tmp_path / "empty.db").touch()
    result = CliRunner().invoke(cli, ["relay", "--db", url, "--router", f"file://{tmp_path}/ev", "--once"])
    assert result.exit_code == 1
    assert f"has no table strangler_outbox_leases: run 'strangler outbox migrate --db {url}'" in result.output
    assert "[SQL:" not in result.output and "sqlalche.me" not in result.output
    assert table_names(url) == set()  # nothing created in a database that is not the outbox's


def test_relay_on_an_unreachable_database_says_it_cannot_be_reached_with_the_password_hidden(tmp_path):
    result = CliRunner().invoke(cli, ["relay", "--db", "postgresql+psycopg://app:secret@127.0.0.1:1/shop",
                                      "--router", f"file://{tmp_path}/ev", "--once"])
    assert result.exit_code == 1
    assert "cannot reach the database postgresql+psycopg://app:***@127.0.0.1:1/shop" in result.output
    assert "Connection refused" in result.output and "secret" not in result.output
    assert "migrate" not in result.output


def test_relay_once_that_met_a_database_error_exits_1_saying_so(sqlite_url, tmp_path, monkeypatch):
    from outbox.relay import Relay

    engine = migrated_engine(sqlite_url)
    emit_events(engine, ["a"], per_key=2)
    engine.dispose()

    def claim_fails(self, exclude):
        raise RuntimeError("connection lost (test)")

    monkeypatch.setattr(Relay, "_claim", claim_fails)
    result = CliRunner().invoke(cli, ["relay", "--db", sqlite_url, "--router", f"file://{tmp_path}/ev", "--once"])
    assert result.exit_code == 1
    assert "stopped early on a database error" in result.output and "connection lost (test)" in result.output
