"""strangler: relay membership table; PostgreSQL NOTIFY at commit of new outbox rows

Revision ID: strangler_0002
Revises: strangler_0001
Create Date: 2026-11-30

* ``<outbox>_relays``: one row per running relay with its last heartbeat, so
  relays share the 64 lease partitions fairly (a relay that just started holds
  no partition yet, so the lease table alone cannot show it).
* ``ix_<outbox>_claim`` (published_at, position, lease_partition): the relay's
  claim reads unpublished rows in position order straight off this index.
* PostgreSQL only: a statement-level AFTER INSERT trigger that calls
  ``pg_notify('<outbox>', '')``. The notification is sent when the emitting
  transaction commits and costs the writer no extra round trip; several
  inserts in one transaction collapse into one notification.

Frozen: later changes get revisions of their own.
"""

import sqlalchemy as sa
from alembic import context, op

from outbox.migrations import table_name_for_migration
from outbox.table import UTCDateTime

revision = "strangler_0002"
down_revision = "strangler_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    name = table_name_for_migration()
    bind = op.get_bind()
    # A relay on a create_all() schema may have created it already.
    if context.is_offline_mode() or not sa.inspect(bind).has_table(f"{name}_relays"):
        op.create_table(
            f"{name}_relays",
            sa.Column("owner", sa.String(128), nullable=False),
            sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
            sa.PrimaryKeyConstraint("owner", name=f"pk_{name}_relays"),
        )
    # The claim walks unpublished rows in position order: one index range, no sort,
    # whatever partitions the relay holds (ix_<t>_pending is per partition).
    op.create_index(f"ix_{name}_claim", name, ["published_at", "position", "lease_partition"])
    if bind.dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE OR REPLACE FUNCTION {name}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('{name}', '');
                RETURN NULL;
            END $$
            """
        )
        op.execute(
            f"CREATE TRIGGER {name}_notify AFTER INSERT ON {name} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}_notify()"
        )


def downgrade() -> None:
    name = table_name_for_migration()
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {name}_notify ON {name}")
        op.execute(f"DROP FUNCTION IF EXISTS {name}_notify()")
    op.drop_index(f"ix_{name}_claim", table_name=name)
    op.drop_table(f"{name}_relays")
