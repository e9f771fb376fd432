from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .db import shipments
from .models import Order

async_engine = create_async_engine("sqlite+aiosqlite:///warehouse.db")
seen = set()


async def dispatch(shipment_id):
    async with async_engine.begin() as conn:
        await conn.execute(update(shipments).where(shipments.c.id == shipment_id).values(status="sent"))  # expect: execute
        await conn.execute(select(shipments))
        seen.add(shipment_id)


async def receive(conn: AsyncConnection, shipment_id):
    await conn.execute(insert(shipments).values(id=shipment_id, status="new"))  # expect: execute


async def purge(engine: AsyncEngine):
    async with engine.connect() as conn:
        await conn.execute(text("DELETE FROM orders WHERE status = 'void'"))  # expect: execute
        await conn.exec_driver_sql("UPDATE shipments SET status = 'old'")  # expect: execute
        rows = await conn.stream(select(Order))
        await conn.commit()
        return rows
