"""Before/after pairs for writes a review found missed or wrongly rewritten: module-qualified and
Flask-SQLAlchemy constructs, DML through ``scalar``/``scalars``, driver SQL and scripts, ``while``
headers, AUTOCOMMIT connections and ``AsyncSession``."""

from __future__ import annotations

import pytest

from .helpers import assert_codemod


def decisions(result):
    return [s for s in result.sites if s.action == "decide"]


def test_statements_of_sqlalchemy_imported_as_a_module_are_writes_and_its_select_is_not(tmp_path):
    assert_codemod(tmp_path, '''
        import sqlalchemy as sa
        from sqlalchemy.orm import Session

        from .models import Order


        def close(session: Session, order_id):
            session.execute(sa.update(Order).where(Order.id == order_id).values(status="closed"))
            session.execute(sa.insert(Order).values(status="new"))
            session.execute(sa.delete(Order).where(Order.status == "void"))
            session.execute(sa.text("DELETE FROM orders WHERE status = 'gone'"))
            session.execute(sa.select(Order))
            session.commit()
    ''', '''
        import sqlalchemy as sa
        from sqlalchemy.orm import Session

        from .models import Order
        from outbox import emit


        def close(session: Session, order_id):
            session.execute(sa.update(Order).where(Order.id == order_id).values(status="closed"))
            emit(session, "app.order.updated", aggregate="order", key=order_id, data={"status": "closed"})
            session.execute(sa.insert(Order).values(status="new"))
            emit(session, "app.order.created", aggregate="order", data={"status": "new"})
            session.execute(sa.delete(Order).where(Order.status == "void"))
            emit(session, "app.order.deleted", aggregate="order")
            session.execute(sa.text("DELETE FROM orders WHERE status = 'gone'"))
            emit(session, "app.order.deleted", aggregate="order")
            session.execute(sa.select(Order))
            session.commit()
    ''')


def test_flask_sqlalchemy_re_exported_constructs_are_writes_and_its_select_is_not(tmp_path):
    assert_codemod(tmp_path, '''
        from .models import db, Order


        def close(order_id):
            db.session.execute(db.update(Order).where(Order.id == order_id).values(status="closed"))
            db.session.execute(db.insert(Order))
            db.session.execute(db.delete(Order))
            db.session.execute(db.text("UPDATE orders SET status = 'open'"))
            db.session.execute(db.select(Order))
            db.session.commit()
    ''', '''
        from .models import db, Order
        from outbox import emit


        def close(order_id):
            db.session.execute(db.update(Order).where(Order.id == order_id).values(status="closed"))
            emit(db.session, "app.order.updated", aggregate="order", key=order_id, data={"status": "closed"})
            db.session.execute(db.insert(Order))
            emit(db.session, "app.order.created", aggregate="order")
            db.session.execute(db.delete(Order))
            emit(db.session, "app.order.deleted", aggregate="order")
            db.session.execute(db.text("UPDATE orders SET status = 'open'"))
            emit(db.session, "app.order.updated", aggregate="order")
            db.session.execute(db.select(Order))
            db.session.commit()
    ''')


def test_dml_through_scalar_and_scalars_is_a_write_and_a_select_is_not(tmp_path):
    assert_codemod(tmp_path, '''
        from sqlalchemy import insert, select
        from sqlalchemy.orm import Session

        from .models import Order


        def place(session: Session, rows):
            order_id = session.scalar(insert(Order).values(status="new").returning(Order.id))
            session.scalars(insert(Order).returning(Order), rows)
            first = session.scalar(select(Order))
            session.commit()
            return order_id, first
    ''', '''
        from sqlalchemy import insert, select
        from sqlalchemy.orm import Session

        from .models import Order
        from outbox import emit


        def place(session: Session, rows):
            order_id = session.scalar(insert(Order).values(status="new").returning(Order.id))
            emit(session, "app.order.created", aggregate="order", data={"status": "new"})
            session.scalars(insert(Order).returning(Order), rows)
            emit(session, "app.order.created", aggregate="order")
            first = session.scalar(select(Order))
            session.commit()
            return order_id, first
    ''')


def test_driver_sql_and_a_connection_with_execution_options_are_writes(tmp_path):
    assert_codemod(tmp_path, '''
        from sqlalchemy import Engine, update

        from .models import Order


        def purge(engine: Engine):
            with engine.connect().execution_options(stream_results=False) as conn:
                conn.execute(update(Order).values(status="old"))
                conn.exec_driver_sql("DELETE FROM orders WHERE status = 'old'")
                conn.exec_driver_sql("SELECT * FROM orders")
                conn.commit()
    ''', '''
        from sqlalchemy import Engine, update

        from .models import Order
        from outbox import emit


        def purge(engine: Engine):
            with engine.connect().execution_options(stream_results=False) as conn:
                conn.execute(update(Order).values(status="old"))
                emit(conn, "app.order.updated", aggregate="order", data={"status": "old"})
                conn.exec_driver_sql("DELETE FROM orders WHERE status = 'old'")
                emit(conn, "app.order.deleted", aggregate="order")
                conn.exec_driver_sql("SELECT * FROM orders")
                conn.commit()
    ''')


