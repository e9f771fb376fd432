"""The outbox ships as an Alembic branch: standalone, or inside a monolith's own history."""

from __future__ import annotations

import textwrap
import threading
import time

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, inspect

from outbox import migrate
from outbox.migrations import include_object
from outbox.testing.databases import table_names
from outbox.table import PARTITIONS, get_lease_table, metadata as outbox_metadata
from toolkit.cli import cli


def index_names(url, table="strangler_outbox"):
    engine = create_engine(url)
    try:
        return {ix["name"] for ix in inspect(engine).get_indexes(table)}
    finally:
        engine.dispose()


def test_standalone_upgrade_creates_the_tables_and_downgrade_removes_them(database_url):
    cfg = migrate.standalone_config(database_url)
    migrate.upgrade(cfg)
    assert {"strangler_outbox", "strangler_outbox_leases", "strangler_alembic_version"} <= table_names(database_url)
    assert migrate.current_revision(database_url) == migrate.head_revision()

    engine = create_engine(database_url)
    with engine.connect() as conn:
        insp = inspect(conn)
        indexes = {ix["name"] for ix in insp.get_indexes("strangler_outbox")}
        assert {"ix_strangler_outbox_claim", "ix_strangler_outbox_aggregate"} <= indexes
        assert "ix_strangler_outbox_pending" not in indexes  # redundant with the claim index: 0005
        leases = conn.execute(get_lease_table().select()).all()
        assert sorted(r.lease_partition for r in leases) == list(range(PARTITIONS))
        # the migration and the metadata agree: autogenerate proposes nothing
        ctx = MigrationContext.configure(conn, opts={"version_table": "strangler_alembic_version"})
        assert compare_metadata(ctx, outbox_metadata) == []
    engine.dispose()

    migrate.downgrade(cfg, "base")
    assert not {"strangler_outbox", "strangler_outbox_leases"} & table_names(database_url)
    assert migrate.current_revision(database_url) is None


