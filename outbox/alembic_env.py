"""The Alembic environment both of strangler's own branches run with when used on their own.

``outbox/migrations/env.py`` (the outbox, in the monolith's database) and
``outbox/inbox_migrations/env.py`` (the inbox, in a service's database) differ
only in their metadata and default version table.
"""

from __future__ import annotations

from sqlalchemy import MetaData, create_engine, pool


def run_environment(metadata: MetaData, default_version_table: str) -> None:
    """Run the migrations of the current Alembic context, online or offline (``--sql``)."""
    from alembic import context

    config = context.config
    version_table = config.get_main_option("version_table") or default_version_table

    def run(**options) -> None:
        context.configure(target_metadata=metadata, version_table=version_table, **options)
        with context.begin_transaction():
            context.run_migrations()

    if context.is_offline_mode():
        run(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection=connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            run(connection=conn)
    finally:
        engine.dispose()
