"""Replay: publish already-published outbox rows again, to a router, as the relay publishes them.

* Reads only. Rows are selected by ``Selection`` among the published ones
  (``published_at`` set; pending rows are the relay's, dead rows
  ``outbox retry``'s) and read in position order, ``batch`` rows per short
  read; nothing is ever written to the outbox, so ``published_at``,
  ``published_by`` and ``attempts`` stay as they are.
* What is sent is what the relay sends: ``Envelope.from_row`` of the row, then
  the relay's ``envelope_transform`` if one is given (``encrypt_at = "relay"``),
  then ``router.publish`` inside the same ``send`` span. A row sealed at emit
  stays sealed: its JWE is sent byte for byte.
* Order per key holds: rows go out in position order, and once an event of a
  key fails, the key's later rows are not sent (counted ``held_back``).
* A transient failure (broker down) stops the replay after that batch;
  ``resume_from`` is the position to start again from. Events published
  before it are sent again by the resumed run: consumers de-duplicate by event
  id in their inbox, so a replay is safe for them whatever it repeats.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Sequence

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Engine

from . import tracing
from .envelope import Envelope
from .routers.base import HELD_BACK, Destinations, PublishResult, Router
from .table import DEFAULT_TABLE_NAME, get_outbox_table

EnvelopeTransform = Callable[[Envelope], Envelope]

#: The columns an envelope is built from (the relay's, without its bookkeeping).
_EVENT_COLUMNS = (
    "position", "id", "aggregatetype", "aggregateid", "type", "timestamp", "tracingspancontext", "source",
    "content_type",
)
#: Failed events listed in the result; the counts hold them all.
_MAX_ERRORS = 20


def _glob(pattern: str) -> tuple[str, re.Pattern[str]]:
    """Return (LIKE pattern, exact regex) of an event-type pattern where only ``*`` and ``?`` are wildcards."""
    like, regex = [], []
    for char in pattern:
        if char == "*":
            like.append("%")
            regex.append(".*")
        elif char == "?":
            like.append("_")
            regex.append(".")
        else:
            like.append("\\" + char if char in "%_\\" else char)
            regex.append(re.escape(char))
    return "".join(like), re.compile("".join(regex), re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which published rows to replay; every given filter must hold, repeated ones are alternatives.

    ``since`` is inclusive and ``until`` exclusive, on the event's ``time``
    (when emit ran); positions are inclusive. ``types`` are patterns with
    ``*`` and ``?``; ``aggregates`` are ``(type, id)`` pairs where an id of
    None means every aggregate of that type.
    """

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    types: tuple[str, ...] = ()
    aggregates: tuple[tuple[str, str | None], ...] = ()
    ids: tuple[str, ...] = ()
    position_from: int | None = None
    position_to: int | None = None

    def __post_init__(self):
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware")
        if self.since and self.until and self.since >= self.until:
            raise ValueError(f"since ({self.since.isoformat()}) must be before until ({self.until.isoformat()})")
        if None not in (self.position_from, self.position_to) and self.position_from > self.position_to:
            raise ValueError(f"position from {self.position_from} is after position to {self.position_to}")
        if any(not aggregate_type for aggregate_type, _ in self.aggregates):
            raise ValueError("an aggregate filter needs a type: TYPE or TYPE:ID")

    @property
    def everything(self) -> bool:
        """True when no filter is given: every published row."""
        return self == Selection()

    def clauses(self, t) -> list:
        """Return the WHERE clauses of this selection on outbox table ``t``."""
        out = [t.c.published_at.is_not(None)]
        if self.since is not None:
            out.append(t.c.timestamp >= self.since)
        if self.until is not None:
            out.append(t.c.timestamp < self.until)
        if self.position_from is not None:
            out.append(t.c.position >= self.position_from)
        if self.position_to is not None:
            out.append(t.c.position <= self.position_to)
        if self.ids:
            out.append(t.c.id.in_(self.ids))
        if self.types:
            out.append(or_(*(
                t.c.type.like(_glob(p)[0], escape="\\") if ("*" in p or "?" in p) else t.c.type == p
                for p in self.types
            )))
        if self.aggregates:
            out.append(or_(*(
                t.c.aggregatetype == a if i is None else and_(t.c.aggregatetype == a, t.c.aggregateid == i)
                for a, i in self.aggregates
            )))
        return out

    def matches_type(self, event_type: str) -> bool:
        """True when ``event_type`` matches a type pattern exactly (LIKE may ignore case)."""
        return not self.types or any(_glob(p)[1].fullmatch(event_type) for p in self.types)


