"""Alembic environment of the shop: the app's models are the target metadata.

The database URL comes from ``-x db=URL``, else ``SHOP_DATABASE_URL``, else
``sqlalchemy.url`` in alembic.ini, else the app's default SQLite file.
"""

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

from sample_monolith.shop import models  # noqa: F401  (registers every table on the metadata)
from sample_monolith.shop.database import db

try:  # strangler's tables live in this database too; keep autogenerate away from them
    from outbox.migrations import include_object
except ImportError:  # pragma: no cover - strangler not installed
    include_object = None

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = db.metadata


def database_url():
    url = (
        context.get_x_argument(as_dictionary=True).get("db")
        or os.environ.get("SHOP_DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
    )
    if url:
        return url
    from sample_monolith.shop import create_app

    return create_app().config["SQLALCHEMY_DATABASE_URI"]


def _configure(**kwargs):
    context.configure(
        target_metadata=target_metadata,
        include_object=include_object,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline():
    _configure(url=database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
