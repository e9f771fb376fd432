"""A pytest plugin for the rewritten sample monolith's own test run: a ledger of changes and events.

Loaded into that run with ``-p tests.codemods.ledger_plugin`` (its listeners are
registered when pytest configures the plugin, never on import). For every
transaction that commits on the shop's SQLite database it records each state
change the shop's code made and each outbox row written, and saves the ledger
to ``$STRANGLER_LEDGER`` at the end; ``ledger.unmatched`` then pairs every change
with exactly one event. What one change is (docs/codemods.md, *One change, one event*):

- a row the unit of work writes (``add``, ``delete``, ``merge``, attributes,
  cascades), seen per object through the mapper's ``after_insert``/``after_update``/
  ``after_delete`` events: one change per aggregate and key per transaction,
  however many statements and flushes wrote it. Its event is ``created``/``saved``
  when the row was inserted, ``deleted`` when deleted (both when both), else
  ``updated``/``saved``. A row of a class owned through a ``delete-orphan``
  relationship (an order's lines) is part of its owner's aggregate: the owner's key
  is read from the row's foreign key, and the owner's one event covers it;
- a statement (``execute`` of ``insert``/``update``/``delete`` or DML ``text()``,
  ``Query.update``/``delete``, ``bulk_*`` mappings, a DB-API ``execute``): one change
  per call, however many rows it touched (none included), with its verb; when its
  ``WHERE`` pins the single-column primary key to a parameter, the event must carry
  that key as its aggregate id.

Statements the SQLAlchemy engine runs are seen by its ``before_cursor_execute``
event; those a raw DB-API cursor runs (``engine.raw_connection()``, the legacy
report module), their commits and rollbacks, by SQLite's statement trace, which
also bounds every transaction. A change is the app's when the shop's code is on
the stack; a test's own fixture SQL and schema migrations are not the app
changing state. Outbox rows are events whoever wrote them. The flush-time
capture of implicit updates is switched on for every model, as an app would at
start-up (docs/codemods.md).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapper

from codemods import sql
from codemods.index import snake_case

from .ledger import inserted_values

OUTBOX = "strangler_outbox"
_RECORD = "strangler.ledger"
_ENGINE_RUNNING = "strangler.ledger.engine"
_SEP = os.sep
_ledger: list[dict] = []

# -- recording ---------------------------------------------------------------------------------


class _Origin:
    """Who is on the stack: the shop's code, a unit-of-work flush, and SQLAlchemy's outermost frame."""

    __slots__ = ("app", "flush", "entry")

    def __init__(self) -> None:
        self.app = self.flush = False
        self.entry = None
        frame = sys._getframe(1)
        inside = True  # still in SQLAlchemy's own frames, walking out towards the caller
        while frame is not None:
            name = frame.f_code.co_filename
            if name == __file__:
                pass  # this plugin's own listeners
            elif f"{_SEP}sqlalchemy{_SEP}" in name:
                if inside:
                    self.entry = frame  # the call the app made (session.execute, Query.update, ...)
                if frame.f_code.co_name == "execute" and name.endswith(f"orm{_SEP}unitofwork.py"):
                    self.flush = True
            else:
                inside = False
                if f"{_SEP}shop{_SEP}" in name and "sample_monolith" in name:
                    self.app = True
            frame = frame.f_back


def _record(info: dict) -> dict:
    record = info.get(_RECORD)
    if record is None:
        record = info[_RECORD] = {"rows": {}, "statements": [], "events": {}, "migration": False}
    return record


_tables: dict[str, type] = {}
_owners: dict[Any, list] = {}


def _class_for_table(table: str) -> type | None:
    if not _tables:
        from sample_monolith.shop.database import db

        for mapper in db.Model.registry.mappers:
            if mapper.inherits is None:
                _tables[mapper.local_table.name] = mapper.class_
    return _tables.get(table)


def _aggregate_of_table(table: str) -> str:
    from outbox.emit import aggregate_type_of

    cls = _class_for_table(table)
    return aggregate_type_of(cls) if cls is not None else snake_case(table)


def _owners_of(mapper: Mapper) -> list:
    """(owner mapper, the child's attribute keys that hold the owner's primary key) for each delete-orphan owner."""
    found = _owners.get(mapper)
    if found is None:
        found = []
        for owner in mapper.registry.mappers:
            for rel in owner.relationships:
                if not rel.cascade.delete_orphan or rel.direction.name != "ONETOMANY" or not mapper.isa(rel.mapper):
                    continue
                remote_of = dict(rel.local_remote_pairs)
                columns = [remote_of.get(column) for column in owner.primary_key]
                if all(column is not None for column in columns):
                    found.append((owner, [mapper.get_property_by_column(column).key for column in columns]))
        _owners[mapper] = found
    return found


def _row_change(verb: str):
    def listener(mapper: Mapper, connection, target) -> None:
        if not _Origin().app:
            return
        from outbox.emit import aggregate_type_of

        state = inspect(target)
        if verb == "UPDATE" and not any(state.attrs[p.key].history.has_changes() for p in mapper.column_attrs):
            return  # dirty through a collection only: no UPDATE of this row was issued
        identity = state.key[1] if state.key is not None else mapper.primary_key_from_instance(target)
        key = ":".join(str(part) for part in identity)
        what = f"{verb} {mapper.local_table.name} {key}"
        aggregate, kind = (aggregate_type_of(mapper.class_), key), verb
        for owner, attrs in _owners_of(mapper):
            values = [state.dict.get(a, state.committed_state.get(a)) for a in attrs]
            if all(v is not None for v in values):
                aggregate, kind = (aggregate_type_of(owner.class_), ":".join(str(v) for v in values)), "PART"
                break
        row = _record(connection.info)["rows"].setdefault(aggregate, {"kinds": set(), "what": []})
        row["kinds"].add(kind)
        row["what"].append(what)

    return listener


def _pinned_key(dml: sql.Dml, parameters: Any) -> str | None:
    """The value the statement's ``WHERE <primary key> = <parameter>`` binds, when there is one row of parameters."""
    cls = _class_for_table(dml.table)
    if cls is None or not isinstance(parameters, (tuple, list, dict)):
        return None
    keys = [column.name for column in inspect(cls).local_table.primary_key.columns]
    if len(keys) != 1:
        return None
    for column, token, ordinal in dml.where_equals:
        if column != keys[0]:
            continue
        if isinstance(parameters, dict):
            value = parameters.get(token[1:] if token.startswith(":") else token[2:-2])
        else:
            value = parameters[ordinal] if ordinal < len(parameters) else None
        return None if value is None else str(value)
    return None


