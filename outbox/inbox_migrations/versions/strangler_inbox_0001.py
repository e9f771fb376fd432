"""strangler: create a service's inbox and dead-letter tables

Revision ID: strangler_inbox_0001
Revises:
Create Date: 2026-11-29

Frozen: this file states the schema of revision 0001 as it was, independent of
``outbox/inbox.py``; later changes get revisions of their own.
"""

import sqlalchemy as sa
from alembic import op

from outbox.table import UTCDateTime

revision = "strangler_inbox_0001"
down_revision = None
branch_labels = ("strangler_inbox",)
depends_on = None


def upgrade() -> None:
    big_int = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    blob = sa.LargeBinary().with_variant(sa.dialects.mysql.LONGBLOB(), "mysql", "mariadb")
    op.create_table(
        "strangler_inbox",
        sa.Column("consumer", sa.String(128), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("handled_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name="pk_strangler_inbox"),
    )
    op.create_index("ix_strangler_inbox_handled_at", "strangler_inbox", ["consumer", "handled_at"])
    op.create_table(
        "strangler_dead_letters",
        sa.Column("position", big_int, autoincrement=True, nullable=False),
        sa.Column("consumer", sa.String(128), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("event", blob, nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_strangler_dead_letters"),
    )
    op.create_index("ix_strangler_dead_letters_event", "strangler_dead_letters", ["consumer", "event_id"])


def downgrade() -> None:
    op.drop_index("ix_strangler_dead_letters_event", table_name="strangler_dead_letters")
    op.drop_table("strangler_dead_letters")
    op.drop_index("ix_strangler_inbox_handled_at", table_name="strangler_inbox")
    op.drop_table("strangler_inbox")
