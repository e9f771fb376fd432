"""``strangler events replay``: published rows go out again, as the relay sent them, and stay as they were."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from outbox import configure, emit
from outbox.crypto import producer_crypto
from outbox.envelope import JOSE_CONTENT_TYPE, Envelope
from outbox.relay import Relay, RelayOptions
from outbox.replay import Selection, replay
from outbox.routers import open_router
from outbox.testing.databases import temporary_database
from outbox.testing.services import require_module, service_url
from tests.outbox.crypto_helpers import make_world
from tests.outbox.relay_helpers import emit_events, file_events, first_seen_order, migrated_engine, outbox, rows
from toolkit.cli import cli


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh database on SQLite and on PostgreSQL."""
    with temporary_database(request.param, tmp_path) as url:
        yield url


def published(engine, events_dir, keys=("a", "b", "c"), per_key=10):
    """Emit events and relay them to ``events_dir``; return key → n in emit order."""
    sent = emit_events(engine, list(keys), per_key=per_key)
    stats = Relay(engine, open_router(f"file://{events_dir}"), options=RelayOptions(batch=50)).drain()
    assert stats.published == len(keys) * per_key
    return sent


def bookkeeping(engine):
    return [(r.position, r.published_at, r.published_by, r.attempts, r.dead_at, r.available_at) for r in rows(engine)]


def run(*args, env=None):
    return CliRunner().invoke(cli, ["events", "replay", *args], env=env)


def test_replay_sends_the_relays_bytes_in_position_order_and_changes_no_row(db_url, tmp_path):
    engine = migrated_engine(db_url)
    sent = published(engine, tmp_path / "first")
    emit_events(engine, ["a"], per_key=2, start=100)  # pending: the relay's, not the replay's
    with engine.begin() as conn:  # a dead row is outbox retry's, not the replay's
        conn.execute(update(outbox).where(outbox.c.position == 31).values(dead_at=dt.datetime.now(dt.UTC)))
    before = bookkeeping(engine)

    result = run("--db", db_url, "--router", f"file://{tmp_path}/again", "--all", "--batch", "7", "--json")

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["selected"], summary["published"], summary["batches"]) == (30, 30, 5)
    assert summary["by_destination"] == {"order": 30} and summary["by_type"] == {"shop.order.changed": 30}
    assert (summary["first_position"], summary["last_position"], summary["resume_from"]) == (1, 30, None)
    assert "de-duplicate by event id" in result.stderr
    first = (tmp_path / "first" / "order.jsonl").read_bytes()
    assert (tmp_path / "again" / "order.jsonl").read_bytes() == first  # same events, same bytes, same order
    assert first_seen_order(file_events(tmp_path / "again")) == sent
    assert bookkeeping(engine) == before
    engine.dispose()


def test_filters_select_by_type_aggregate_time_position_and_id(db_url, tmp_path):
    engine = migrated_engine(db_url)
    emit_events(engine, ["1", "2"], per_key=3)  # positions 1-6: order 1, 2, 1, 2, 1, 2
    emit_events(engine, ["1"], per_key=2, aggregate="customer")  # positions 7-8
    Relay(engine, open_router(f"file://{tmp_path}/first")).drain()
    old = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with engine.begin() as conn:
        for position in (1, 2, 3):
            conn.execute(update(outbox).where(outbox.c.position == position)
                         .values(timestamp=old + dt.timedelta(hours=position)))
    ids = {r.position: r.id for r in rows(engine)}

    def positions(**filters):
        router = open_router(f"file://{tmp_path}/{uuid.uuid4().hex[:8]}")
        folder = router.folder
        result = replay(engine, router, Selection(**filters), batch=2)
        router.close()
        assert result.ok and result.published == result.selected
        got = [e.id for d in ("order", "customer") for e in file_events(folder, d)]
        return sorted(p for p, i in ids.items() if i in got)

    assert positions(types=("shop.customer.changed",)) == [7, 8]
    assert positions(types=("shop.*.changed",)) == list(range(1, 9))
    assert positions(types=("shop.cust?mer.*", "nope")) == [7, 8]
    assert positions(types=("SHOP.ORDER.*",)) == []  # patterns are case-sensitive everywhere
    assert positions(aggregates=(("order", "2"),)) == [2, 4, 6]
    assert positions(aggregates=(("order", None),)) == list(range(1, 7))
    assert positions(aggregates=(("order", "1"), ("customer", "1"))) == [1, 3, 5, 7, 8]
    assert positions(since=old + dt.timedelta(hours=2), until=old + dt.timedelta(hours=3)) == [2]
    assert positions(until=old + dt.timedelta(days=1)) == [1, 2, 3]
    assert positions(position_from=3, position_to=5) == [3, 4, 5]
    assert positions(ids=(ids[6], ids[8])) == [6, 8]
    assert positions(position_from=2, aggregates=(("order", "1"),), types=("shop.order.*",)) == [3, 5]
    engine.dispose()


