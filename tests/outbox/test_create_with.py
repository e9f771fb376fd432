"""``create_with``: ``create_all()`` of an app's MetaData makes the outbox, which stays out of that MetaData."""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, Table, create_engine, inspect

from outbox.table import create_with, get_outbox_table


def test_create_all_and_drop_all_take_the_outbox_along(sqlite_url):
    app = MetaData()
    Table("orders", app, Column("id", Integer, primary_key=True))
    create_with(app)
    create_with(app)  # idempotent
    engine = create_engine(sqlite_url)
    app.create_all(engine)
    outbox_tables = set(get_outbox_table().metadata.tables)  # the outbox, its leases, its relays
    assert {"strangler_outbox", "strangler_outbox_leases"} <= outbox_tables
    assert set(inspect(engine).get_table_names()) == {"orders"} | outbox_tables
    assert set(app.tables) == {"orders"}
    app.drop_all(engine)
    assert inspect(engine).get_table_names() == []
    engine.dispose()
