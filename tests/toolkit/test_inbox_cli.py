"""strangler inbox: list a service's dead letters, retry them through its own handlers, discard, purge."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text

from outbox import inbox
from outbox.envelope import Envelope
from outbox.routers import open_router
from tests.outbox.crypto_helpers import plain_event
from toolkit.cli import cli
from toolkit.commands.inbox import load_consumer

SERVICE = '''
import os

from sqlalchemy import create_engine, text

from outbox.consumer import Consumer

consumer = Consumer("billing", create_engine(os.environ["BILLING_DB"]))


@consumer.handler("shop.order.created")
def invoice(event, session):
    if os.path.exists(os.environ["BILLING_BROKEN"]):
        raise RuntimeError("no tax rate for order " + str(event.data["id"]))
    session.execute(text("INSERT INTO invoices (order_id) VALUES (:o)"), {"o": str(event.data["id"])})


def make():
    return consumer


not_a_consumer = 42
'''




@pytest.fixture
def billing(tmp_path, sqlite_url, monkeypatch):
    """A billing service folder: its module, its database with the inbox tables, and a broken handler."""
    module = f"billing_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(SERVICE))
    inbox.upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE invoices (order_id VARCHAR(40))"))
    broken = tmp_path / "broken"
    broken.touch()
    monkeypatch.setenv("BILLING_DB", sqlite_url)
    monkeypatch.setenv("BILLING_BROKEN", str(broken))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the folder the command adds goes with the test
    yield type("Billing", (), {"module": module, "db": sqlite_url, "engine": engine, "broken": broken})
    engine.dispose()
    sys.modules.pop(module, None)


def dead_events(billing, tmp_path, n=2, *, dead=True) -> list[Envelope]:
    """Publish ``n`` orders and run the service once: its broken handler dead-letters them all (or, fixed, handles them)."""
    if not dead:
        billing.broken.unlink()
    events = [plain_event(i) for i in range(1, n + 1)]
    router = open_router(f"file://{tmp_path}/events")
    router.publish(events)
    router.close()
    consumer = load_consumer(f"{billing.module}:consumer")  # as the command imports it: from the current folder
    stats = consumer.run(f"file://{tmp_path}/events", destinations=["order"], until_idle=True, poll=0.1)
    assert (stats.dead if dead else stats.handled) == n
    return events


def invoices(billing) -> list[str]:
    with billing.engine.connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT order_id FROM invoices ORDER BY order_id"))]


def strangler(*args):
    return CliRunner().invoke(cli, list(args))


def test_dead_letters_are_listed_with_reason_and_error_and_exit_1(billing, tmp_path):
    events = dead_events(billing, tmp_path)

    result = strangler("inbox", "dead-letters", "--db", billing.db)

    assert result.exit_code == 1
    assert "2 dead letters" in result.output
    assert events[0].id in result.output and "handler" in result.output
    assert "RuntimeError: no tax rate for order 1" in result.output
    listed = json.loads(strangler("inbox", "dead-letters", "--db", billing.db, "--json").output)
    assert listed["total"] == 2 and [d["event_id"] for d in listed["dead_letters"]] == [e.id for e in events]
    assert strangler("inbox", "dead-letters", "--db", billing.db, "--consumer", "crm").exit_code == 0


def test_retry_hands_the_dead_events_to_the_fixed_handler_once(billing, tmp_path):
    events = dead_events(billing, tmp_path)
    still_broken = strangler("inbox", "retry", "--app", f"{billing.module}:consumer")
    assert still_broken.exit_code == 1 and "dead" in still_broken.output and invoices(billing) == []

    billing.broken.unlink()  # the handler is fixed
    result = strangler("inbox", "retry", "--app", f"{billing.module}:consumer", "--id", events[1].id)

    assert result.exit_code == 0, result.output
    assert f"handled    {events[1].id}" in result.output and "1 of 1 dead events of billing handled" in result.output
    assert invoices(billing) == ["2"]
    rest = json.loads(strangler("inbox", "retry", "--app", f"{billing.module}:make", "--json").output)
    assert [(r["event_id"], r["outcome"]) for r in rest["retried"]] == [(events[0].id, "handled")]
    assert invoices(billing) == ["1", "2"]
    assert strangler("inbox", "dead-letters", "--db", billing.db).exit_code == 0


def test_retry_of_an_id_with_no_dead_letter_says_so(billing, tmp_path):
    dead_events(billing, tmp_path, n=1)
    result = strangler("inbox", "retry", "--app", f"{billing.module}:consumer", "--id", "no-such-event")
    assert result.exit_code == 1 and "no dead letter of billing for: no-such-event" in result.output


@pytest.mark.parametrize("app, says", [
    ("billing", "write MODULE:NAME"),
    ("no_such_service:consumer", "cannot import 'no_such_service'"),
    ("{module}:nobody", "has no 'nobody'"),
    ("{module}:not_a_consumer", "is a int, not an outbox.consumer.Consumer"),
])
def test_an_app_that_is_not_a_consumer_is_a_usage_error(billing, app, says):
    result = strangler("inbox", "retry", "--app", app.format(module=billing.module))
    assert result.exit_code == 2 and says in result.output


def test_discard_deletes_dead_letters_and_their_events_stay_dead_in_the_inbox(billing, tmp_path):
    events = dead_events(billing, tmp_path)
    assert strangler("inbox", "discard", "--db", billing.db, "--consumer", "billing").exit_code == 2

    result = strangler("inbox", "discard", "--db", billing.db, "--consumer", "billing", "--id", events[0].id)

    assert result.exit_code == 0 and "discarded 1 dead letters of billing" in result.output
    with billing.engine.connect() as conn:
        outcomes = dict(conn.execute(select(inbox.inbox_table.c.event_id, inbox.inbox_table.c.outcome)).all())
        left = conn.execute(select(inbox.dead_letter_table.c.event_id)).scalars().all()
    assert outcomes == {events[0].id: "dead", events[1].id: "dead"}  # a redelivery is still a duplicate
    assert left == [events[1].id]
    assert strangler("inbox", "discard", "--db", billing.db, "--consumer", "billing", "--all").exit_code == 0
    assert strangler("inbox", "dead-letters", "--db", billing.db).exit_code == 0


def test_purge_deletes_inbox_rows_older_than_the_cutoff_in_batches(billing, tmp_path):
    dead_events(billing, tmp_path, n=3, dead=False)
    kept = strangler("inbox", "purge", "--db", billing.db, "--handled-before", "30d", "--json")
    assert json.loads(kept.output)["purged"] == 0

    result = strangler("inbox", "purge", "--db", billing.db, "--handled-before", "2999-01-01T00:00:00Z",
                       "--batch-size", "2")

    assert result.exit_code == 0 and "purged 3 inbox rows" in result.output
    with billing.engine.connect() as conn:
        assert conn.execute(select(inbox.inbox_table)).all() == []
    bad = strangler("inbox", "purge", "--db", billing.db, "--handled-before", "last week")
    assert bad.exit_code == 2 and "--handled-before" in bad.output


def test_migrate_creates_the_inbox_tables_and_a_database_without_them_is_told_so(tmp_path):
    url = f"sqlite:///{tmp_path}/service.db"
    missing = strangler("inbox", "dead-letters", "--db", url)
    assert missing.exit_code == 2 and "service.db does not exist" in missing.output
    (tmp_path / "service.db").touch()  # an empty SQLite database
    missing = strangler("inbox", "dead-letters", "--db", url)
    assert missing.exit_code == 1 and f"strangler inbox migrate --db {url}" in missing.output

    assert strangler("inbox", "migrate", "--db", url).exit_code == 0

    assert strangler("inbox", "dead-letters", "--db", url).exit_code == 0
    assert strangler("inbox", "migrate", "--db", url, "--to", "base").exit_code == 0
    assert strangler("inbox", "dead-letters", "--db", url).exit_code == 1


def test_a_module_that_starts_consuming_when_imported_is_refused_before_it_consumes(billing, tmp_path):
    dead_events(billing, tmp_path, n=1)
    live = open_router(f"file://{tmp_path}/events")
    live.publish([plain_event(7)])  # a live event the import must not take
    live.close()
    module = billing.module + "_runs"
    (tmp_path / f"{module}.py").write_text(
        f"from {billing.module} import consumer\n"
        f"consumer.run('file://{tmp_path}/events', destinations=['order'], until_idle=True, poll=0.1)\n"
    )
    try:
        result = strangler("inbox", "retry", "--app", f"{module}:consumer")
    finally:
        sys.modules.pop(module, None)
    assert result.exit_code == 2 and "starts consuming" in result.output and "__main__" in result.output
    assert invoices(billing) == []  # neither the live event nor the retry ran


@pytest.mark.parametrize("app, says", [
    ("{module}:Consumer", "is a class"),
    ("{module}:broken_factory", "broken_factory() failed: RuntimeError: no database configured"),
])
def test_a_class_or_a_failing_factory_is_a_usage_error(billing, app, says):
    (billing_path := __import__("pathlib").Path.cwd() / f"{billing.module}.py").write_text(
        billing_path.read_text() + "\n\ndef broken_factory():\n    raise RuntimeError('no database configured')\n"
    )
    result = strangler("inbox", "retry", "--app", app.format(module=billing.module))
    assert result.exit_code == 2 and says in result.output


def test_retry_on_a_database_without_the_inbox_tables_says_what_to_run(billing, tmp_path):
    with billing.engine.begin() as conn:
        conn.execute(text("DROP TABLE strangler_dead_letters"))
    result = strangler("inbox", "retry", "--app", f"{billing.module}:consumer")
    assert result.exit_code == 1 and "strangler inbox migrate" in result.output


def test_purge_keeps_the_rows_of_dead_events_so_their_redelivery_stays_a_duplicate(billing, tmp_path):
    events = dead_events(billing, tmp_path, n=2)
    billing.broken.unlink()
    strangler("inbox", "retry", "--app", f"{billing.module}:consumer", "--id", events[0].id)
    strangler("inbox", "discard", "--db", billing.db, "--consumer", "billing", "--all")

    result = strangler("inbox", "purge", "--db", billing.db, "--handled-before", "2999-01-01T00:00:00Z", "--json")

    assert json.loads(result.output)["purged"] == 1
    with billing.engine.connect() as conn:
        left = dict(conn.execute(select(inbox.inbox_table.c.event_id, inbox.inbox_table.c.outcome)).all())
    assert left == {events[1].id: "dead"}
