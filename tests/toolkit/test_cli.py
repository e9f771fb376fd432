"""The strangler command: every verb has help with an example; status reports the outbox."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from outbox import emit
from outbox import migrate as outbox_migrate
from toolkit.cli import cli


def all_commands(group=cli, prefix=()):
    for name, command in group.commands.items():
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from all_commands(command, prefix + (name,))


def test_top_level_help_lists_the_groups_with_a_purpose():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "outbox" in result.output
    for name, command in cli.commands.items():
        assert command.get_short_help_str().strip(), f"{name} has no one-line purpose"


@pytest.mark.parametrize("path", [p for p, c in all_commands()], ids=" ".join)
def test_every_command_and_group_has_help_with_an_example(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output, f"strangler {' '.join(path)} --help shows no example"


def test_unknown_command_is_a_usage_error():
    assert CliRunner().invoke(cli, ["frobnicate"]).exit_code == 2


def test_a_bad_config_file_is_a_usage_error_naming_it(tmp_path):
    bad = tmp_path / "strangler.toml"
    bad.write_text("[relay]\nbatch = 'x'\n")
    result = CliRunner().invoke(cli, ["--config", str(bad), "outbox", "status"])
    assert result.exit_code == 2
    assert str(bad) in result.output and "relay.batch" in result.output


def test_status_counts_pending_published_and_dead(sqlite_url):
    outbox_migrate.upgrade(outbox_migrate.standalone_config(sqlite_url))
    engine = create_engine(sqlite_url)
    with Session(engine) as session:
        for n in range(3):
            emit(session, "shop.order.created", aggregate="order", key=n)
        session.commit()
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE strangler_outbox SET published_at = '2026-01-01 00:00:00.000000' WHERE aggregateid = '0'"
        )
    engine.dispose()
    result = CliRunner().invoke(cli, ["outbox", "status", "--db", sqlite_url, "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert (status["pending"], status["published"], status["dead"]) == (2, 1, 0)
    assert status["oldest_pending_age_seconds"] >= 0

    text = CliRunner().invoke(cli, ["outbox", "status", "--db", sqlite_url])
    assert "pending    2" in text.output


def test_status_with_dead_rows_exits_1_and_lists_them(sqlite_url):
    outbox_migrate.upgrade(outbox_migrate.standalone_config(sqlite_url))
    engine = create_engine(sqlite_url)
    with Session(engine) as session:
        emit(session, "shop.order.created", aggregate="order", key=7)
        session.commit()
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE strangler_outbox SET dead_at = '2026-01-01 00:00:00.000000', attempts = 10, "
            "last_error = 'broker rejected: too large'"
        )
    engine.dispose()
    result = CliRunner().invoke(cli, ["outbox", "status", "--db", sqlite_url])
    assert result.exit_code == 1
    assert "too large" in result.output and "order/7" in result.output


def test_status_lists_pending_rows_that_failed_with_their_error_and_next_attempt(sqlite_url):
    """Before it is dead, a failing row holds its aggregate back for up to an hour: status shows why."""
    outbox_migrate.upgrade(outbox_migrate.standalone_config(sqlite_url))
    engine = create_engine(sqlite_url)
    with Session(engine) as session:
        for n in (1, 2):
            emit(session, "shop.customer.registered", aggregate="customer", key=n)
        session.commit()
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE strangler_outbox SET attempts = 3, available_at = '2026-01-01 00:05:00.000000', "
            "last_error = 'SealError: no active key for crm' WHERE aggregateid = '2'"
        )
    engine.dispose()

    text = CliRunner().invoke(cli, ["outbox", "status", "--db", sqlite_url])
    as_json = json.loads(CliRunner().invoke(cli, ["outbox", "status", "--db", sqlite_url, "--json"]).output)

    assert text.exit_code == 0, text.output  # not dead (yet)
    assert "of which 1 failing" in text.output
    assert "failing #2 shop.customer.registered customer/2 after 3 attempt(s), next at 2026-01-01" in text.output
    assert "no active key for crm" in text.output
    assert as_json["retrying"] == 1 and as_json["retrying_rows"][0]["aggregateid"] == "2"
    assert as_json["retrying_rows"][0]["next_attempt_at"].startswith("2026-01-01T00:05:00")


def test_status_on_a_database_without_the_outbox_says_what_to_run(empty_sqlite_url):
    result = CliRunner().invoke(cli, ["outbox", "status", "--db", empty_sqlite_url])
    assert result.exit_code == 1
    assert "strangler outbox migrate" in result.output


OUTBOX_COMMANDS = [["outbox", "status"], ["outbox", "retry"], ["outbox", "purge", "--published-before", "7d"]]


@pytest.mark.parametrize("command", OUTBOX_COMMANDS, ids=lambda c: c[1])
def test_an_outbox_command_on_a_database_without_the_outbox_names_the_migrate_to_run(command, empty_sqlite_url):
    result = CliRunner().invoke(cli, [*command, "--db", empty_sqlite_url])
    assert result.exit_code == 1
    assert f"has no table strangler_outbox: run 'strangler outbox migrate --db {empty_sqlite_url}'" in result.output
    assert "[SQL:" not in result.output


@pytest.mark.parametrize("command", [*OUTBOX_COMMANDS, ["outbox", "migrate"]], ids=lambda c: c[1])
def test_an_unreachable_database_is_named_with_the_password_hidden_and_no_migrate_advice(command):
    result = CliRunner().invoke(cli, [*command, "--db", "postgresql+psycopg://app:secret@127.0.0.1:1/shop"])
    assert result.exit_code == 1
    assert "cannot reach the database postgresql+psycopg://app:***@127.0.0.1:1/shop" in result.output
    assert "Connection refused" in result.output
    assert "secret" not in result.output and "Has 'strangler outbox migrate' run" not in result.output


def test_an_sqlite_database_in_a_missing_folder_cannot_be_opened_and_says_so(tmp_path):
    url = f"sqlite:///{tmp_path}/no-such-folder/shop.db"
    result = CliRunner().invoke(cli, ["outbox", "migrate", "--db", url])
    assert result.exit_code == 1
    assert f"cannot open the database {url}: unable to open database file" in result.output
    assert "does its folder exist" in result.output


def test_a_bare_mysql_url_is_told_which_url_the_extra_serves():
    import importlib.util

    if importlib.util.find_spec("MySQLdb") is not None:
        pytest.skip("mysqlclient is installed: mysql:// has its driver")
    result = CliRunner().invoke(cli, ["outbox", "status", "--db", "mysql://root@127.0.0.1:1/test"])
    assert result.exit_code == 2 and "write mysql+pymysql://" in result.output


def test_status_refuses_a_negative_dead_count(sqlite_url):
    result = CliRunner().invoke(cli, ["outbox", "status", "--db", sqlite_url, "--dead", "-1"])
    assert result.exit_code == 2 and "--dead" in result.output


def test_a_value_out_of_range_given_as_a_flag_names_the_flag(tmp_path):
    result = CliRunner().invoke(cli, ["relay", "--db", f"sqlite:///{tmp_path}/x.db", "--batch", "0", "--once"])

    assert result.exit_code == 2
    assert "relay.batch = 0: expected an integer from 1 to 100000 (option --batch)" in result.output
