"""order cancellation: when an order was cancelled; orders looked up by status

Revision ID: 0003
Revises: 0002
Create Date: 2022-06-02 14:05:00
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("orders") as batch_op:
        batch_op.add_column(sa.Column("cancelled_at", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_orders_status", ["status"], unique=False)


def downgrade():
    with op.batch_alter_table("orders") as batch_op:
        batch_op.drop_index("ix_orders_status")
        batch_op.drop_column("cancelled_at")
