"""``strangler watch``: alerts as JSON lines on stderr, exit codes, bad rules as usage errors."""

from __future__ import annotations

import json
import textwrap
import time

import pytest
from click.testing import CliRunner

from outbox.envelope import Envelope
from toolkit.cli import cli
from tests.outbox.relay_helpers import publish

RULES = """
[[rule]]
name = "mass-deletion"
kind = "rate"
type = "shop.customer.deleted"
max = 2
window = "1m"

[[rule]]
name = "shop-only"
kind = "source"
type = "shop.*"
sources = ["/shop"]
"""


def envelope(n: int, type_: str = "shop.customer.deleted", source: str = "/shop") -> Envelope:
    return Envelope.from_structured(
        {
            "specversion": "1.0",
            "id": f"0193a6c2-0000-7000-8000-{n:012d}",
            "source": source,
            "type": type_,
            "subject": str(n),
            "time": "2026-11-29T10:00:00Z",
            "aggregatetype": "customer",
            "data": {"id": n},
        }
    )


@pytest.fixture
def router(tmp_path):
    url = f"file://{tmp_path}/events"
    rules = tmp_path / "strangler-watch.toml"
    rules.write_text(RULES)
    return url, rules




def run(*args):
    return CliRunner().invoke(cli, ["watch", *args])


def test_ordinary_traffic_exits_0_with_no_alert(router):
    url, rules = router
    publish(url, [envelope(1, "shop.customer.registered"), envelope(2)])

    result = run(
        "--router",
        url,
        "--rules",
        str(rules),
        "--destination",
        "customer",
        "--once",
        "--fail-on-alert",
        "--json",
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "observed": 2,
        "alerts": 0,
        "rules": ["mass-deletion", "shop-only"],
    }
    assert result.stderr == ""


def test_each_alert_is_a_json_line_on_stderr_and_fail_on_alert_exits_1(router):
    url, rules = router
    publish(
        url,
        [envelope(n) for n in range(3)]
        + [envelope(9, "shop.customer.registered", source="/elsewhere")],
    )

    result = run(
        "--router",
        url,
        "--rules",
        str(rules),
        "--destination",
        "customer",
        "--once",
        "--fail-on-alert",
    )

    assert result.exit_code == 1
    alerts = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert sorted(a["alert"] for a in alerts) == ["mass-deletion", "shop-only"]
    rate = next(a for a in alerts if a["alert"] == "mass-deletion")
    assert rate["count"] == 3 and len(rate["evidence"]) == 3 and rate["window"]["seconds"] == 60
    assert "1 alert" not in result.stderr and "2 alert(s) raised" in result.stderr


def test_the_watch_resumes_its_own_group_so_a_second_run_sees_only_new_events(router):
    url, rules = router
    publish(url, [envelope(n) for n in range(3)])
    assert (
        run("--router", url, "--rules", str(rules), "--destination", "customer", "--once").exit_code
        == 0
    )

    again = run(
        "--router",
        url,
        "--rules",
        str(rules),
        "--destination",
        "customer",
        "--once",
        "--json",
        "--fail-on-alert",
    )

    assert again.exit_code == 0 and json.loads(again.stdout)["observed"] == 0


def test_bad_rules_are_a_usage_error_naming_the_file_rule_and_key(router, tmp_path):
    url, _ = router
    bad = tmp_path / "bad.toml"
    bad.write_text(
        textwrap.dedent("""
        [[rule]]
        name = "mass-deletion"
        kind = "rate"
        type = "shop.customer.deleted"
        max = "lots"
        window = "1m"
    """)
    )

    result = run("--router", url, "--rules", str(bad), "--destination", "customer", "--once")

    assert result.exit_code == 2
    assert f"{bad}: rule 'mass-deletion': key 'max': expected a whole number" in result.output


