"""Sessions handed out by a context manager, a bulk save, and HTTP clients named like sessions."""

from contextlib import contextmanager

import aiohttp
import requests
from sqlalchemy.orm import sessionmaker

from .db import engine
from .models import Order, OrderLine

Session = sessionmaker(bind=engine)


@contextmanager
def session_scope():
    session = Session()
    try:
        yield session
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


def open_order():
    with session_scope() as s:
        order = Order(status="new")
        s.add(order)  # expect: session-add


def import_lines(skus):
    lines = [OrderLine(sku=sku) for sku in skus]
    with session_scope() as s:
        s.bulk_save_objects(lines)  # expect: session-bulk


def close_order(order_id):
    with session_scope() as s:
        s.query(Order).filter_by(id=order_id).delete()  # expect: query-bulk


def drop_order(order_id, really):
    with session_scope() as s:
        order = s.get(Order, order_id)
        really and s.delete(order)  # expect: session-delete


def forget(url, session: requests.Session):
    session.delete(url)


async def forget_later(url, session: aiohttp.ClientSession):
    await session.delete(url)