def test_dry_run_counts_by_type_and_destination_and_sends_nothing(sqlite_url, tmp_path):
    engine = migrated_engine(sqlite_url)
    published(engine, tmp_path / "first", keys=("a", "b"), per_key=3)
    emit_events(engine, ["x"], per_key=2, aggregate="customer")
    Relay(engine, open_router(f"file://{tmp_path}/first")).drain()
    before = bookkeeping(engine)

    url = f"file://{tmp_path}/again?destination_prefix=staging_"
    result = run("--db", sqlite_url, "--router", url, "--since", "1h", "--dry-run", "--json")

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dry_run"] is True and "published" not in summary
    assert summary["selected"] == 8
    assert summary["by_type"] == {"shop.customer.changed": 2, "shop.order.changed": 6}
    assert summary["by_destination"] == {"staging_customer": 2, "staging_order": 6}
    assert '"n"' not in result.output  # counts, never a payload
    assert not (tmp_path / "again").exists()
    assert bookkeeping(engine) == before

    text = run("--db", sqlite_url, "--router", url, "--type", "shop.order.*", "--dry-run")
    assert text.exit_code == 0, text.output
    assert "dry run: 6 events would be replayed" in text.output and "nothing sent" in text.output
    assert "staging_order" in text.output and "staging_customer" not in text.output
    engine.dispose()


def test_replay_to_redis_reads_back_the_sealed_bytes_of_the_rows(db_url, tmp_path):
    require_module("redis", "redis")
    import redis

    from outbox.routers.redis import envelope_of

    world = make_world(tmp_path)
    configure(source="/shop", sealer=world.sealer())  # encrypt at emit: rows hold the JWE
    engine = migrated_engine(db_url)
    with engine.begin() as conn:
        for n in range(5):
            emit(conn, "shop.order.paid", aggregate="order", key=str(n % 2), data={"n": n})
    with engine.begin() as conn:
        conn.execute(update(outbox).values(published_at=dt.datetime.now(dt.UTC), published_by="relay-test"))
    stored = {r.id: bytes(r.payload) for r in rows(engine)}
    prefix = f"replay{uuid.uuid4().hex[:10]}_"
    url = f"{service_url('redis')}?destination_prefix={prefix}"

    result = run("--db", db_url, "--router", url, "--aggregate", "order", "--json")

    client = redis.Redis.from_url(service_url("redis"))
    try:
        events = [envelope_of(fields) for _, fields in client.xrange(f"{prefix}order")]
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["published"] == 5
    assert [e.id for e in events] == list(stored)  # position order
    assert all(e.datacontenttype == JOSE_CONTENT_TYPE and e.data == stored[e.id] for e in events)
    assert [json.loads(world.opener("billing").open(e).data)["n"] for e in events] == [0, 1, 2, 3, 4]
    assert all(r.published_by == "relay-test" for r in rows(engine))
    engine.dispose()


def test_with_encrypt_at_relay_plaintext_rows_are_sealed_as_the_relay_seals_them(sqlite_url, tmp_path):
    world = make_world(tmp_path)
    configure(source="/shop", sealer=producer_crypto("relay", world.keys, world.policy_path).sealer)
    engine = migrated_engine(sqlite_url)
    with engine.begin() as conn:
        emit(conn, "shop.order.created", aggregate="order", key="7", data={"email": "x@example.com"})
        emit(conn, "shop.heartbeat", aggregate="heartbeat", data={"ok": True})
    with engine.begin() as conn:
        conn.execute(update(outbox).values(published_at=dt.datetime.now(dt.UTC)))
    env = {"STRANGLER_CRYPTO_ENCRYPT_AT": "relay", "STRANGLER_CRYPTO_KEYS_DIR": str(world.keys),
           "STRANGLER_CRYPTO_POLICY": str(world.policy_path)}

    result = run("--db", sqlite_url, "--router", f"file://{tmp_path}/ev", "--all", env=env)

    assert result.exit_code == 0, result.output
    [order] = file_events(tmp_path / "ev", "order")
    [heartbeat] = file_events(tmp_path / "ev", "heartbeat")
    assert order.datacontenttype == JOSE_CONTENT_TYPE and b"x@example.com" not in order.data
    assert json.loads(world.opener("billing").open(order).data) == {"email": "x@example.com"}
    assert json.loads(heartbeat.data) == {"ok": True}  # plaintext where the policy allows it, as the relay
    with engine.connect() as conn:  # the rows stay plain: sealing happens on the way out
        assert {r.content_type for r in conn.execute(select(outbox)).all()} == {"application/json"}
    engine.dispose()


