"""SQLAlchemy's asyncio Core is treated as its sync twin: an ``AsyncConnection`` write is found with
the same kind, action and aggregate as the ``Connection`` write it mirrors, and gets
``await conn.run_sync(emit, ...)`` where the ``Connection`` gets ``emit(conn, ...)``.

Why ``run_sync``: emit writes through a ``Connection`` at once (docs/outbox.md). An async driver
does IO only inside ``run_sync``, which calls ``emit`` with the ``Connection`` it drives, in the
same transaction; ``emit(conn.sync_connection, ...)`` passes emit's type check and then raises
``MissingGreenlet``, and ``emit(conn, ...)`` is refused (``EmitError``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import textwrap

import pytest

from outbox.testing.services import require_module

from .helpers import MODELS, assert_codemod, run_on, write_tree

TABLES = '''
from sqlalchemy import Column, Integer, MetaData, Table

metadata = MetaData()
lines = Table("lines", metadata, Column("id", Integer, primary_key=True), Column("order_id", Integer))
'''

SYNC = '''
from sqlalchemy import Connection, Engine, create_engine, insert, text, update

from .models import Order
from .tables import lines

engine = create_engine("sqlite://")


def close_order(order_id):
    with engine.begin() as conn:
        conn.execute(update(Order).where(Order.id == order_id).values(status="closed"))


def add_line(conn: Connection, order_id):
    conn.execute(insert(lines).values(order_id=order_id))


def purge(engine: Engine):
    with engine.connect() as conn:
        conn.execute(text("DELETE FROM orders WHERE status = 'void'"))
        conn.exec_driver_sql("UPDATE lines SET order_id = 0")
        conn.commit()
'''

ASYNC = '''
from sqlalchemy import insert, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .models import Order
from .tables import lines

engine = create_async_engine("sqlite+aiosqlite://")


async def close_order(order_id):
    async with engine.begin() as conn:
        await conn.execute(update(Order).where(Order.id == order_id).values(status="closed"))


async def add_line(conn: AsyncConnection, order_id):
    await conn.execute(insert(lines).values(order_id=order_id))


async def purge(engine: AsyncEngine):
    async with engine.connect() as conn:
        await conn.execute(text("DELETE FROM orders WHERE status = 'void'"))
        await conn.exec_driver_sql("UPDATE lines SET order_id = 0")
        await conn.commit()
'''


def scan(tmp_path, source):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/tables.py": TABLES, "app/code.py": source})
    return run_on(tmp_path, "app/code.py", rewrite=False).sites


def summary(sites):
    """What a site is, apart from where it is."""
    return [(s.function, s.kind, s.aggregate, s.action, s.event_type, s.commit_visible, s.confidence)
            for s in sites]


def test_async_core_writes_are_found_like_their_sync_twins(tmp_path):
    found = scan(tmp_path / "async", ASYNC)
    assert summary(found) == summary(scan(tmp_path / "sync", SYNC))
    assert [(s.function, s.kind, s.event_type, s.action) for s in found] == [
        ("close_order", "execute", "app.order.updated", "rewrite"),
        ("add_line", "execute", "app.lines.created", "rewrite"),
        ("purge", "execute", "app.order.deleted", "rewrite"),
        ("purge", "execute", "app.lines.updated", "rewrite"),
    ]


def test_an_async_core_write_gets_an_awaited_run_sync_emit_and_a_second_rewrite_changes_nothing(tmp_path):
    result = assert_codemod(tmp_path, ASYNC, '''
        from sqlalchemy import insert, text, update
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

        from .models import Order
        from .tables import lines
        from outbox import emit

        engine = create_async_engine("sqlite+aiosqlite://")


        async def close_order(order_id):
            async with engine.begin() as conn:
                await conn.execute(update(Order).where(Order.id == order_id).values(status="closed"))
                await conn.run_sync(emit, "app.order.updated", aggregate="order", key=order_id, data={"status": "closed"})


        async def add_line(conn: AsyncConnection, order_id):
            await conn.execute(insert(lines).values(order_id=order_id))
            await conn.run_sync(emit, "app.lines.created", aggregate="lines", data={"order_id": order_id})


        async def purge(engine: AsyncEngine):
            async with engine.connect() as conn:
                await conn.execute(text("DELETE FROM orders WHERE status = 'void'"))
                await conn.run_sync(emit, "app.order.deleted", aggregate="order")
                await conn.exec_driver_sql("UPDATE lines SET order_id = 0")
                await conn.run_sync(emit, "app.lines.updated", aggregate="lines")
                await conn.commit()
    ''', extra={"app/tables.py": TABLES})
    compile((tmp_path / "app/code.py").read_text(), "app/code.py", "exec")
    assert len(result.sites) == 4


WRITE = 'await conn.execute(update(Order).values(status="closed"))'


@pytest.mark.parametrize("params, body", [
    ("", f"async with engine.begin() as conn:\n    {WRITE}"),
    ("", f"async with engine.connect() as conn:\n    {WRITE}\n    await conn.commit()"),
    ("", f"conn = await engine.connect()\n{WRITE}"),
    ("", f"async with engine.execution_options(isolation_level='SERIALIZABLE').begin() as conn:\n    {WRITE}"),
    ("db: AsyncEngine", f"async with db.begin() as conn:\n    {WRITE}"),
    ("conn: AsyncConnection", WRITE),
    ("conn: sa_asyncio.AsyncConnection", WRITE),
    ('conn: "AsyncConnection"', WRITE),
    ("session: AsyncSession", f"conn = await session.connection()\n{WRITE}"),
    ("session", f"conn = await session.connection()\n{WRITE}"),  # unannotated: the await tells
])
def test_every_way_to_an_async_connection_gets_the_run_sync_emit(tmp_path, params, body):
    source = textwrap.dedent('''
        import sqlalchemy.ext.asyncio as sa_asyncio
        from sqlalchemy import update
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

        from .models import Order

        engine = create_async_engine("sqlite+aiosqlite://")


    ''') + f"async def close({params}):\n" + textwrap.indent(body, "    ") + "\n"
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": source})
    result = run_on(tmp_path, "app/code.py", write=True)
    [site] = result.sites
    assert (site.kind, site.action) == ("execute", "rewrite")
    rewritten = (tmp_path / "app/code.py").read_text()
    assert 'await conn.run_sync(emit, "app.order.updated", aggregate="order", data={"status": "closed"})' in rewritten
    compile(rewritten, "app/code.py", "exec")


def test_async_reads_are_not_sites_and_the_write_among_them_is(tmp_path):
    source = '''
        from sqlalchemy import delete, select, text
        from sqlalchemy.ext.asyncio import AsyncConnection

        from .models import Order


        async def report(conn: AsyncConnection):
            await conn.execute(select(Order))
            await conn.scalars(select(Order.id))
            await conn.execute(text("SELECT * FROM orders WHERE status = 'DELETE'"))
            await conn.exec_driver_sql("SELECT count(*) FROM orders")
            result = await conn.stream(select(Order))
            ids = await conn.stream_scalars(select(Order.id))
            await conn.execute(delete(Order).where(Order.status == "void"))
            return result, ids
    '''
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": source})
    result = run_on(tmp_path, "app/code.py", rewrite=False)
    assert [(s.code, s.action) for s in result.sites] == [
        ('conn.execute(delete(Order).where(Order.status == "void"))', "rewrite")]


@pytest.mark.parametrize("engine, setup", [
    ('engine = create_async_engine("sqlite+aiosqlite://", isolation_level="AUTOCOMMIT")', ""),
    ('engine = create_async_engine("sqlite+aiosqlite://").execution_options(isolation_level="AUTOCOMMIT")', ""),
    ('engine = create_async_engine("sqlite+aiosqlite://")',
     'await conn.execution_options(isolation_level="AUTOCOMMIT")'),
])
def test_an_async_connection_in_autocommit_needs_a_decision(tmp_path, engine, setup):
    source = f'''
        from sqlalchemy import update
        from sqlalchemy.ext.asyncio import create_async_engine

        from .models import Order

        {engine}


        async def close():
            async with engine.connect() as conn:
                {setup}
                await conn.execute(update(Order).values(status="closed"))
                await conn.commit()
    '''
    [site] = assert_codemod(tmp_path, source, source).sites
    assert (site.kind, site.action) == ("execute", "decide")
    assert 'isolation_level="AUTOCOMMIT"' in site.reason


def test_an_async_connection_write_outside_an_async_function_needs_a_decision(tmp_path):
    # A plain def cannot await the emit; the coroutine it returns is awaited somewhere else.
    source = '''
        from sqlalchemy import update
        from sqlalchemy.ext.asyncio import AsyncConnection

        from .models import Order


        def close(conn: AsyncConnection):
            pending = conn.execute(update(Order).values(status="closed"))
            return pending
    '''
    [site] = assert_codemod(tmp_path, source, source).sites
    assert (site.kind, site.action) == ("execute", "decide")
    assert "only an `async def`" in site.reason


def test_the_inserted_emit_commits_and_rolls_back_with_the_async_write(tmp_path):
    """The rewritten code runs on aiosqlite: one event for the committed write, none for the rolled back one."""
    require_module("greenlet", "test")
    require_module("aiosqlite", "test")
    from sqlalchemy import create_engine, select

    from outbox.table import get_outbox_table

    source = '''
        from sqlalchemy import Column, Integer, MetaData, String, Table, update
        from sqlalchemy.ext.asyncio import AsyncConnection

        metadata = MetaData()
        orders = Table("orders", metadata, Column("id", Integer, primary_key=True), Column("status", String))


        async def close(conn: AsyncConnection, status):
            await conn.execute(update(orders).values(status=status))
    '''
    write_tree(tmp_path, {"app/code.py": source})
    run_on(tmp_path, "app/code.py", write=True)
    assert "await conn.run_sync(emit," in (tmp_path / "app/code.py").read_text()
    spec = importlib.util.spec_from_file_location("rewritten_async_core", tmp_path / "app/code.py")
    code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code)
    url = f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}"
    outbox = get_outbox_table()

    async def run():
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(code.metadata.create_all)
            await conn.run_sync(outbox.metadata.create_all)
        async with engine.begin() as conn:
            await code.close(conn, "closed")
        async with engine.connect() as conn:
            await code.close(conn, "void")
            await conn.rollback()
        await engine.dispose()

    asyncio.run(run())
    engine = create_engine(url.replace("+aiosqlite", ""))
    with engine.connect() as conn:
        assert [tuple(row) for row in conn.execute(select(outbox.c.type, outbox.c.aggregatetype))] == [
            ("app.orders.updated", "orders")
        ]
    engine.dispose()