@dataclasses.dataclass
class ReplayResult:
    """What one replay did (or, dry, would do)."""

    dry_run: bool = False
    selected: int = 0
    published: int = 0
    failed: int = 0
    held_back: int = 0
    batches: int = 0
    first_position: int | None = None
    last_position: int | None = None
    first_time: dt.datetime | None = None
    last_time: dt.datetime | None = None
    by_type: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    by_destination: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    #: The first failed events: position, id, error.
    errors: list[dict] = dataclasses.field(default_factory=list)
    #: The transient error that stopped the replay, if one did.
    stopped: str | None = None
    #: Where to start again (``--position-from``) when the replay stopped early or hit its limit.
    resume_from: int | None = None

    @property
    def ok(self) -> bool:
        """True when every selected event was published (or, dry, could be)."""
        return not (self.failed or self.held_back or self.stopped)

    def as_dict(self) -> dict:
        """Return the result as JSON-ready data."""
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        doc["by_type"] = dict(sorted(self.by_type.items()))
        doc["by_destination"] = dict(sorted(self.by_destination.items()))
        doc["errors"] = [dict(e) for e in self.errors]
        for name in ("first_time", "last_time"):
            doc[name] = doc[name].isoformat() if doc[name] else None
        if self.dry_run:
            del doc["published"]
        return doc


def replay(
    engine: Engine,
    router: Router | None,
    selection: Selection,
    *,
    table_name: str = DEFAULT_TABLE_NAME,
    batch: int = 200,
    limit: int | None = None,
    envelope_transform: EnvelopeTransform | None = None,
    destinations: Destinations | None = None,
    dry_run: bool = False,
    progress: Callable[[ReplayResult], None] | None = None,
) -> ReplayResult:
    """Publish the selected published rows again, in position order; see the module docstring.

    With ``dry_run`` nothing is sent (``router`` may be None) and payloads are
    not even read: the result counts what would go where. ``destinations``
    names where each event goes in the counts (the router's own when it has
    one). ``progress`` is called after every batch.
    """
    if batch < 1:
        raise ValueError(f"batch {batch}: expected at least 1")
    if limit is not None and limit < 1:
        raise ValueError(f"limit {limit}: expected at least 1")
    if router is None and not dry_run:
        raise ValueError("a replay that is not dry needs a router")
    t = get_outbox_table(table_name)
    if destinations is None:
        destinations = getattr(router, "destinations", None) or Destinations()
    columns = [t.c[name] for name in _EVENT_COLUMNS]
    if not dry_run:
        columns.append(t.c.payload)
    clauses = selection.clauses(t)
    result = ReplayResult(dry_run=dry_run)
    failed_keys: set[tuple[str, str]] = set()
    last: int | None = None
    while True:
        if limit is not None and result.selected >= limit:
            if _more(engine, select(t.c.position).where(*clauses, t.c.position > last)):
                result.resume_from = last + 1
            break
        size = batch if limit is None else min(batch, limit - result.selected)
        query = select(*columns).where(*clauses)
        if last is not None:
            query = query.where(t.c.position > last)
        with engine.connect() as conn:
            fetched = conn.execute(query.order_by(t.c.position).limit(size)).all()
        if not fetched:
            break
        last = fetched[-1].position
        rows = [r for r in fetched if selection.matches_type(r.type)]
        if rows:
            result.batches += 1
            _count(result, rows)
            if dry_run:
                _dry(result, rows, destinations)
            else:
                resume = _send(result, rows, router, envelope_transform, destinations, failed_keys)
                if resume is not None:
                    result.resume_from = resume
                    break
            if progress is not None:
                progress(result)
        if len(fetched) < size:
            break
    return result


