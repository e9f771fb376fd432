"""Partition leases: which relay publishes which of the 64 lease partitions, fenced by a token.

Every event of one aggregate hashes to one partition (``outbox.table.partition_for``),
so a relay that owns a partition is the only one publishing that aggregate's
events, and per-aggregate order holds with any number of relays.

* A relay heartbeats in ``<outbox>_relays``; the live relays split the partitions
  fairly (each holds at most ``ceil(64 / live)``). A relay over its share
  releases partitions; one under its share takes free or expired ones.
* Taking a partition increments its ``fence``. Every write a relay makes to an
  outbox row (published, failed, dead) requires its owner and fence to be
  unchanged, so a relay that stalled past its lease and lost the partition
  cannot mark rows the new owner is handling.
* Free partitions are taken with ``FOR UPDATE SKIP LOCKED`` where the database
  has it (PostgreSQL, MariaDB 10.6+), so relays competing for them never queue
  behind each other; SQLite has one writer at a time anyway.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import socket
import uuid

from sqlalchemy import Table, delete, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .table import PARTITIONS, get_lease_table, get_outbox_table


def new_owner_id() -> str:
    """Return a relay identity: host, pid and a random suffix (unique across restarts)."""
    return f"{socket.gethostname()[:80]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def get_relay_table(outbox_name: str) -> Table:
    """Return the relay membership table ``<outbox>_relays`` (created by revision strangler_0002)."""
    return get_outbox_table(outbox_name).metadata.tables[f"{outbox_name}_relays"]


def supports_skip_locked(conn: Connection) -> bool:
    """True when the database has ``FOR UPDATE SKIP LOCKED`` (PostgreSQL, MariaDB 10.6+, MySQL 8)."""
    dialect = conn.dialect
    if dialect.name == "postgresql":
        return True
    if dialect.name in ("mysql", "mariadb"):
        version = dialect.server_version_info or ()
        if getattr(dialect, "is_mariadb", False):
            return tuple(version[:2]) >= (10, 6)
        return tuple(version[:1]) >= (8,)
    return False


@dataclasses.dataclass
class LeaseState:
    """What one relay holds: partition → fence token, and when that holding lapses locally."""

    held: dict[int, int] = dataclasses.field(default_factory=dict)
    #: Partitions being handed back: no new claims; released once nothing of them is in flight.
    releasing: set[int] = dataclasses.field(default_factory=set)
    valid_until: float = 0.0
    live_relays: int = 1

    def claimable(self) -> list[int]:
        """Return the partitions this relay may claim rows from now."""
        return sorted(p for p in self.held if p not in self.releasing)


class Leases:
    """Heartbeat, renew, rebalance and fence one relay's partitions on one outbox table."""

    def __init__(self, outbox_name: str, owner: str, lease_seconds: float):
        self.table = get_lease_table(outbox_name)
        self.relays = get_relay_table(outbox_name)
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.state = LeaseState()

    def ensure_tables(self, engine) -> None:
        """Create the membership table and the partition rows if the schema came from ``create_all``.

        The lease table is read first: on a database never migrated that read
        fails before anything is created in it.
        """
        with engine.begin() as conn:
            present = set(conn.execute(select(self.table.c.lease_partition)).scalars())
            self.relays.create(conn, checkfirst=True)
        missing = [p for p in range(PARTITIONS) if p not in present]
        if missing:
            try:
                with engine.begin() as conn:
                    conn.execute(insert(self.table), [{"lease_partition": p, "fence": 0} for p in missing])
            except IntegrityError:  # another relay seeded them first
                pass

    def refresh(self, conn: Connection, now: dt.datetime, *, in_flight: set[int] = frozenset()) -> list[int]:
        """Heartbeat, renew what is held, rebalance; return partitions newly taken.

        Runs in the caller's transaction. ``in_flight`` are partitions of rows
        published but not yet marked: they are not released until marked.
        """
        lease = dt.timedelta(seconds=self.lease_seconds)
        t, r = self.table, self.relays
        if conn.execute(update(r).where(r.c.owner == self.owner).values(heartbeat_at=now)).rowcount == 0:
            conn.execute(insert(r).values(owner=self.owner, heartbeat_at=now))
        # Relays silent for three leases are gone: forget them (their partitions expire on their own).
        conn.execute(delete(r).where(r.c.heartbeat_at < now - 3 * lease))
        live = conn.execute(select(r.c.owner).where(r.c.heartbeat_at >= now - lease)).scalars().all()
        live_count = max(1, len(set(live) | {self.owner}))
        share = math.ceil(PARTITIONS / live_count)

        conn.execute(update(t).where(t.c.owner == self.owner).values(expires_at=now + lease))
        held = {p: f for p, f in conn.execute(select(t.c.lease_partition, t.c.fence).where(t.c.owner == self.owner))}
        state = self.state
        state.held = held
        state.releasing &= set(held)
        state.live_relays = live_count

        if len(held) > share:
            # Hand back the highest partitions, first those with nothing in flight.
            extra = len(held) - share
            candidates = sorted(held, reverse=True)
            state.releasing |= set(candidates[:extra])
        elif len(held) < share:
            state.releasing.clear()
        releasable = sorted(p for p in state.releasing if p not in in_flight)
        if releasable:
            conn.execute(
                update(t)
                .where(t.c.lease_partition.in_(releasable), t.c.owner == self.owner)
                .values(owner=None, expires_at=None)
            )
            for p in releasable:
                held.pop(p, None)
                state.releasing.discard(p)

        taken: list[int] = []
        need = share - len(held)
        if need > 0:
            free = or_(t.c.owner.is_(None), t.c.expires_at < now)
            query = select(t.c.lease_partition).where(free).order_by(t.c.lease_partition).limit(need)
            if supports_skip_locked(conn):
                query = query.with_for_update(skip_locked=True)
            for p in conn.execute(query).scalars().all():
                changed = conn.execute(
                    update(t)
                    .where(t.c.lease_partition == p, free)
                    .values(owner=self.owner, fence=t.c.fence + 1, expires_at=now + lease)
                ).rowcount
                if changed:
                    taken.append(p)
            if taken:
                for p, f in conn.execute(
                    select(t.c.lease_partition, t.c.fence).where(t.c.lease_partition.in_(taken), t.c.owner == self.owner)
                ):
                    held[p] = f
        return taken

    def still_held(self, conn: Connection, fences: dict[int, int]) -> set[int]:
        """Return the partitions of ``fences`` still ours under the same fence, locked until commit.

        The lease rows are read ``FOR SHARE`` (PostgreSQL, MariaDB), so no relay
        can take them before the caller's writes commit; SQLite's single writer
        gives the same. Writes to rows of any other partition must not happen.
        """
        t = self.table
        query = select(t.c.lease_partition, t.c.fence).where(t.c.owner == self.owner)
        if conn.dialect.name != "sqlite":
            query = query.with_for_update(read=True)
        current = dict(conn.execute(query).all())
        return {p for p, f in fences.items() if current.get(p) == f}

    def release_all(self, conn: Connection) -> None:
        """Give back every partition and leave the membership table (clean shutdown)."""
        t, r = self.table, self.relays
        conn.execute(update(t).where(t.c.owner == self.owner).values(owner=None, expires_at=None))
        conn.execute(delete(r).where(r.c.owner == self.owner))
        self.state = LeaseState()
