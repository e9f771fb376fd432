"""emit with ``engine.raw_connection()``, the DB-API connection legacy report modules use."""

from __future__ import annotations

from sqlalchemy import create_engine, func, select

from outbox import emit, outbox_table
from outbox import migrate as outbox_migrate


def test_emit_on_a_pooled_raw_connection_commits_with_it(database_url):
    outbox_migrate.upgrade(outbox_migrate.standalone_config(database_url))
    engine = create_engine(database_url)
    conn = engine.raw_connection()
    try:
        emit(conn, "shop.daily_sales.deleted", aggregate="daily_sales", data={"day": "2024-01-01"})
        conn.rollback()
        emit(conn, "shop.daily_sales.deleted", aggregate="daily_sales", data={"day": "2024-01-02"})
        conn.commit()
    finally:
        conn.close()
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(outbox_table)).scalar() == 1
    engine.dispose()
