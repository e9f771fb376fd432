"""What the outbox holds: pending, published and dead rows, how old the oldest pending is, and what is failing."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from .table import get_outbox_table


@dataclasses.dataclass(frozen=True)
class OutboxStatus:
    """Counts of an outbox table at one moment."""

    pending: int
    published: int
    dead: int
    oldest_pending_at: dt.datetime | None
    oldest_pending_age_seconds: float | None
    dead_rows: tuple[dict, ...] = ()
    #: Pending rows that failed to publish at least once and wait for their next attempt.
    retrying: int = 0
    retrying_rows: tuple[dict, ...] = ()

    def as_dict(self) -> dict:
        """Return a JSON-ready dict (timestamps as RFC 3339)."""
        out = dataclasses.asdict(self)
        out["oldest_pending_at"] = self.oldest_pending_at.isoformat() if self.oldest_pending_at else None
        out["dead_rows"] = list(self.dead_rows)
        out["retrying_rows"] = list(self.retrying_rows)
        return out


def outbox_status(
    conn: Connection, table_name: str | None = None, *, dead_limit: int = 20, now: dt.datetime | None = None
) -> OutboxStatus:
    """Return the status of the outbox on ``conn``, with up to ``dead_limit`` dead rows listed."""
    table = get_outbox_table(table_name) if table_name else get_outbox_table()
    now = now or dt.datetime.now(dt.timezone.utc)
    pending_filter = and_(table.c.published_at.is_(None), table.c.dead_at.is_(None))
    pending, oldest = conn.execute(
        select(func.count(), func.min(table.c.timestamp)).where(pending_filter)
    ).one()
    published = conn.execute(select(func.count()).where(table.c.published_at.is_not(None))).scalar_one()
    dead = conn.execute(select(func.count()).where(table.c.dead_at.is_not(None))).scalar_one()
    if oldest is not None and oldest.tzinfo is None:  # aggregate results skip the type's processor on some drivers
        oldest = oldest.replace(tzinfo=dt.timezone.utc)
    if isinstance(oldest, str):
        oldest = dt.datetime.fromisoformat(oldest).replace(tzinfo=dt.timezone.utc)
    columns = (table.c.position, table.c.id, table.c.type, table.c.aggregatetype, table.c.aggregateid,
               table.c.attempts, table.c.last_error)
    dead_rows = conn.execute(
        select(*columns, table.c.dead_at)
        .where(table.c.dead_at.is_not(None))
        .order_by(table.c.position)
        .limit(dead_limit)
    ).all()
    # A failing row holds its aggregate's later rows back until it publishes or goes dead: the reason
    # to see before it is dead, an hour of retries later.
    retrying_filter = and_(pending_filter, table.c.attempts > 0)
    retrying = conn.execute(select(func.count()).where(retrying_filter)).scalar_one()
    retrying_rows = conn.execute(
        select(*columns, table.c.available_at).where(retrying_filter).order_by(table.c.position).limit(dead_limit)
    ).all() if retrying else []
    return OutboxStatus(
        pending=pending,
        published=published,
        dead=dead,
        oldest_pending_at=oldest,
        oldest_pending_age_seconds=(now - oldest).total_seconds() if oldest else None,
        dead_rows=tuple({**_described(r), "dead_at": _iso(r.dead_at)} for r in dead_rows),
        retrying=retrying,
        retrying_rows=tuple({**_described(r), "next_attempt_at": _iso(r.available_at)} for r in retrying_rows),
    )


def _described(row) -> dict:
    return {
        "position": row.position, "id": row.id, "type": row.type, "aggregatetype": row.aggregatetype,
        "aggregateid": row.aggregateid, "attempts": row.attempts, "last_error": row.last_error,
    }


def _iso(value) -> str | None:
    return value.isoformat() if value else None
