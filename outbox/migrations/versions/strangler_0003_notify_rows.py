"""strangler: PostgreSQL NOTIFY carries the new outbox rows when they are small

Revision ID: strangler_0003
Revises: strangler_0002
Create Date: 2026-12-01

The statement-level AFTER INSERT trigger of strangler_0002 sent an empty
notification. It now reads the statement's new rows (a transition table) and,
when there are at most 32 of them and their JSON fits in 7,900 bytes (under
PostgreSQL's 8,000-byte notification limit), sends them as the payload: a
JSON array of ``[position, id, aggregatetype, aggregateid, type, payload
(base64), timestamp, tracingspancontext, source, content_type,
lease_partition]``. A relay that is caught up publishes those rows straight from
the notification, with no claim query in between; otherwise, and for an empty
payload, it claims as before. The notification is still sent at commit and
costs the writer no extra round trip.

Frozen: later changes get revisions of their own.
"""

from alembic import op

from outbox.migrations import table_name_for_migration

revision = "strangler_0003"
down_revision = "strangler_0002"
branch_labels = None
depends_on = None

#: Rows in one INSERT beyond which the notification carries none (a bulk emit: the relay claims).
MAX_ROWS = 32
#: Bytes of payload at most: PostgreSQL refuses a notification of 8,000 bytes or more.
MAX_BYTES = 7900


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    name = table_name_for_migration()
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION {name}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            rows text := '';
        BEGIN
            IF (SELECT count(*) FROM new_rows) <= {MAX_ROWS} THEN
                SELECT json_agg(json_build_array(
                    position, id, aggregatetype, aggregateid, type,
                    translate(encode(payload, 'base64'), E'\\n', ''), "timestamp",
                    tracingspancontext, source, content_type, lease_partition
                ) ORDER BY position)::text INTO rows FROM new_rows;
                IF rows IS NULL OR octet_length(rows) > {MAX_BYTES} THEN
                    rows := '';
                END IF;
            END IF;
            PERFORM pg_notify('{name}', rows);
            RETURN NULL;
        END $$
        """
    )
    op.execute(f"DROP TRIGGER IF EXISTS {name}_notify ON {name}")
    op.execute(
        f"CREATE TRIGGER {name}_notify AFTER INSERT ON {name} REFERENCING NEW TABLE AS new_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {name}_notify()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    name = table_name_for_migration()
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION {name}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{name}', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(f"DROP TRIGGER IF EXISTS {name}_notify ON {name}")
    op.execute(
        f"CREATE TRIGGER {name}_notify AFTER INSERT ON {name} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {name}_notify()"
    )