def _more(engine: Engine, query) -> bool:
    with engine.connect() as conn:
        return conn.execute(query.limit(1)).first() is not None


def _count(result: ReplayResult, rows: Sequence) -> None:
    result.selected += len(rows)
    if result.first_position is None:
        result.first_position = rows[0].position
    result.last_position = rows[-1].position
    for row in rows:
        if result.first_time is None or row.timestamp < result.first_time:
            result.first_time = row.timestamp
        if result.last_time is None or row.timestamp > result.last_time:
            result.last_time = row.timestamp


def _envelope(row, payload: bytes | None) -> tuple[Envelope | None, str | None]:
    mapping = dict(row._mapping)
    mapping["payload"] = payload
    try:
        return Envelope.from_row(mapping), None
    except Exception as exc:  # the relay calls such a row poison too
        return None, f"row cannot be read as a CloudEvent: {exc}"


def _fail(result: ReplayResult, position: int, event_id: str, error: str) -> None:
    result.failed += 1
    if len(result.errors) < _MAX_ERRORS:
        result.errors.append({"position": position, "id": event_id, "error": error})


def _dry(result: ReplayResult, rows: Sequence, destinations: Destinations) -> None:
    for row in rows:
        envelope, error = _envelope(row, b"")
        if error is not None:
            _fail(result, row.position, row.id, error)
            continue
        result.by_type[row.type] += 1
        result.by_destination[destinations.for_event(envelope)] += 1


def _send(
    result: ReplayResult,
    rows: Sequence,
    router: Router,
    transform: EnvelopeTransform | None,
    destinations: Destinations,
    failed_keys: set[tuple[str, str]],
) -> int | None:
    """Publish one batch; return the position to resume from when a transient failure stops the replay."""
    sendable: list[tuple[object, Envelope]] = []
    for row in rows:
        key = (row.aggregatetype, row.aggregateid)
        if key in failed_keys:
            result.held_back += 1
            continue
        envelope, error = _envelope(row, row.payload)
        if envelope is not None and transform is not None:
            try:
                envelope = transform(envelope)
            except Exception as exc:
                error = f"envelope transform failed: {type(exc).__name__}: {exc}"
        if error is not None:
            _fail(result, row.position, row.id, error)
            failed_keys.add(key)
            continue
        sendable.append((row, envelope))
    if not sendable:
        return None
    envelopes = [envelope for _, envelope in sendable]
    try:
        with tracing.send_span(envelopes, router=router):
            published = router.publish(envelopes)
        if len(published) != len(envelopes):
            raise RuntimeError(f"router returned {len(published)} results for {len(envelopes)} events")
    except Exception as exc:  # as in the relay: a router that raises is a broker outage
        published = [PublishResult(e.id, f"{type(exc).__name__}: {exc}", False) for e in envelopes]
    resume: int | None = None
    for (row, envelope), outcome in zip(sendable, published):
        key = (row.aggregatetype, row.aggregateid)
        if outcome.ok:
            result.published += 1
            result.by_type[row.type] += 1
            result.by_destination[destinations.for_event(envelope)] += 1
        elif outcome.permanent:
            _fail(result, row.position, row.id, outcome.error or "failed")
            failed_keys.add(key)
        elif outcome.error == HELD_BACK and key in failed_keys:
            result.held_back += 1
        else:
            result.stopped = result.stopped or outcome.error
            resume = row.position if resume is None else min(resume, row.position)
    return resume