def test_a_gap_rule_without_a_database_is_a_usage_error(router, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url, _ = router
    rules = tmp_path / "gap.toml"
    rules.write_text('[[rule]]\nname = "gap"\nkind = "gap"\n')

    result = run("--router", url, "--rules", str(rules), "--destination", "customer", "--once")

    assert result.exit_code == 2 and "pass --db URL" in result.output


def test_a_message_that_is_not_a_cloudevent_is_passed_over(router, tmp_path):
    url, rules = router
    publish(url, [envelope(1)])
    with open(tmp_path / "events" / "customer.jsonl", "a") as events:
        events.write("not json at all\n")
    publish(url, [envelope(2)])
    result = run("--router", url, "--rules", str(rules), "--destination", "customer", "--once")
    assert result.exit_code == 0, result.output


def test_a_redis_that_does_not_answer_is_a_usage_error_without_its_password(router):
    _, rules = router
    result = run("--router", "redis://:s3cret@127.0.0.1:1/0", "--rules", str(rules), "--destination", "customer",
                 "--once")
    assert result.exit_code == 2 and "cannot be watched" in result.output and "Connection refused" in result.output
    assert "s3cret" not in result.output


def test_the_watch_posts_each_alert_to_a_webhook(router):
    import http.server
    import threading

    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url, rules = router
        publish(url, [envelope(n) for n in range(3)])
        hook = f"http://127.0.0.1:{server.server_address[1]}/alerts"

        result = run(
            "--router",
            url,
            "--rules",
            str(rules),
            "--destination",
            "customer",
            "--once",
            "--webhook",
            hook,
        )
    finally:
        server.shutdown()
        server.server_close()

    assert result.exit_code == 0, result.output
    assert [(a["alert"], a["count"]) for a in received] == [("mass-deletion", 3)]


def test_with_a_readers_key_the_watch_sees_which_producer_key_signed(tmp_path):
    import dataclasses

    from outbox.crypto import KeyRing, Sealer, new_key
    from tests.outbox.crypto_helpers import make_world, sealed_envelope

    world = make_world(tmp_path)
    shop = world.sealer()
    new_key(world.keys, "rogue", producer=True)
    rogue = Sealer(KeyRing.load(world.keys), world.policy, producer="rogue")
    url = f"file://{tmp_path}/events"
    genuine = dataclasses.replace(sealed_envelope(shop, {"id": 1}), aggregatetype="order")
    forged = dataclasses.replace(sealed_envelope(rogue, {"id": 2}), aggregatetype="order")
    publish(url, [genuine, forged])
    rules = tmp_path / "producers.toml"
    rules.write_text(
        '[[rule]]\nname = "shop-signs"\nkind = "source"\ntype = "shop.*"\nproducers = ["shop"]\n'
    )
    key = str(world.keys / "billing-1.private.jwk")

    result = run(
        "--router",
        url,
        "--rules",
        str(rules),
        "--destination",
        "order",
        "--once",
        "--key",
        key,
        "--keys-dir",
        str(world.keys),
    )

    assert result.exit_code == 0, result.output
    (alert,) = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert alert["alert"] == "shop-signs" and alert["producer_kid"] == "rogue-1"
    assert alert["evidence"] == [forged.id]


@pytest.mark.parametrize("broker", ["file", "redis"])
def test_a_destination_prefix_in_the_router_url_is_read_as_the_relay_published_it(router, broker, tmp_path):
    import uuid

    from outbox.testing.services import require_module, service_url

    _, rules = router
    prefix = f"w{uuid.uuid4().hex[:8]}_"
    if broker == "redis":
        require_module("redis", "redis")
        url = f"{service_url('redis')}?destination_prefix={prefix}"
    else:
        url = f"file://{tmp_path}/prefixed?destination_prefix={prefix}"
    publish(url, [envelope(1, "shop.customer.registered"), envelope(2, "shop.customer.registered")])
    try:
        result = run("--router", url, "--rules", str(rules), "--destination", "customer", "--once", "--json")

        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["observed"] == 2
    finally:
        if broker == "redis":
            import redis

            client = redis.Redis.from_url(service_url("redis"))
            client.delete(prefix + "customer")
            client.close()


def test_the_gap_rule_compares_the_outbox_with_the_prefixed_destinations(tmp_path, sqlite_url):
    """A row marked published that never reached the prefixed stream is a gap; the ones there are not."""
    import datetime as dt

    from sqlalchemy import create_engine, update

    from outbox import emit
    from outbox.migrate import standalone_config, upgrade
    from outbox.relay import Relay
    from outbox.routers import open_router
    from outbox.table import get_outbox_table

    url = f"file://{tmp_path}/events?destination_prefix=staging_"
    rules = tmp_path / "gap.toml"
    rules.write_text('[[rule]]\nname = "gap"\nkind = "gap"\ngrace = "0.1s"\n')
    upgrade(standalone_config(sqlite_url))
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        for n in range(2):
            emit(conn, "shop.customer.registered", aggregate="customer", key=n, data={"id": n})
    router = open_router(url)
    Relay(engine, router).drain()
    router.close()
    with engine.begin() as conn:
        lost = emit(conn, "shop.customer.registered", aggregate="customer", key=9, data={"id": 9})
        table = get_outbox_table()
        conn.execute(update(table).where(table.c.id == lost).values(published_at=dt.datetime.now(dt.timezone.utc)))
    engine.dispose()
    time.sleep(0.2)  # past the rule's grace

    result = run("--router", url, "--db", sqlite_url, "--rules", str(rules), "--destination", "customer",
                 "--once", "--json")

    alerts = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert json.loads(result.stdout)["observed"] == 2, result.output
    assert [a["evidence"] for a in alerts] == [[lost]]
