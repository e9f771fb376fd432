"""``strangler verify`` with relative paths, the form the docs use: they name what they name in the current folder.

The scenarios' processes run in working folders of their own; a relative
SQLite file or file:// folder handed to them as given would be another (new,
empty) database and another folder there.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile

import pytest
from click.testing import CliRunner

from outbox.faults.stage import pinned_db_url, pinned_router_url
from outbox.sqlite_paths import is_memory_sqlite, sqlite_file
from toolkit.cli import cli

QUICK = ["--scenario", "relay-kill", "--events", "30", "--kills", "1", "--seconds", "5"]


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """The user's current folder, and the temporary folder verify's working folders go to (elsewhere)."""
    cwd, scratch = tmp_path / "project", tmp_path / "scratch"
    cwd.mkdir()
    scratch.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return cwd, scratch


def tables(path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return sorted(name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


def test_relative_sqlite_url_and_file_router_name_the_current_folder(folders):
    cwd, scratch = folders
    with sqlite3.connect(cwd / "v.db") as conn:
        conn.execute("CREATE TABLE mine (x INTEGER)")
    result = CliRunner().invoke(cli, ["verify", "--db", "sqlite:///v.db", "--router", "file://./vev", *QUICK])
    assert result.exit_code == 0, result.output
    assert "relay-kill [sqlite+file]" in result.stdout and result.stdout.rstrip().endswith("OK")
    assert tables(cwd / "v.db") == ["mine"]  # the user's database was used, and the private tables are gone again
    assert sorted(p.name for p in cwd.iterdir()) == ["v.db"]  # the folder verify made for the router is gone
    assert list(scratch.iterdir()) == []  # no stray database in a working folder either


def test_a_missing_sqlite_file_is_made_for_the_run_and_removed_and_no_config_above_reaches_the_processes(folders):
    cwd, scratch = folders
    # A configuration file the scenarios' processes would find above their working folders (a project's, when
    # TMPDIR lies inside it): it must not reach them. The parent, in cwd, does not see it.
    (scratch / "strangler.toml").write_text("[relay]\nbogus = 1\n")
    result = CliRunner().invoke(cli, ["verify", "--db", "sqlite:///new.db", "--router", "file://events", *QUICK])
    assert result.exit_code == 0, result.output
    assert f"--db: {cwd / 'new.db'} does not exist: the scenarios run in a new SQLite database there" in result.stderr
    assert list(cwd.iterdir()) == []
    assert [p.name for p in scratch.iterdir()] == ["strangler.toml"]


def test_an_in_memory_sqlite_database_is_a_usage_error(folders):
    result = CliRunner().invoke(cli, ["verify", "--db", "sqlite://", "--router", "file://./vev"])
    assert result.exit_code == 2
    assert "sqlite:// is an in-memory database, which the scenarios' processes cannot open" in result.output


def test_a_file_router_naming_no_folder_is_a_usage_error(folders):
    result = CliRunner().invoke(cli, ["verify", "--db", "sqlite:///v.db", "--router", "file://"])
    assert result.exit_code == 2
    assert "--router: 'file://' names no folder" in result.output
    assert list(folders[0].iterdir()) == []


def test_pinned_urls_are_absolute_and_others_are_left_as_they_are(folders):
    cwd, _ = folders
    assert pinned_db_url("sqlite:///v.db") == f"sqlite:///{cwd}/v.db"
    assert pinned_db_url("sqlite+pysqlite:///sub/v.db?timeout=3") == f"sqlite+pysqlite:///{cwd}/sub/v.db?timeout=3"
    assert sqlite_file("sqlite:///file:v.db?mode=ro&uri=true") == cwd / "v.db"
    assert sqlite_file(pinned_db_url("sqlite:///file:v.db?mode=ro&uri=true")) == cwd / "v.db"
    for unchanged in ("sqlite:////srv/v.db", "sqlite://", "sqlite:///:memory:",
                      "postgresql+psycopg://app:s%40cret@db/shop", "nonsense"):
        assert pinned_db_url(unchanged) == unchanged
    assert is_memory_sqlite("sqlite://") and is_memory_sqlite("sqlite:///file:x?mode=memory&uri=true")
    assert not is_memory_sqlite("sqlite:///v.db") and not is_memory_sqlite("postgresql+psycopg://db/shop")
    assert "sslrootcert=" + os.fspath(cwd / "ca.pem").replace("/", "%2F") in pinned_db_url(
        "postgresql+psycopg://app:s%40cret@db/shop?sslrootcert=ca.pem")
    assert pinned_router_url("file://./vev?max_bytes=100") == f"file://{cwd}/vev?max_bytes=100"
    assert pinned_router_url("file:///srv/events") == "file:///srv/events"
    assert pinned_router_url("rediss://:pw@h:6379/0?ca_file=certs/ca.pem") == \
        f"rediss://:pw@h:6379/0?ca_file={os.fspath(cwd / 'certs/ca.pem').replace('/', '%2F')}"
    assert pinned_router_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
