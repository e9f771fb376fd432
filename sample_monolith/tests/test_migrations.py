"""The shop's Alembic history runs up and down on a fresh SQLite file and ends at the models."""

import argparse
import configparser
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from sample_monolith.shop.database import db

INI = Path(__file__).resolve().parents[1] / "alembic.ini"


def alembic_config(url):
    config = Config(str(INI))
    config.cmd_opts = argparse.Namespace(x=[f"db={url}"])
    config.attributes["configure_logger"] = False
    return config


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'migrated.db'}"


def tables(url):
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_history_is_linear_with_one_head():
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert script.get_heads() == ["0003"]
    assert [rev.revision for rev in script.walk_revisions()] == ["0003", "0002", "0001"]


def test_upgrade_reaches_the_models_and_downgrade_empties(url):
    command.upgrade(alembic_config(url), "heads")

    assert tables(url) == set(db.metadata.tables)
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "render_as_batch": True}
        )
        assert compare_metadata(context, db.metadata) == []
    engine.dispose()

    command.downgrade(alembic_config(url), "base")
    assert tables(url) == set()

    command.upgrade(alembic_config(url), "heads")
    assert tables(url) == set(db.metadata.tables)


def test_loyalty_migration_backfills_points_from_past_orders(url):
    command.upgrade(alembic_config(url), "0001")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO customers (id, email, name, marketing_opt_in, created_at) VALUES "
                "(1, 'a@example.com', 'A', 0, '2020-01-01'), "
                "(2, 'b@example.com', 'B', 0, '2020-01-01')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO orders (id, customer_id, email, ship_to_name, status, total_cents, "
                "created_at) VALUES (1, 1, 'a@example.com', 'A', 'paid', 2550, '2020-02-01'), "
                "(2, 1, 'a@example.com', 'A', 'cancelled', 9900, '2020-02-02'), "
                "(3, 2, 'b@example.com', 'B', 'placed', 99, '2020-02-03')"
            )
        )

    command.upgrade(alembic_config(url), "0002")

    with engine.connect() as connection:
        points = connection.execute(text("SELECT id, loyalty_points FROM customers ORDER BY id"))
        assert points.all() == [(1, 25), (2, 0)]
    command.downgrade(alembic_config(url), "0001")
    assert "loyalty_entries" not in tables(url)
    engine.dispose()


def test_database_url_from_the_environment(url, monkeypatch):
    monkeypatch.setenv("SHOP_DATABASE_URL", url)
    config = Config(str(INI))
    config.attributes["configure_logger"] = False

    command.upgrade(config, "heads")

    assert "orders" in tables(url)


def test_version_locations_start_with_the_shop_and_are_space_separated():
    parser = configparser.ConfigParser()
    parser.read(INI)
    assert parser.get("alembic", "path_separator") == "space"
    assert parser.get("alembic", "version_locations", raw=True).split() == [
        "%(here)s/shop/migrations/versions"
    ]


def test_outbox_branch_joins_the_history(url, tmp_path):
    """Appending strangler's version location is a one-word change to alembic.ini."""
    pytest.importorskip("outbox.migrations")
    ini = INI.read_text().replace(
        "version_locations = %(here)s/shop/migrations/versions",
        "version_locations = %(here)s/shop/migrations/versions outbox:migrations/versions",
    )
    assert ini != INI.read_text()
    copy = tmp_path / "alembic.ini"
    copy.write_text(ini.replace("%(here)s", str(INI.parent)))
    config = Config(str(copy))
    config.cmd_opts = argparse.Namespace(x=[f"db={url}"])
    config.attributes["configure_logger"] = False

    command.upgrade(config, "heads")

    assert len(ScriptDirectory.from_config(config).get_heads()) == 2
    assert {"orders", "strangler_outbox"} <= tables(url)
