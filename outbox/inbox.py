"""A service's inbox (handled event ids) and dead letters, in the service's own database.

The inbox row of an event is written in the same transaction as the handler's
own writes, so a redelivered event finds its id and has no second effect. A
dead letter keeps the event exactly as received (ciphertext when it was
encrypted), the reason and the error, so nothing is lost and no plaintext is
written outside the handler's own tables.
"""

from __future__ import annotations

import io

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import mysql

from .inbox_migrations import BRANCH, SCRIPT_DIR, STANDALONE_VERSION_TABLE, VERSION_LOCATION
from .table import UTCDateTime

INBOX_TABLE = "strangler_inbox"
DEAD_LETTER_TABLE = "strangler_dead_letters"

metadata = MetaData()

inbox_table = Table(
    INBOX_TABLE,
    metadata,
    Column("consumer", String(128), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("type", String(255), nullable=False),
    Column("source", String(255), nullable=False),
    Column("outcome", String(16), nullable=False),  # "handled" or "dead"
    Column("handled_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("consumer", "event_id", name="pk_strangler_inbox"),
    Index("ix_strangler_inbox_handled_at", "consumer", "handled_at"),
)

dead_letter_table = Table(
    DEAD_LETTER_TABLE,
    metadata,
    Column("position", BigInteger().with_variant(Integer(), "sqlite"), autoincrement=True, nullable=False),
    Column("consumer", String(128), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("type", String(255), nullable=False),
    Column("source", String(255), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("error", Text(), nullable=False),
    Column("event", LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("position", name="pk_strangler_dead_letters"),
    Index("ix_strangler_dead_letters_event", "consumer", "event_id"),
)

__all__ = [
    "BRANCH",
    "DEAD_LETTER_TABLE",
    "INBOX_TABLE",
    "VERSION_LOCATION",
    "dead_letter_table",
    "inbox_table",
    "metadata",
    "purge_handled",
    "standalone_config",
    "upgrade",
]


def standalone_config(db_url: str):
    """Return an Alembic config that runs only the inbox branch against ``db_url``."""
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig(stdout=io.StringIO())
    cfg.set_main_option("script_location", str(SCRIPT_DIR))
    cfg.set_main_option("version_locations", str(SCRIPT_DIR / "versions"))
    cfg.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))
    cfg.set_main_option("version_table", STANDALONE_VERSION_TABLE)
    cfg.set_main_option("path_separator", "os")
    return cfg


def upgrade(db_url: str, revision: str = "head") -> None:
    """Create or upgrade the inbox and dead-letter tables in the service database ``db_url``."""
    from alembic import command

    command.upgrade(standalone_config(db_url), f"{BRANCH}@{revision}" if revision == "head" else revision)


def downgrade(db_url: str, revision: str = "base") -> None:
    """Downgrade the inbox branch (``base`` drops its tables)."""
    from alembic import command

    command.downgrade(standalone_config(db_url), f"{BRANCH}@{revision}" if revision == "base" else revision)


def purge_handled(engine, before, *, consumer: str | None = None, batch_size: int = 1000) -> int:
    """Delete ``handled`` inbox rows recorded before ``before`` (timezone-aware), in bounded batches; return how many.

    An id deleted here is handled again if its event comes back, so ``before``
    must lie further back than any redelivery or replay can reach. Rows of
    outcome ``dead`` stay, with the dead letters: they keep a redelivery of a
    dead or discarded event from being handled behind the operator's back.
    """
    from sqlalchemy import delete, select

    t = inbox_table
    deleted = 0
    while True:
        with engine.begin() as conn:
            query = select(t.c.consumer, t.c.event_id).where(t.c.handled_at < before, t.c.outcome == "handled")
            if consumer is not None:
                query = query.where(t.c.consumer == consumer)
            keys = conn.execute(query.limit(batch_size)).all()
            by_consumer: dict[str, list[str]] = {}
            for name, event_id in keys:
                by_consumer.setdefault(name, []).append(event_id)
            for name, ids in by_consumer.items():
                conn.execute(delete(t).where(t.c.consumer == name, t.c.event_id.in_(ids)))
        deleted += len(keys)
        if len(keys) < batch_size:
            return deleted
