"""A pytest plugin for the rewritten sample monolith's own test run: a ledger of transactions.

Loaded into that run with ``-p tests.codemods.ledger_plugin``. For every DB
transaction that commits through a SQLAlchemy engine it records the business
writes the shop's code makes (INSERT/UPDATE/DELETE, classified by ``codemods.sql``;
a test's own fixture SQL and schema migrations are not the app changing state)
and the outbox rows written in it, and saves the ledger to ``$STRANGLER_LEDGER`` at the end. It also
switches on the flush-time capture of implicit updates for every model, as an app
would at start-up (docs/codemods.md).
"""

from __future__ import annotations

import json
import os
import sys

from sqlalchemy import event
from sqlalchemy.engine import Engine

from codemods import sql

OUTBOX = "strangler_outbox"
_ledger: list[dict] = []


def _record(conn):
    return conn.info.setdefault("strangler.ledger", {"writes": [], "events": []})


@event.listens_for(Engine, "before_cursor_execute")
def _before_cursor_execute(conn, cursor, statement, parameters, context, executemany):
    dml = sql.classify(statement)
    if dml is None:
        return
    record = _record(conn)
    if dml.table == OUTBOX:
        for params in (context.compiled_parameters if context is not None else []):
            record["events"].append([params["type"], params["aggregatetype"], params["aggregateid"],
                                     bytes(params["payload"]).decode("utf-8", "replace")])
    elif dml.table == "alembic_version" or dml.table.startswith("_alembic_tmp_"):
        record["migration"] = True  # a schema migration, not the app changing state
    elif not dml.table.startswith(OUTBOX) and _from_the_app():
        record["writes"].append([dml.keyword, dml.table])


def _from_the_app() -> bool:
    """True when the shop's code (not a test's own fixture SQL) issued the statement."""
    frame = sys._getframe(2)
    while frame is not None:
        if f"{os.sep}shop{os.sep}" in frame.f_code.co_filename and "sample_monolith" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


@event.listens_for(Engine, "commit")
def _commit(conn):
    record = conn.info.pop("strangler.ledger", None)
    if record and (record["writes"] or record["events"]) and not record.get("migration"):
        _ledger.append(record)


@event.listens_for(Engine, "rollback")
def _rollback(conn):
    conn.info.pop("strangler.ledger", None)


def pytest_configure(config):
    from outbox.capture import capture_updates
    from sample_monolith.shop.database import db

    capture_updates(db.Model, prefix=os.environ.get("STRANGLER_PREFIX", "shop"))


def pytest_sessionfinish(session, exitstatus):
    with open(os.environ["STRANGLER_LEDGER"], "w") as handle:
        json.dump(_ledger, handle)