def test_a_poison_row_fails_and_holds_back_only_its_key(sqlite_url, tmp_path):
    engine = migrated_engine(sqlite_url)
    published(engine, tmp_path / "first", keys=("a", "b"), per_key=4)  # a: 1,3,5,7  b: 2,4,6,8
    with engine.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.position == 3).values(source=""))

    result = run("--db", sqlite_url, "--router", f"file://{tmp_path}/again", "--all", "--batch", "3", "--json")

    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["published"], summary["failed"], summary["held_back"]) == (5, 1, 2)
    assert summary["errors"][0]["position"] == 3 and "cannot be read" in summary["errors"][0]["error"]
    assert first_seen_order(file_events(tmp_path / "again")) == {"a": [0], "b": [0, 1, 2, 3]}
    assert "1 events failed and 2 were held back" in result.stderr
    engine.dispose()


def test_a_broker_outage_stops_the_replay_with_where_to_go_on(sqlite_url, tmp_path):
    require_module("redis", "redis")
    engine = migrated_engine(sqlite_url)
    published(engine, tmp_path / "first", keys=("a",), per_key=3)

    result = run("--db", sqlite_url, "--router", "redis://127.0.0.1:1/0", "--position-from", "2", "--json")

    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["stopped"] and summary["resume_from"] == 2 and summary["published"] == 0
    assert "go on with --position-from 2" in result.stderr
    engine.dispose()


def test_limit_stops_early_and_position_from_goes_on(sqlite_url, tmp_path):
    engine = migrated_engine(sqlite_url)
    sent = published(engine, tmp_path / "first", keys=("a", "b"), per_key=5)
    folder = f"file://{tmp_path}/again"

    first = run("--db", sqlite_url, "--router", folder, "--all", "--limit", "4", "--batch", "3", "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert (summary["published"], summary["last_position"], summary["resume_from"]) == (4, 4, 5)

    rest = run("--db", sqlite_url, "--router", folder, "--position-from", "5")
    assert rest.exit_code == 0, rest.output
    assert "replayed 6 of 6 events" in rest.output and "more rows match" not in rest.output
    assert first_seen_order(file_events(tmp_path / "again")) == sent
    engine.dispose()


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "or --all"),
        (["--aggregate", ":42"], "TYPE or TYPE:ID"),
        (["--aggregate", "order:"], "TYPE or TYPE:ID"),
        (["--since", "yesterday"], "RFC 3339"),
        (["--position-from", "9", "--position-to", "3"], "after position to 3"),
        (["--since", "1h", "--until", "2h"], "must be before until"),
        (["--all", "--router", "kafkaa://broker:9092"], "kafkaa://broker:9092"),
    ],
)
def test_bad_usage_exits_2_and_says_why(sqlite_url, args, message):
    migrated_engine(sqlite_url).dispose()
    result = run("--db", sqlite_url, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_nothing_to_replay_is_not_a_problem(sqlite_url, tmp_path):
    migrated_engine(sqlite_url).dispose()
    result = run("--db", sqlite_url, "--router", f"file://{tmp_path}/ev", "--type", "shop.nothing")
    assert result.exit_code == 0 and "no published rows match" in result.output


def test_a_router_password_is_never_shown(sqlite_url, tmp_path):
    migrated_engine(sqlite_url).dispose()
    result = run("--db", sqlite_url, "--router", "amqp://guest:s3cret@127.0.0.1:1/%2F", "--all", "--dry-run",
                 "--json")
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output and json.loads(result.stdout)["router"].startswith("amqp://guest:***@")


def test_envelopes_are_what_the_relay_builds(sqlite_url, tmp_path):
    engine = migrated_engine(sqlite_url)
    published(engine, tmp_path / "first", keys=("a",), per_key=2)
    router = open_router(f"file://{tmp_path}/again")
    replay(engine, router, Selection(aggregates=(("order", "a"),)))
    router.close()
    assert file_events(tmp_path / "again") == [Envelope.from_row(r) for r in rows(engine)]
    engine.dispose()