def _statement_change(record: dict, dml: sql.Dml, key: str | None, origin: _Origin, text: str) -> None:
    statements = record["statements"]
    if origin.entry is not None and statements and statements[-1]["entry"] is origin.entry:
        return  # more cursor work of the same call (executemany batches, bulk_* groups): one change
    keyword = {"REPLACE": "INSERT", "MERGE": "UPDATE"}.get(dml.keyword, dml.keyword)
    statements.append({"aggregate": _aggregate_of_table(dml.table), "key": key, "change": keyword,
                       "what": " ".join(text.split())[:120], "entry": origin.entry})


def _before_cursor_execute(conn, cursor, statement, parameters, context, executemany):
    conn.info[_ENGINE_RUNNING] = True
    dml = sql.classify(statement)
    if dml is None:
        return
    record = _record(conn.info)
    if dml.table == OUTBOX:
        for params in (context.compiled_parameters if context is not None else []):
            record["events"][params["id"]] = [params["type"], params["aggregatetype"], params["aggregateid"],
                                              params["id"]]
    elif dml.table == "alembic_version" or dml.table.startswith("_alembic_tmp_"):
        record["migration"] = True  # a schema migration, not the app changing state
    elif not dml.table.startswith(OUTBOX):
        origin = _Origin()
        if not origin.app or (origin.flush and _class_for_table(dml.table) is not None):
            return  # not the app's; or a row of the unit of work, recorded per object by the mapper events
        key = None if executemany else _pinned_key(dml, parameters)
        _statement_change(record, dml, key, origin, statement)


def _after_cursor_execute(conn, cursor, statement, parameters, context, executemany):
    conn.info[_ENGINE_RUNNING] = False


def _handle_error(context):
    if context.connection is not None:
        context.connection.info[_ENGINE_RUNNING] = False


def _connect(dbapi_connection, connection_record):
    if isinstance(dbapi_connection, sqlite3.Connection):
        info = connection_record.info
        dbapi_connection.set_trace_callback(lambda statement: _trace(info, statement))


def _trace(info: dict, statement: str) -> None:
    """Every statement SQLite runs on the connection, parameters inlined: commits, rollbacks, raw DB-API."""
    words = statement.split(None, 2)
    head = words[0].upper() if words else ""
    if head in ("COMMIT", "END"):
        _finish(info, committed=True)
        return
    if head == "ROLLBACK" and not (len(words) > 1 and words[1].upper() == "TO"):
        _finish(info, committed=False)
        return
    if info.get(_ENGINE_RUNNING):
        return  # the engine's own statement, recorded with its parameters by before_cursor_execute
    dml = sql.classify(statement)
    if dml is None:
        return
    if dml.table == OUTBOX:
        values = inserted_values(statement)
        record = _record(info)
        for row in values:
            record["events"][row["id"]] = [row["type"], row["aggregatetype"], row["aggregateid"], row["id"]]
    elif not dml.table.startswith(OUTBOX):
        origin = _Origin()
        if origin.app:
            origin.entry = None  # each DB-API execute is its own statement
            _statement_change(_record(info), dml, None, origin, statement)


def _finish(info: dict, committed: bool) -> None:
    record = info.pop(_RECORD, None)
    if not committed or record is None or record["migration"]:
        return
    changes = []
    for (aggregate, key), row in record["rows"].items():
        what = ", ".join(row["what"])
        kinds = row["kinds"]
        for change in ("INSERT", "DELETE"):
            if change in kinds:
                changes.append({"aggregate": aggregate, "key": key, "change": change, "by": "row", "what": what})
        if not kinds & {"INSERT", "DELETE"}:
            changes.append({"aggregate": aggregate, "key": key, "change": "UPDATE", "by": "row", "what": what})
    for statement in record["statements"]:
        changes.append({key: value for key, value in statement.items() if key != "entry"} | {"by": "statement"})
    if changes or record["events"]:
        _ledger.append({"changes": changes, "events": list(record["events"].values())})


def pytest_configure(config):
    from outbox.capture import capture_updates
    from sample_monolith.shop.database import db

    for verb, name in (("INSERT", "after_insert"), ("UPDATE", "after_update"), ("DELETE", "after_delete")):
        event.listen(Mapper, name, _row_change(verb))
    event.listen(Engine, "before_cursor_execute", _before_cursor_execute)
    event.listen(Engine, "after_cursor_execute", _after_cursor_execute)
    event.listen(Engine, "handle_error", _handle_error)
    event.listen(Engine, "connect", _connect)
    capture_updates(db.Model, prefix=os.environ.get("STRANGLER_PREFIX", "shop"))


def pytest_sessionfinish(session, exitstatus):
    with open(os.environ["STRANGLER_LEDGER"], "w") as handle:
        json.dump(_ledger, handle, indent=1)
