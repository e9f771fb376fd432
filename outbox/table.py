"""The outbox table: one row per event, written in the business transaction.

The event's own columns follow Debezium's outbox convention (``id``,
``aggregatetype``, ``aggregateid``, ``type``, ``payload``, ``timestamp``,
``tracingspancontext``) so Debezium's Outbox Event Router can read the same
table. The rest is the relay's bookkeeping. Every index and constraint is named,
so migrations and autogenerate agree on every database.
"""

from __future__ import annotations

import datetime as dt
import zlib

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeDecorator

DEFAULT_TABLE_NAME = "strangler_outbox"

#: Number of lease partitions. A relay owns whole partitions; every event of one
#: aggregate hashes to the same partition, so one relay at a time publishes it.
PARTITIONS = 64


class UTCDateTime(TypeDecorator):
    """A timestamp stored as UTC and always read back timezone-aware.

    SQLite and MariaDB keep no offset; storing naive UTC everywhere and tagging
    it on the way out makes every backend behave like PostgreSQL's timestamptz.
    MariaDB gets microsecond precision (its default is whole seconds).
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("outbox timestamps must be timezone-aware")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):  # SQLite in raw queries
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


def _payload_type():
    # MySQL's BLOB holds 64 KiB: too small for an encrypted event with several recipients.
    return LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def _position_type():
    # SQLite only autoincrements an INTEGER PRIMARY KEY.
    return BigInteger().with_variant(Integer(), "sqlite")


def partition_for(aggregatetype: str, aggregateid: str) -> int:
    """Return the lease partition of an aggregate: stable across processes and languages."""
    return zlib.crc32(f"{aggregatetype}\x1f{aggregateid}".encode("utf-8")) % PARTITIONS


def build_outbox_table(metadata: MetaData, name: str = DEFAULT_TABLE_NAME) -> Table:
    """Define the outbox table called ``name`` on ``metadata`` and return it."""
    return Table(
        name,
        metadata,
        Column("position", _position_type(), autoincrement=True, nullable=False),
        Column("id", String(36), nullable=False),
        Column("aggregatetype", String(255), nullable=False),
        Column("aggregateid", String(255), nullable=False),
        Column("type", String(255), nullable=False),
        Column("payload", _payload_type(), nullable=True),
        Column("timestamp", UTCDateTime(), nullable=False),
        Column("tracingspancontext", String(512), nullable=True),
        Column("source", String(255), nullable=False),
        Column("content_type", String(64), nullable=False),
        Column("headers", JSON(), nullable=True),
        Column("lease_partition", SmallInteger(), nullable=False),
        Column("attempts", Integer(), nullable=False, default=0, server_default="0"),
        Column("available_at", UTCDateTime(), nullable=True),
        Column("last_error", Text(), nullable=True),
        Column("published_at", UTCDateTime(), nullable=True),
        Column("dead_at", UTCDateTime(), nullable=True),
        Column("published_by", String(128), nullable=True),
        PrimaryKeyConstraint("position", name=f"pk_{name}"),
        UniqueConstraint("id", name=f"uq_{name}_id"),
        # Head-of-line checks and `events trace`: one aggregate's rows in order.
        Index(f"ix_{name}_aggregate", "aggregatetype", "aggregateid", "position"),
        # The relay's claim: unpublished rows in position order, whatever partitions it holds (0002);
        # purge, status and the blocked-keys read start from its published_at prefix. It replaced
        # ix_<t>_pending (published_at, lease_partition, position), dropped in 0005.
        Index(f"ix_{name}_claim", "published_at", "position", "lease_partition"),
    )


def build_lease_table(metadata: MetaData, outbox_name: str = DEFAULT_TABLE_NAME) -> Table:
    """Define the relay's partition lease table that belongs to outbox ``outbox_name``.

    One row per partition: the relay that owns it, until when, and a fencing
    token that grows on every change of owner so a relay that lost its lease
    cannot mark rows it no longer owns.
    """
    name = f"{outbox_name}_leases"
    return Table(
        name,
        metadata,
        Column("lease_partition", SmallInteger(), autoincrement=False, nullable=False),
        Column("owner", String(128), nullable=True),
        Column("fence", BigInteger(), nullable=False, default=0, server_default="0"),
        Column("expires_at", UTCDateTime(), nullable=True),
        PrimaryKeyConstraint("lease_partition", name=f"pk_{name}"),
    )


def build_relay_table(metadata: MetaData, outbox_name: str = DEFAULT_TABLE_NAME) -> Table:
    """Define ``<outbox>_relays``: one row per running relay and its last heartbeat (revision 0002).

    The live relays split the lease partitions fairly; a relay that just
    started holds no partition yet, so the lease table alone cannot show it.
    """
    name = f"{outbox_name}_relays"
    return Table(
        name,
        metadata,
        Column("owner", String(128), nullable=False),
        Column("heartbeat_at", UTCDateTime(), nullable=False),
        PrimaryKeyConstraint("owner", name=f"pk_{name}"),
    )


metadata = MetaData()
outbox_table = build_outbox_table(metadata)
lease_table = build_lease_table(metadata)
relay_table = build_relay_table(metadata)

_tables: dict[str, Table] = {DEFAULT_TABLE_NAME: outbox_table}


def get_outbox_table(name: str = DEFAULT_TABLE_NAME) -> Table:
    """Return the outbox table called ``name``, defining it on a private MetaData if new."""
    table = _tables.get(name)
    if table is None:
        own = MetaData()
        table = build_outbox_table(own, name)
        build_lease_table(own, name)
        build_relay_table(own, name)
        _tables[name] = table
    return table


def get_lease_table(outbox_name: str = DEFAULT_TABLE_NAME) -> Table:
    """Return the lease table that belongs to outbox ``outbox_name``."""
    return get_outbox_table(outbox_name).metadata.tables[f"{outbox_name}_leases"]


def attach_to(target: MetaData, name: str = DEFAULT_TABLE_NAME) -> Table:
    """Add the outbox tables to an application's own ``MetaData`` and return the outbox.

    For apps whose tests build their schema with ``metadata.create_all()``
    rather than migrations: after ``attach_to(Base.metadata)`` the same
    ``create_all`` creates the outbox too.
    """
    if name in target.tables:
        return target.tables[name]
    table = build_outbox_table(target, name)
    build_lease_table(target, name)
    build_relay_table(target, name)
    return table


_CREATED_WITH = "strangler.create_with"


def create_with(target: MetaData, name: str = DEFAULT_TABLE_NAME) -> Table:
    """Create (and drop) the outbox tables whenever ``target.create_all()`` (``drop_all()``) runs.

    Unlike ``attach_to`` the tables do not join ``target``: an app whose tests
    build their schema with ``create_all()`` finds its outbox, while its
    migration checks (migrated schema == its MetaData, autogenerate) see only
    its own tables. Idempotent.
    """
    outbox = get_outbox_table(name)
    if target.info.get(_CREATED_WITH) == name:
        return outbox
    target.info[_CREATED_WITH] = name
    tables = [outbox, get_lease_table(name), outbox.metadata.tables[f"{name}_relays"]]

    def create(metadata: MetaData, connection, **kw) -> None:
        outbox.metadata.create_all(connection, tables=tables, checkfirst=True)

    def drop(metadata: MetaData, connection, **kw) -> None:
        outbox.metadata.drop_all(connection, tables=tables, checkfirst=True)

    sa_event.listen(target, "after_create", create)
    sa_event.listen(target, "after_drop", drop)
    return outbox
