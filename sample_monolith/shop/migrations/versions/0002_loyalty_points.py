"""loyalty points: balance on the customer, one ledger entry per change

Revision ID: 0002
Revises: 0001
Create Date: 2020-11-16 09:40:00
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("customers") as batch_op:
        batch_op.add_column(
            sa.Column("loyalty_points", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "loyalty_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_loyalty_entries_customer_id_customers"
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name="fk_loyalty_entries_order_id_orders"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_loyalty_entries"),
    )
    # Past orders earn their points too: one point per whole dollar of every order not cancelled.
    op.execute(
        "INSERT INTO loyalty_entries (customer_id, order_id, points, reason, created_at) "
        "SELECT customer_id, id, total_cents / 100, 'backfill', created_at FROM orders "
        "WHERE customer_id IS NOT NULL AND status != 'cancelled' AND total_cents >= 100"
    )
    op.execute(
        "UPDATE customers SET loyalty_points = (SELECT COALESCE(SUM(points), 0) "
        "FROM loyalty_entries WHERE loyalty_entries.customer_id = customers.id)"
    )


def downgrade():
    op.drop_table("loyalty_entries")
    with op.batch_alter_table("customers") as batch_op:
        batch_op.drop_column("loyalty_points")