def test_a_sqlite3_script_with_dml_is_found_and_needs_a_decision(tmp_path):
    # executescript() commits the pending transaction first and runs the script in autocommit.
    source = '''
        import sqlite3


        def reset(path):
            connection = sqlite3.connect(path)
            cursor = connection.cursor()
            cursor.executescript("CREATE TABLE IF NOT EXISTS t (a); DELETE FROM orders;")
            connection.executescript("SELECT 1; UPDATE orders SET status = 'a'")
            connection.executescript("CREATE TABLE u (a); SELECT 1")
            connection.commit()
    '''
    result = assert_codemod(tmp_path, source, source)
    assert [(s.kind, s.event_type, s.action) for s in result.sites] == [
        ("dbapi", "app.order.deleted", "decide"), ("dbapi", "app.order.updated", "decide")]
    assert all("executescript() commits the pending transaction first" in s.reason for s in result.sites)


def test_a_write_in_a_while_header_needs_a_decision(tmp_path):
    source = '''
        from sqlalchemy import delete

        from .models import db, Order


        def purge():
            while db.session.execute(delete(Order).where(Order.status == "void").limit(100)).rowcount:
                db.session.commit()
    '''
    result = assert_codemod(tmp_path, source, source)
    [site] = decisions(result)
    assert site.kind == "execute" and "while header, which runs once per iteration" in site.reason


@pytest.mark.parametrize("engine, setup", [
    ('engine = create_engine("sqlite://", isolation_level="AUTOCOMMIT")', ""),
    ('engine = create_engine("sqlite://").execution_options(isolation_level="AUTOCOMMIT")', ""),
    ('engine = create_engine("sqlite://")', 'conn.execution_options(isolation_level="AUTOCOMMIT")'),
])
def test_a_core_connection_in_autocommit_needs_a_decision(tmp_path, engine, setup):
    source = f'''
        from sqlalchemy import create_engine, update

        from .models import Order

        {engine}


        def close():
            with engine.connect() as conn:
                {setup}
                conn.execute(update(Order).values(status="closed"))
                conn.commit()
    '''
    result = assert_codemod(tmp_path, source, source)
    [site] = decisions(result)
    assert site.kind == "execute" and 'isolation_level="AUTOCOMMIT"' in site.reason


def test_a_core_connection_with_other_options_is_rewritten(tmp_path):
    assert_codemod(tmp_path, '''
        from sqlalchemy import create_engine, update

        from .models import Order

        engine = create_engine("sqlite://", isolation_level="SERIALIZABLE")


        def close():
            with engine.connect() as conn:
                conn.execution_options(isolation_level="READ COMMITTED")
                conn.execute(update(Order).values(status="closed"))
                conn.commit()
    ''', '''
        from sqlalchemy import create_engine, update

        from .models import Order
        from outbox import emit

        engine = create_engine("sqlite://", isolation_level="SERIALIZABLE")


        def close():
            with engine.connect() as conn:
                conn.execution_options(isolation_level="READ COMMITTED")
                conn.execute(update(Order).values(status="closed"))
                emit(conn, "app.order.updated", aggregate="order", data={"status": "closed"})
                conn.commit()
    ''')


def test_an_async_session_emits_with_its_sync_session(tmp_path):
    assert_codemod(tmp_path, '''
        from sqlalchemy import update
        from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

        from .models import Order, User

        Factory = async_sessionmaker()


        async def sign_up(engine, name):
            async with AsyncSession(engine) as s:
                user = User(name=name)
                s.add(user)
                await s.commit()


        async def close(session: AsyncSession):
            await session.execute(update(Order).values(status="closed"))
            await session.commit()


        async def rename(user_id, name):
            async with Factory() as s:
                user = await s.get(User, user_id)
                await s.delete(user)
                await s.commit()
    ''', '''
        from sqlalchemy import update
        from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

        from .models import Order, User
        from outbox import emit

        Factory = async_sessionmaker()


        async def sign_up(engine, name):
            async with AsyncSession(engine) as s:
                user = User(name=name)
                s.add(user)
                emit(s.sync_session, "app.user.created", user)
                await s.commit()


        async def close(session: AsyncSession):
            await session.execute(update(Order).values(status="closed"))
            emit(session.sync_session, "app.order.updated", aggregate="order", data={"status": "closed"})
            await session.commit()


        async def rename(user_id, name):
            async with Factory() as s:
                user = await s.get(User, user_id)
                await s.delete(user)
                emit(s.sync_session, "app.user.deleted", user)
                await s.commit()
    ''')