def test_strangler_0005_drops_the_pending_index_without_stopping_emits(postgresql_url):
    """The drop waits for an open emitting transaction, and emits that start meanwhile still commit.

    A plain ``DROP INDEX`` queues for an ACCESS EXCLUSIVE lock behind the open
    transaction, and every later INSERT into the outbox queues behind it: the
    second writer below would time out.
    """
    import psycopg

    cfg = migrate.standalone_config(postgresql_url)
    migrate.upgrade(cfg, "strangler_0004")
    plain_url = postgresql_url.replace("postgresql+psycopg://", "postgresql://")
    insert = (
        "INSERT INTO strangler_outbox (id, aggregatetype, aggregateid, type, payload, \"timestamp\", source, "
        "content_type, lease_partition) VALUES (%s, 'order', 'k', 't', '{}', now(), '/s', 'application/json', 3)"
    )
    with psycopg.connect(plain_url) as open_writer, psycopg.connect(plain_url) as later_writer, \
            psycopg.connect(plain_url, autocommit=True) as observer:
        open_writer.execute(insert, ("emitted-before",))  # its transaction stays open
        upgrading = threading.Thread(target=migrate.upgrade, args=(cfg,))
        upgrading.start()
        deadline = time.monotonic() + 10
        while not observer.execute(
            "SELECT 1 FROM pg_stat_activity WHERE query ILIKE '%DROP INDEX%' AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        ).fetchone():
            assert time.monotonic() < deadline, "the upgrade never reached the index drop"
            time.sleep(0.02)
        later_writer.execute("SET lock_timeout = '3s'")
        later_writer.execute(insert, ("emitted-during",))
        later_writer.commit()
        assert upgrading.is_alive()  # still waiting for the open transaction
        open_writer.commit()
        upgrading.join(timeout=10)
    assert not upgrading.is_alive()
    assert migrate.current_revision(postgresql_url) == migrate.head_revision() == "strangler_0005"
    assert "ix_strangler_outbox_pending" not in index_names(postgresql_url)
    engine = create_engine(postgresql_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM strangler_outbox").scalar() == 2
    finally:
        engine.dispose()
    migrate.downgrade(cfg, "strangler_0004")  # and back: the index returns
    assert "ix_strangler_outbox_pending" in index_names(postgresql_url)


def test_strangler_0005_on_mariadb_waits_a_bounded_time_behind_an_open_transaction(mariadb_url):
    """MariaDB has no concurrent index drop: writes queue behind its metadata-lock wait.

    So the wait is bounded (5 s, not the server's default of a year): the upgrade
    fails with a lock wait timeout, changes nothing, and goes through once the
    transaction has ended.
    """
    from sqlalchemy.exc import OperationalError

    cfg = migrate.standalone_config(mariadb_url)
    migrate.upgrade(cfg, "strangler_0004")
    engine = create_engine(mariadb_url)
    try:
        with engine.connect() as open_writer:
            open_writer.begin()
            open_writer.exec_driver_sql(
                "INSERT INTO strangler_outbox (id, aggregatetype, aggregateid, type, payload, `timestamp`, source, "
                "content_type, lease_partition) VALUES ('open', 'order', 'k', 't', '{}', now(), '/s', "
                "'application/json', 3)"
            )
            failures: list[Exception] = []

            def upgrade():
                try:
                    migrate.upgrade(cfg)
                except Exception as exc:
                    failures.append(exc)

            upgrading = threading.Thread(target=upgrade, daemon=True)  # an unbounded wait never returns
            upgrading.start()
            upgrading.join(timeout=30)
            assert not upgrading.is_alive(), "the drop still waits for its lock after 30 s"
            [failure] = failures
            assert isinstance(failure, OperationalError) and "lock wait timeout" in str(failure).lower()
            assert migrate.current_revision(mariadb_url) == "strangler_0004"
            assert "ix_strangler_outbox_pending" in index_names(mariadb_url)
            open_writer.commit()
        migrate.upgrade(cfg)
        assert migrate.current_revision(mariadb_url) == "strangler_0005"
        assert "ix_strangler_outbox_pending" not in index_names(mariadb_url)
    finally:
        engine.dispose()


def test_the_outbox_migrates_on_a_connection_whose_transaction_the_caller_began(database_url):
    """Alembic's cookbook pattern: a shared connection in ``config.attributes``, inside ``engine.begin()``.

    Alembic cannot commit a transaction it did not begin, so the PostgreSQL drop
    of strangler_0005 cannot be concurrent there: it drops in that transaction.
    """
    engine = create_engine(database_url)
    try:
        cfg = migrate.standalone_config(database_url)
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET lock_timeout = '7s'")
            cfg.attributes["connection"] = conn
            migrate.upgrade(cfg)
            if conn.dialect.name == "postgresql":  # the bounded wait was for the drop alone
                assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "7s"
        assert migrate.current_revision(database_url) == migrate.head_revision()
        assert "ix_strangler_outbox_pending" not in index_names(database_url)
    finally:
        engine.dispose()


def test_a_configured_table_name_is_used_by_the_migration(sqlite_url):
    migrate.upgrade(migrate.standalone_config(sqlite_url, table_name="shop_events"))
    assert {"shop_events", "shop_events_leases"} <= table_names(sqlite_url)


def _monolith_project(tmp_path, db_url, *, with_outbox_location=True):
    """Write a small Alembic project of a monolith: one table, one revision of its own."""
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    locations = "%(here)s/migrations/versions" + (" outbox:migrations/versions" if with_outbox_location else "")
    (tmp_path / "alembic.ini").write_text(
        textwrap.dedent(
            f"""\
            [alembic]
            script_location = %(here)s/migrations
            version_locations = {locations}
            path_separator = space
            sqlalchemy.url = {db_url.replace('%', '%%')}
            """
        )
    )
    (tmp_path / "app_models.py").write_text(
        textwrap.dedent(
            """\
            from sqlalchemy import Column, Integer, MetaData, String, Table
            metadata = MetaData()
            widgets = Table("widgets", metadata, Column("id", Integer, primary_key=True), Column("name", String(50)))
            """
        )
    )
    (tmp_path / "migrations" / "env.py").write_text(
        textwrap.dedent(
            """\
            import sys, os
            sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
            from alembic import context
            from sqlalchemy import create_engine, pool
            from app_models import metadata
            import outbox.migrations

            config = context.config
            engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
            with engine.connect() as connection:
                context.configure(
                    connection=connection,
                    target_metadata=metadata,
                    include_object=outbox.migrations.include_object,
                )
                with context.begin_transaction():
                    context.run_migrations()
            engine.dispose()
            """
        )
    )
    (versions / "app_0001_widgets.py").write_text(
        textwrap.dedent(
            """\
            import sqlalchemy as sa
            from alembic import op

            revision = "app_0001"
            down_revision = None
            branch_labels = None
            depends_on = None

            def upgrade():
                op.create_table("widgets", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(50)))

            def downgrade():
                op.drop_table("widgets")
            """
        )
    )
    return tmp_path / "alembic.ini"


def test_a_monolith_gets_the_outbox_from_its_own_upgrade_heads(database_url, tmp_path):
    ini = _monolith_project(tmp_path, database_url)
    cfg = AlembicConfig(str(ini))
    command.upgrade(cfg, "heads")
    assert {"widgets", "strangler_outbox", "strangler_outbox_leases", "alembic_version"} <= table_names(database_url)

    # its autogenerate, with include_object, does not propose to drop the outbox
    app_metadata = MetaData()
    Table("widgets", app_metadata, Column("id", Integer, primary_key=True), Column("name", String(50)))
    engine = create_engine(database_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_object": include_object})
        assert compare_metadata(ctx, app_metadata) == []
        unfiltered = compare_metadata(MigrationContext.configure(conn), app_metadata)
        assert any(op[0] == "remove_table" for op in unfiltered)  # what the hook prevents
    engine.dispose()

    command.downgrade(cfg, "strangler_outbox@base")
    remaining = table_names(database_url)
    assert "widgets" in remaining and "strangler_outbox" not in remaining


def test_cli_migrates_into_the_monolith_history(sqlite_url, tmp_path):
    ini = _monolith_project(tmp_path, sqlite_url)
    result = CliRunner().invoke(cli, ["outbox", "migrate", "--alembic-ini", str(ini), "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    names = table_names(sqlite_url)
    assert "strangler_outbox" in names and "widgets" not in names  # only the outbox branch ran
    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        heads = {r[0] for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")}
    engine.dispose()
    assert heads == {migrate.head_revision()}


def test_cli_migrates_the_configured_outbox_table_into_the_monolith_history(sqlite_url, tmp_path, monkeypatch):
    ini = _monolith_project(tmp_path, sqlite_url)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "strangler.toml").write_text('outbox_table = "shop_events"\n')
    result = CliRunner().invoke(cli, ["outbox", "migrate", "--alembic-ini", str(ini), "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    assert {"shop_events", "shop_events_leases"} <= table_names(sqlite_url)
    assert "strangler_outbox" not in table_names(sqlite_url)


def test_cli_refuses_an_outbox_table_named_in_alembic_ini_that_strangler_does_not_read(sqlite_url, tmp_path,
                                                                                       monkeypatch):
    """emit writes the table strangler's configuration names: tables made under another would fail every emit."""
    ini = _monolith_project(tmp_path, sqlite_url)
    ini.write_text(ini.read_text() + "strangler.outbox_table = app_events\n")
    monkeypatch.chdir(tmp_path)

    refused = CliRunner().invoke(cli, ["outbox", "migrate", "--alembic-ini", str(ini), "--db", sqlite_url])

    assert refused.exit_code == 2 and "set outbox_table = 'app_events' in strangler.toml" in refused.output
    assert "strangler_outbox" not in table_names(sqlite_url)
    (tmp_path / "strangler.toml").write_text('outbox_table = "app_events"\n')
    agreed = CliRunner().invoke(cli, ["outbox", "migrate", "--alembic-ini", str(ini), "--db", sqlite_url])
    assert agreed.exit_code == 0, agreed.output
    assert "app_events" in table_names(sqlite_url)


def test_cli_to_an_older_revision_goes_down_to_it(sqlite_url):
    runner = CliRunner()
    assert runner.invoke(cli, ["outbox", "migrate", "--db", sqlite_url]).exit_code == 0

    down = runner.invoke(cli, ["outbox", "migrate", "--db", sqlite_url, "--to", "strangler_0003"])

    assert down.exit_code == 0, down.output
    assert migrate.current_revision(sqlite_url) == "strangler_0003"
    assert runner.invoke(cli, ["outbox", "migrate", "--db", sqlite_url]).exit_code == 0
    assert migrate.current_revision(sqlite_url) == migrate.head_revision()


def test_tables_made_on_their_own_then_migrated_in_the_monolith_history_say_how_to_adopt_them(database_url,
                                                                                                tmp_path):
    ini = _monolith_project(tmp_path, database_url)
    assert CliRunner().invoke(cli, ["outbox", "migrate", "--db", database_url]).exit_code == 0

    clash = CliRunner().invoke(cli, ["outbox", "migrate", "--alembic-ini", str(ini), "--db", database_url])

    assert clash.exit_code == 1 and "Traceback" not in clash.output
    assert "already exists" in clash.output and f"alembic -c {ini} stamp" in clash.output


def test_include_object_hides_the_configured_outbox_tables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "strangler.toml").write_text('outbox_table = "shop_events"\n')
    for name in ("shop_events", "shop_events_leases", "shop_events_relays", "strangler_alembic_version"):
        assert include_object(None, name, "table", True, None) is False, name
    assert include_object(None, "shop_orders", "table", True, None) is True


def test_cli_explains_a_missing_version_location(sqlite_url, tmp_path):
    ini = _monolith_project(tmp_path, sqlite_url, with_outbox_location=False)
    result = CliRunner().invoke(cli, ["outbox", "migrate", "--alembic-ini", str(ini)])
    assert result.exit_code == 2
    assert "outbox:migrations/versions" in result.output
    assert str(ini) in result.output


def test_cli_standalone_up_and_down(sqlite_url):
    runner = CliRunner()
    assert runner.invoke(cli, ["outbox", "migrate", "--db", sqlite_url]).exit_code == 0
    assert "strangler_outbox" in table_names(sqlite_url)
    sql = runner.invoke(cli, ["outbox", "migrate", "--db", sqlite_url, "--sql"])
    assert sql.exit_code == 0 and "CREATE TABLE strangler_outbox" in sql.output
    assert runner.invoke(cli, ["outbox", "migrate", "--db", sqlite_url, "--to", "base"]).exit_code == 0
    assert "strangler_outbox" not in table_names(sqlite_url)


@pytest.mark.parametrize(
    "url, message",
    [
        ("not a url", "not a usable SQLAlchemy URL"),
        ("postgresql+nosuchdriver://x/y", "not a usable SQLAlchemy URL"),
    ],
)
def test_cli_rejects_a_bad_database_url(url, message):
    result = CliRunner().invoke(cli, ["outbox", "migrate", "--db", url])
    assert result.exit_code == 2
    assert message in result.output
