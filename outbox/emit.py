"""``emit``: write an event to the outbox in the caller's transaction.

For an ORM ``Session`` the rows are written by the flush that commit does:
an entity's generated primary key, and the column values the transaction
leaves it with, are read after the statements that wrote them, and the rows
commit or roll back with the business change. ``emit`` itself never
flushes, commits or queries: it adds one INSERT to the commit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any, Mapping

from sqlalchemy import event as sa_event
from sqlalchemy import insert, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import NoInspectionAvailable
from sqlalchemy.orm import Session, scoped_session

from . import codec, settings
from .envelope import JSON_CONTENT_TYPE, format_time, join_span_context
from .ids import new_event_id
from .table import get_outbox_table, partition_for
from .tracing import create_context

_EVENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,254}$")
_PENDING = "strangler.pending_events"
_TRACKED = "strangler.tracked_adds"


class EmitError(ValueError):
    """An event cannot be written; the message names the entity, attribute or argument."""


@dataclasses.dataclass
class _PendingEvent:
    id: str
    type: str
    entity: Any
    data: Mapping[str, Any] | None
    aggregate: str | None
    key: str | None
    headers: Mapping[str, str] | None
    time: dt.datetime
    traceparent: str | None
    tracestate: str | None
    #: The session transaction (a savepoint's, or the outermost) the event was emitted in: rolling
    #: that one back, or one around it, takes the event back; rolling back another does not.
    owner: Any = None


def emit(
    target: Any,
    type: str,
    entity: Any = None,
    *,
    data: Mapping[str, Any] | None = None,
    aggregate: str | None = None,
    key: Any = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """Record event ``type`` in the outbox within ``target``'s transaction; return its id.

    ``target`` is a SQLAlchemy ``Session`` (or scoped session such as
    Flask-SQLAlchemy's ``db.session``), a Core ``Connection``, or a DB-API
    connection. With ``entity`` (a mapped object) the event carries its mapped
    column values as the transaction leaves them (read at the flush commit does),
    and its primary key is the aggregate id;
    ``data`` adds or overrides fields. Without an entity, ``aggregate`` names the
    aggregate type and ``key`` its id (default: the aggregate type itself, so
    such events are ordered per aggregate type).
    """
    if not isinstance(type, str) or not _EVENT_TYPE.match(type):
        raise EmitError(
            f"event type {type!r} must be 1-255 letters, digits, '.', '_' or '-', "
            "e.g. 'shop.order.created'"
        )
    if entity is None and not aggregate:
        raise EmitError(f"emit({type!r}): pass the entity, or aggregate='<name>' when there is none")
    if entity is not None:
        _mapper_of(entity)
    # The columns hold 255 characters: PostgreSQL and MariaDB would refuse a longer value at
    # commit, with the business rows; SQLite would store it and pass the tests.
    _check_length(type, "aggregate", aggregate)
    _check_length(type, "key", None if key is None else str(key))
    if data is not None:
        if not isinstance(data, Mapping):
            raise EmitError(f"emit({type!r}): data must be a mapping, not {data.__class__.__name__}")
        try:
            codec.to_jsonable(data, "data")  # fail now, at the call, not at commit
        except codec.UnserializableValue as exc:
            raise EmitError(f"emit({type!r}): {exc}") from None
    if headers is not None and not (isinstance(headers, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    )):
        raise EmitError(f"emit({type!r}): headers must map str to str, e.g. {{'tenant': 'acme'}}")
    sealer = settings.current().sealer
    if sealer is not None:
        sealer.check_type(type)

    event_id = new_event_id()
    traceparent, tracestate = create_context(
        event_id, type, aggregate or (aggregate_type_of(entity.__class__) if entity is not None else None)
    )
    pending = _PendingEvent(
        id=event_id,
        type=type,
        entity=entity,
        data=data,
        aggregate=aggregate,
        key=None if key is None else str(key),
        headers=headers,
        time=dt.datetime.now(dt.timezone.utc),
        traceparent=traceparent,
        tracestate=tracestate,
    )

    if isinstance(target, scoped_session):
        target = target()
    if isinstance(target, Session):
        _queue(target, pending)
    elif isinstance(target, Connection):
        target.execute(insert(_table()), [_row(pending)])
    elif hasattr(target, "cursor") and callable(target.cursor):
        _write_dbapi(target, [_row(pending)])
    else:
        raise EmitError(
            f"emit({type!r}): target must be a SQLAlchemy Session, scoped session, Connection "
            f"or DB-API connection, not {target.__class__.__name__}"
        )
    return pending.id


def _table():
    return get_outbox_table(settings.current().table_name)


#: The length of the outbox's aggregatetype and aggregateid columns.
AGGREGATE_MAX = 255


def _check_length(event_type: str, name: str, value: str | None) -> None:
    if value is not None and len(value) > AGGREGATE_MAX:
        raise EmitError(
            f"emit({event_type!r}): {name} is {len(value)} characters, more than the outbox's {AGGREGATE_MAX}: "
            f"pass a shorter {name}= (an id, or a hash of a long natural key)"
        )


def _mapper_of(entity: Any):
    if isinstance(entity, type):
        raise EmitError(f"pass an instance of {entity.__name__}, not the class (the object the transaction writes)")
    try:
        return inspect(entity).mapper
    except (NoInspectionAvailable, AttributeError):
        raise EmitError(
            f"{entity.__class__.__name__} is not a mapped SQLAlchemy entity; "
            "pass aggregate= and data= instead"
        ) from None


def aggregate_type_of(cls: type) -> str:
    """Return the aggregate type of a mapped class: ``__strangler_aggregate__`` or its snake_case name."""
    explicit = getattr(cls, "__strangler_aggregate__", None)
    if explicit:
        return str(explicit)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


def _entity_fields(entity: Any) -> tuple[str, str, dict[str, Any]]:
    """Return (aggregatetype, aggregateid, column values) of a flushed entity.

    Values come from the loaded state, never from a lazy load: emitting must
    not issue a SELECT. Attributes never set on a new object are NULL (None);
    attributes not loaded (deferred, or server defaults expired after the
    INSERT) are left out; ``eager_defaults=True`` on a mapper brings the latter in.
    """
    state = inspect(entity)
    mapper = state.mapper
    cls_name = mapper.class_.__name__
    if state.key is not None:
        identity = state.key[1]
    else:
        identity = tuple(state.dict.get(mapper.get_property_by_column(c).key) for c in mapper.primary_key)
    if any(part is None for part in identity):
        raise EmitError(
            f"{cls_name} has no primary key at commit: add it to the session before the "
            "transaction commits (emit reads the key after the INSERT)"
        )
    values: dict[str, Any] = {}
    expired = state.expired_attributes
    for attr in mapper.column_attrs:
        if attr.key in state.dict:
            value = state.dict[attr.key]
        elif attr.key in expired or attr.deferred:
            continue  # reading it would SELECT
        else:
            value = None  # never set on a new object: the column holds NULL
        try:
            codec.to_jsonable(value, f"{cls_name}.{attr.key}")
        except codec.UnserializableValue as exc:
            raise EmitError(str(exc)) from None
        values[attr.key] = value
    aggregateid = ":".join(str(part) for part in identity)
    if len(aggregateid) > AGGREGATE_MAX:
        raise EmitError(
            f"{cls_name}'s primary key is {len(aggregateid)} characters, more than the outbox's aggregate id "
            f"holds ({AGGREGATE_MAX}): pass key= with a shorter id of it"
        )
    return aggregate_type_of(mapper.class_), aggregateid, values


def _row(pending: _PendingEvent) -> dict[str, Any]:
    conf = settings.current()
    if pending.entity is not None:
        aggregatetype, aggregateid, values = _entity_fields(pending.entity)
        if pending.aggregate:
            aggregatetype = pending.aggregate
        if pending.key is not None:
            aggregateid = pending.key
    else:
        aggregatetype = pending.aggregate
        aggregateid = pending.key if pending.key is not None else pending.aggregate
        values = {}
    if pending.data:
        values.update(pending.data)
    plaintext = codec.dumps(values, pending.type)
    content_type, payload = JSON_CONTENT_TYPE, plaintext
    if conf.sealer is not None:
        attributes = {
            "id": pending.id,
            "type": pending.type,
            "source": conf.source,
            "subject": aggregateid,
            "time": format_time(pending.time),
        }
        content_type, payload = conf.sealer.seal(attributes, plaintext)
    return {
        "id": pending.id,
        "aggregatetype": aggregatetype,
        "aggregateid": aggregateid,
        "type": pending.type,
        "payload": payload,
        "timestamp": pending.time,
        "tracingspancontext": join_span_context(pending.traceparent, pending.tracestate),
        "source": conf.source,
        "content_type": content_type,
        "headers": dict(pending.headers) if pending.headers else None,
        "lease_partition": partition_for(aggregatetype, aggregateid),
        "attempts": 0,
    }


# -- Session: queue at the call, write at commit -----------------------------------------


def _queue(session: Session, pending: _PendingEvent) -> None:
    pending.owner = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_PENDING, []).append(pending)


def pending_entities(session: Session) -> list[Any]:
    """The entities of the events ``emit`` has queued in ``session``'s transaction, not yet written."""
    return [pending.entity for pending in session.info.get(_PENDING, ()) if pending.entity is not None]


def _write_pending(session: Session) -> None:
    queue = session.info.get(_PENDING)
    if not queue:
        return
    rows = [_row(pending) for pending in queue]  # may raise: nothing written yet
    session.info[_PENDING] = []
    session.connection().execute(insert(_table()), rows)


def _before_commit(session: Session) -> None:
    # Flush first (commit would, next), so every entity has its generated key and
    # the values the transaction leaves it with; then the events go in, last.
    # A savepoint released (the end of a begin_nested() block) fires this too: its events stay
    # queued, for a rollback around it to take back, and go in when the transaction commits.
    if session.info.get(_PENDING) and not session.in_nested_transaction():
        session.flush()
        _write_pending(session)


def _after_rollback(session: Session) -> None:
    """Take back the events of what the database rolled back: a savepoint's own, or all of them.

    A savepoint rolled back (``begin_nested()`` around a write that may fail)
    undoes only what was done inside it, so only the events emitted inside it
    go; the events of the changes around it stay, to be written at commit.
    While the database rolls a savepoint back it is still the session's
    innermost nested transaction; with none, the whole transaction went.
    """
    _take_back(session, session.get_nested_transaction())
    if session.info.get(_TRACKED):
        session.info[_TRACKED] = {}


def _after_soft_rollback(session: Session, previous: Any) -> None:
    # Session.rollback() and a savepoint's rollback() also end here, after the database's.
    _take_back(session, previous)


def _take_back(session: Session, rolled_back: Any) -> None:
    queue = session.info.get(_PENDING)
    if queue:
        session.info[_PENDING] = [pending for pending in queue if not _within(pending.owner, rolled_back)]


def _within(owner: Any, rolled_back: Any) -> bool:
    """True when ``owner`` is ``rolled_back`` or a transaction inside it (None, or the outermost, holds all)."""
    if rolled_back is None or rolled_back.parent is None:
        return True
    while owner is not None:
        if owner is rolled_back:
            return True
        owner = owner.parent
    return False


def _after_transaction_end(session: Session, transaction: Any) -> None:
    # The outermost transaction is over (committed, rolled back, or the session closed): whatever is
    # still queued belongs to no transaction now and must never reach a later one.
    if transaction.parent is None and session.info.get(_PENDING):
        session.info[_PENDING] = []


# -- An entity with no name: session.add(StockLevel(...)) --------------------------------


def track_added(session: Any, cls: type) -> None:
    """Remember the first instance of ``cls`` that ``session`` attaches from now on, for ``added``.

    Goes right before ``session.add(Cls(...))``, an object built in the call
    that no name holds, so that the line after the add can emit it::

        track_added(db.session, StockLevel)
        db.session.add(StockLevel(product_id=product_id, on_hand=quantity))
        emit(db.session, "shop.stock_level.created", added(db.session, StockLevel))

    The add attaches its argument before the objects it cascades to, and a
    constructor that adds the object itself attaches it earlier still, so the
    first ``cls`` attached since this call is the object of the add. Tracking
    the same class again starts over.
    """
    _session_of(session).info.setdefault(_TRACKED, {})[cls] = None


def added(session: Any, cls: type) -> Any:
    """Return the instance of ``cls`` that ``session`` attached first since ``track_added(session, cls)``.

    Raises ``EmitError`` when the session attached no ``cls`` since then (the
    object was in the session already, so ``add`` attached nothing), or when
    nothing tracks ``cls``: emitting some other object would be a wrong event.
    """
    tracked = _session_of(session).info.get(_TRACKED)
    if not tracked or cls not in tracked:
        raise EmitError(f"added(session, {cls.__name__}): call track_added(session, {cls.__name__}) before the add")
    instance = tracked.pop(cls)
    if instance is None:
        raise EmitError(
            f"added(session, {cls.__name__}): the session attached no {cls.__name__} since track_added(); "
            "an object already in the session is not attached again: emit it by its name"
        )
    return instance


def _session_of(target: Any) -> Session:
    if isinstance(target, scoped_session):
        target = target()
    if not isinstance(target, Session):
        raise EmitError(f"a SQLAlchemy Session or scoped session is needed, not {target.__class__.__name__}")
    return target


def _after_attach(session: Session, instance: Any) -> None:
    tracked = session.info.get(_TRACKED)
    if tracked:
        for cls, found in tracked.items():
            if found is None and isinstance(instance, cls):
                tracked[cls] = instance


# Registered once on the Session class rather than per session: a per-session
# listen() costs more than the rest of emit together. Sessions that never emit
# pay one dict lookup per commit and rollback, and one per object they attach.
sa_event.listen(Session, "before_commit", _before_commit)
sa_event.listen(Session, "after_rollback", _after_rollback)
sa_event.listen(Session, "after_soft_rollback", _after_soft_rollback)
sa_event.listen(Session, "after_transaction_end", _after_transaction_end)
sa_event.listen(Session, "after_attach", _after_attach)


# -- DB-API connections: legacy modules with a raw cursor ---------------------------------


def _write_dbapi(connection: Any, rows: list[dict[str, Any]]) -> None:
    import json

    table = _table()
    columns = list(rows[0])
    # engine.raw_connection() hands out a pool proxy; the driver is the connection inside it.
    driver = type(getattr(connection, "dbapi_connection", None) or connection).__module__
    placeholder = "?" if driver.startswith("sqlite3") else "%s"
    quote = "`" if "mysql" in driver.lower() else '"'
    sql = "INSERT INTO {t} ({c}) VALUES ({p})".format(
        t=table.name,
        c=", ".join(f"{quote}{c}{quote}" for c in columns),
        p=", ".join([placeholder] * len(columns)),
    )

    def convert(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
        if isinstance(value, dict):
            return json.dumps(value)
        return value

    cursor = connection.cursor()
    try:
        for row in rows:
            cursor.execute(sql, [convert(row[c]) for c in columns])
    finally:
        cursor.close()
