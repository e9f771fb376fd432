"""strangler: drop ix_<outbox>_pending, which ix_<outbox>_claim made redundant

Revision ID: strangler_0005
Revises: strangler_0004
Create Date: 2026-11-29

``ix_<t>_claim (published_at, position, lease_partition)`` (strangler_0002)
serves everything ``ix_<t>_pending (published_at, lease_partition, position)``
did: the relay's claim reads it in position order and tests the partition in
the index; purge, status and the blocked-keys read start from its
``published_at`` prefix. The second index was pure write cost on the busiest
table: every emit inserted an entry into it, and every mark (an UPDATE of
``published_at``, never a HOT update, since that column is indexed) inserted
another. Measured on PostgreSQL (docs/performance.md): about 15 µs of each
emitting transaction, and 1.5 µs of the mark's 14 µs per row.

PostgreSQL drops it with ``DROP INDEX CONCURRENTLY``, outside the migration's
transaction (Alembic's autocommit block commits the revisions run before
this one first). A plain ``DROP INDEX`` takes an ACCESS EXCLUSIVE lock: behind
one long transaction that had emitted, it would wait, and every new emit
would queue behind it, which stops the monolith. CONCURRENTLY waits for such
transactions too, but lets emits go on meanwhile. Where the caller began the
transaction the migrations run in (Alembic's cookbook pattern of sharing a
connection, ``config.attributes["connection"]`` inside ``engine.begin()``),
Alembic cannot commit it: the drop is then a plain one inside that
transaction, its lock wait bounded as on MariaDB below. MariaDB and MySQL drop an
index in place, but first wait for a metadata lock behind open transactions on
the table, and writes queue behind that wait; there is no concurrent form, so
the wait is bounded instead (``lock_wait_timeout``, 5 s): the upgrade fails
with a lock wait timeout, changing nothing, and can simply be run again.
SQLite has no concurrent writers to block.

Frozen: later changes get revisions of their own.
"""

import sqlalchemy as sa
from alembic import context, op

from outbox.migrations import table_name_for_migration

revision = "strangler_0005"
down_revision = "strangler_0004"
branch_labels = None
depends_on = None

COLUMNS = ["published_at", "lease_partition", "position"]


def _index(table: str) -> str:
    return f"ix_{table}_pending"
#: Where the drop cannot be concurrent: how long it may wait for its lock (writes queue meanwhile).
LOCK_WAIT_SECONDS = 5


def _dialect() -> str:
    return op.get_bind().dialect.name


def _can_leave_the_transaction() -> bool:
    """False when the caller began the migrations' transaction: Alembic cannot commit it then.

    Alembic keeps the transaction it began itself in ``_transaction``; where that
    attribute is missing (a later Alembic), the bounded plain drop is the safe choice.
    """
    migration = context.get_context()
    if migration.as_sql:
        return True
    return getattr(migration, "_transaction", None) is not None or not migration.connection.in_transaction()


def upgrade() -> None:
    name = table_name_for_migration()
    if _dialect() == "postgresql" and _can_leave_the_transaction():
        with context.get_context().autocommit_block():
            op.drop_index(_index(name), table_name=name, postgresql_concurrently=True, if_exists=True)
    elif _dialect() == "postgresql":
        bind = op.get_bind()
        previous = bind.exec_driver_sql("SHOW lock_timeout").scalar()
        op.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_SECONDS}s'")
        op.drop_index(_index(name), table_name=name, if_exists=True)
        bind.execute(sa.text("SELECT set_config('lock_timeout', :previous, true)"), {"previous": previous})
    elif _dialect() in ("mysql", "mariadb"):
        op.execute(f"SET SESSION lock_wait_timeout = {LOCK_WAIT_SECONDS}")
        try:
            op.drop_index(_index(name), table_name=name)
        finally:
            op.execute("SET SESSION lock_wait_timeout = DEFAULT")
    else:
        op.drop_index(_index(name), table_name=name)


def downgrade() -> None:
    name = table_name_for_migration()
    if _dialect() == "postgresql" and _can_leave_the_transaction():
        with context.get_context().autocommit_block():
            op.create_index(_index(name), name, COLUMNS, postgresql_concurrently=True, if_not_exists=True)
    else:
        op.create_index(_index(name), name, COLUMNS)
