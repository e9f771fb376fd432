"""Looking after outbox rows: bring dead rows back, purge old published rows in bounded batches.

Both work in short transactions of at most ``batch_size`` rows, so neither holds
locks on the table for long nor writes one huge transaction: a purge of a year
of events runs beside the monolith and the relay without stalling either.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine

from .table import DEFAULT_TABLE_NAME, get_outbox_table

DEFAULT_BATCH_SIZE = 1000


@dataclasses.dataclass(frozen=True)
class MaintenanceResult:
    """How many rows an operation changed, and in how many transactions."""

    rows: int
    batches: int


def retry_dead(
    engine: Engine,
    *,
    table_name: str = DEFAULT_TABLE_NAME,
    ids: Iterable[str] | None = None,
    event_type: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> MaintenanceResult:
    """Make dead rows pending again (attempts reset, last error kept until published).

    All dead rows, or only those with the given event ``ids``, or of ``event_type``.
    """
    if batch_size < 1:
        raise ValueError(f"batch size {batch_size}: expected at least 1")
    t = get_outbox_table(table_name)
    wanted = list(ids) if ids is not None else None
    rows = batches = 0
    last = -1
    while True:
        with engine.begin() as conn:
            query = select(t.c.position).where(t.c.dead_at.is_not(None), t.c.position > last)
            if wanted is not None:
                query = query.where(t.c.id.in_(wanted))
            if event_type:
                query = query.where(t.c.type == event_type)
            positions = conn.execute(query.order_by(t.c.position).limit(batch_size)).scalars().all()
            if not positions:
                break
            changed = conn.execute(
                update(t)
                .where(t.c.position.in_(positions), t.c.dead_at.is_not(None))
                .values(dead_at=None, attempts=0, available_at=None)
            ).rowcount
        rows += changed
        batches += 1
        last = positions[-1]
        if len(positions) < batch_size:
            break
    return MaintenanceResult(rows, batches)


def purge_published(
    engine: Engine,
    published_before: dt.datetime,
    *,
    table_name: str = DEFAULT_TABLE_NAME,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batches: int | None = None,
) -> MaintenanceResult:
    """Delete rows published before ``published_before``, ``batch_size`` rows per transaction.

    Each DELETE names its rows by primary key, found in publish order, so no
    statement is unbounded. ``max_batches`` stops early (the next run goes on).
    Dead and pending rows are never purged.
    """
    if published_before.tzinfo is None:
        raise ValueError("published_before must be timezone-aware")
    if batch_size < 1:
        raise ValueError(f"batch size {batch_size}: expected at least 1")
    t = get_outbox_table(table_name)
    rows = batches = 0
    while max_batches is None or batches < max_batches:
        with engine.begin() as conn:
            positions = conn.execute(
                select(t.c.position)
                .where(t.c.published_at.is_not(None), t.c.published_at < published_before)
                .order_by(t.c.published_at, t.c.position)  # walks ix_<t>_claim, no sort
                .limit(batch_size)
            ).scalars().all()
            if not positions:
                break
            rows += conn.execute(delete(t).where(t.c.position.in_(positions))).rowcount
        batches += 1
        if len(positions) < batch_size:
            break
    return MaintenanceResult(rows, batches)
