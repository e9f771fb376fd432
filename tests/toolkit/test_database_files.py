"""Commands given a SQLite database: a file that does not exist is a mistyped path, except for migrate."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from toolkit.cli import cli


@pytest.mark.parametrize("command", [
    ["outbox", "status"], ["outbox", "retry"], ["inbox", "dead-letters"], ["relay", "--once"],
])
def test_a_sqlite_file_that_does_not_exist_is_named_and_not_made(tmp_path, monkeypatch, command):
    """A mistyped path: before, SQLite made an empty file and the message said to migrate it."""
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(cli, [*command, "--db", "sqlite:///shpo.db"])

    assert result.exit_code == 2, result.output
    assert "the database file shpo.db does not exist" in result.output and "check the path" in result.output
    assert not (tmp_path / "shpo.db").exists()


def test_migrate_makes_a_new_sqlite_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    assert CliRunner().invoke(cli, ["outbox", "migrate", "--db", "sqlite:///new.db"]).exit_code == 0
    assert CliRunner().invoke(cli, ["outbox", "status", "--db", "sqlite:///new.db"]).exit_code == 0
