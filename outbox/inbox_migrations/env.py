"""Alembic environment for running the inbox branch on its own (``outbox.inbox.upgrade``)."""

from alembic import context
from sqlalchemy import create_engine, pool

from outbox.inbox import metadata
from outbox.inbox_migrations import STANDALONE_VERSION_TABLE

config = context.config
version_table = config.get_main_option("version_table") or STANDALONE_VERSION_TABLE


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        version_table=version_table,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, version_table=version_table)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
