"""strangler: create the outbox and its lease table

Revision ID: strangler_0001
Revises:
Create Date: 2026-11-29

Frozen: this file states the schema of revision 0001 as it was, independent of
``outbox/table.py``; later changes get revisions of their own.
"""

import sqlalchemy as sa
from alembic import op

from outbox.migrations import table_name_for_migration
from outbox.table import UTCDateTime

revision = "strangler_0001"
down_revision = None
branch_labels = ("strangler_outbox",)
depends_on = None

PARTITIONS = 64


def upgrade() -> None:
    name = table_name_for_migration()
    big_int = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    payload = sa.LargeBinary().with_variant(sa.dialects.mysql.LONGBLOB(), "mysql", "mariadb")
    op.create_table(
        name,
        sa.Column("position", big_int, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("aggregatetype", sa.String(255), nullable=False),
        sa.Column("aggregateid", sa.String(255), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("payload", payload, nullable=True),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("tracingspancontext", sa.String(512), nullable=True),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=True),
        sa.Column("lease_partition", sa.SmallInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("available_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("published_at", UTCDateTime(), nullable=True),
        sa.Column("dead_at", UTCDateTime(), nullable=True),
        sa.Column("published_by", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("position", name=f"pk_{name}"),
        sa.UniqueConstraint("id", name=f"uq_{name}_id"),
    )
    op.create_index(f"ix_{name}_pending", name, ["published_at", "lease_partition", "position"])
    op.create_index(f"ix_{name}_aggregate", name, ["aggregatetype", "aggregateid", "position"])
    leases = op.create_table(
        f"{name}_leases",
        sa.Column("lease_partition", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("fence", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("lease_partition", name=f"pk_{name}_leases"),
    )
    op.bulk_insert(leases, [{"lease_partition": p, "fence": 0} for p in range(PARTITIONS)])


def downgrade() -> None:
    name = table_name_for_migration()
    op.drop_table(f"{name}_leases")
    op.drop_index(f"ix_{name}_aggregate", table_name=name)
    op.drop_index(f"ix_{name}_pending", table_name=name)
    op.drop_table(name)
