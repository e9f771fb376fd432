"""``strangler verify`` runs the scenarios against a given database and broker, and leaves nothing behind."""

from __future__ import annotations

import json

import redis
import sqlalchemy as sa
from click.testing import CliRunner

from outbox.testing.services import service_url
from toolkit.cli import cli


def test_verify_reports_figures_as_json_and_leaves_no_table_or_stream(postgresql_url):
    router = service_url("redis")
    result = CliRunner().invoke(cli, [
        "verify", "--db", postgresql_url, "--router", router, "--scenario", "relay-kill",
        "--scenario", "db-cut", "--events", "60", "--kills", "2", "--json",
    ])
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [doc["scenario"] for doc in docs] == ["relay-kill", "db-cut"]
    for doc in docs:
        assert doc["ok"] and doc["lost"] == 0 and doc["order_violations"] == 0 and doc["produced"] > 0
    assert sa.inspect(sa.create_engine(postgresql_url)).get_table_names() == []
    client = redis.Redis.from_url(router)
    for doc in docs:
        assert doc["stage"] and list(client.scan_iter(match=f"{doc['stage']}*")) == []
    client.close()


def test_a_scenario_that_does_not_fit_the_broker_is_skipped_with_the_reason(postgresql_url, tmp_path):
    result = CliRunner().invoke(cli, [
        "verify", "--db", postgresql_url, "--router", f"file://{tmp_path}", "--scenario", "broker-outage",
    ])
    assert result.exit_code == 0, result.output
    assert ("broker-outage: skipped (broker-outage starts its own broker: Redis, RabbitMQ, NATS or MQTT, not file)"
            in result.stdout)


def test_a_malformed_database_url_is_a_usage_error():
    result = CliRunner().invoke(cli, ["verify", "--db", "nonsense", "--router", "redis://127.0.0.1:6379/0"])
    assert result.exit_code == 2
    assert "is not a usable SQLAlchemy URL" in result.output
