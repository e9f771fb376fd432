"""``strangler verify`` checks its database and router before any scenario, and leaves nothing behind.

A database or router no scenario could use is a usage error found once, not
seven scenarios "failed" with a false report of lost events; a scenario that
breaks, however it breaks, still drops what it created.
"""

from __future__ import annotations

import datetime as dt
import tempfile

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from outbox import inbox
from outbox.faults import scenarios
from outbox.faults.stage import Stage, StageError
from outbox.testing.databases import table_names
from toolkit.cli import cli


def verify(*args: str):
    return CliRunner().invoke(cli, ["verify", "--events", "30", "--seconds", "5", *args])


@pytest.fixture
def logs_in(tmp_path, monkeypatch):
    """The working folders a scenario keeps for its logs go under tmp_path, not the machine's /tmp."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def ran_a_scenario(result) -> bool:
    return any(line.startswith("running ") for line in result.output.splitlines())


@pytest.mark.parametrize("router, says", [
    ("foo://x", "no router for scheme 'foo'"),
    ("redis://:secret@127.0.0.1:1/0", "redis unreachable"),
])
def test_a_router_no_scenario_could_use_is_a_usage_error_before_any_scenario(sqlite_url, router, says):
    result = verify("--db", sqlite_url, "--router", router)
    assert result.exit_code == 2, result.output
    assert "--router" in result.output and says in result.output
    assert not ran_a_scenario(result) and "lost" not in result.output
    assert "secret" not in result.output
    assert table_names(sqlite_url) == set()


def test_a_database_that_cannot_be_reached_is_a_usage_error_naming_db(tmp_path):
    result = verify("--db", "postgresql+psycopg://app:secret@127.0.0.1:1/shop", "--router", f"file://{tmp_path}/ev")
    assert result.exit_code == 2, result.output
    assert "--db: cannot reach the database postgresql+psycopg://app:***@127.0.0.1:1/shop" in result.output
    assert not ran_a_scenario(result) and "secret" not in result.output


def test_a_scenario_whose_set_up_fails_drops_every_table_it_made_and_says_it_could_not_finish(
    sqlite_url, tmp_path, monkeypatch, logs_in
):
    def broker_refuses(stage):
        raise StageError("the broker refused the subscription (test)")

    monkeypatch.setattr(Stage, "prepare_broker", broker_refuses)
    result = verify("--db", sqlite_url, "--router", f"file://{tmp_path}/ev", "--scenario", "relay-kill")
    assert result.exit_code == 1
    assert "relay-kill: COULD NOT FINISH (the broker refused the subscription (test))" in result.output
    assert "1 scenario(s) could not finish" in result.output and "lost" not in result.output
    assert f"relay-kill: the processes' logs are in {logs_in}/strangler-verify-relay-kill-" in result.output
    assert table_names(sqlite_url) == set()  # the private outbox and the inbox tables verify made are gone


def test_a_scenario_that_raises_drops_its_tables_and_keeps_an_existing_inbox_but_its_own_rows(
    sqlite_url, tmp_path, monkeypatch, logs_in
):
    engine = sa.create_engine(sqlite_url)
    inbox.metadata.create_all(engine)
    theirs = dict(consumer="billing", event_id="e-1", type="t", source="/s", outcome="handled",
                  handled_at=dt.datetime.now(dt.UTC))
    with engine.begin() as conn:
        conn.execute(sa.insert(inbox.inbox_table).values(**theirs))
    seen = {}

    def breaks_midway(stage, budget, figures, rng):
        seen["tables"] = table_names(sqlite_url)
        with stage.engine.begin() as conn:
            conn.execute(sa.insert(inbox.inbox_table).values({**theirs, "consumer": stage.consumer_name}))
        raise KeyError("a bug in the scenario (test)")

    monkeypatch.setitem(scenarios.SCENARIOS, "relay-kill", breaks_midway)
    result = verify("--db", sqlite_url, "--router", f"file://{tmp_path}/ev", "--scenario", "relay-kill")
    assert result.exit_code == 1
    assert "relay-kill: COULD NOT FINISH (KeyError: 'a bug in the scenario (test)')" in result.output
    assert any(name.endswith("_outbox") for name in seen["tables"])
    assert table_names(sqlite_url) == {inbox.INBOX_TABLE, inbox.DEAD_LETTER_TABLE}
    with engine.connect() as conn:
        assert conn.execute(sa.select(inbox.inbox_table.c.consumer)).scalars().all() == ["billing"]
    engine.dispose()


def test_poison_rows_on_sqlite_and_a_relative_file_router_pass_and_leave_nothing(sqlite_url, tmp_path, monkeypatch):
    # The scenario's processes run in a folder of their own: ./events must still mean this one.
    monkeypatch.chdir(tmp_path)
    result = verify("--db", sqlite_url, "--router", "file://./events", "--scenario", "poison-rows")
    assert result.exit_code == 0, result.output
    assert "poison-rows [sqlite+file]" in result.output and " lost=0 " in result.output
    assert "dead_reasons=oversized|unreadable" in result.output
    assert table_names(sqlite_url) == set()
    assert not (tmp_path / "events").exists()
