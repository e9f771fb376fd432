import queue
from collections import defaultdict

from sqlalchemy import text

from .db import db_session, engine, remove, save, shipments
from .models import Order, OrderLine

work = queue.Queue()


def build_status_update(status):
    return shipments.update().values(status=status)


def ship(order_id, shipment_id):
    with engine.begin() as conn:
        conn.execute(shipments.insert().values(id=shipment_id, status="new"))  # expect: execute
        conn.execute(text("UPDATE orders SET status = 'shipped' WHERE id = :id"), {"id": order_id})  # expect: execute
        conn.execute(text("SELECT 1"))


def set_status(status):
    stmt = shipments.update().values(status=status)
    with engine.connect() as conn:
        conn.execute(stmt)  # expect: execute
        conn.commit()


def place(skus):
    order = Order(status="new")
    order.lines.extend(OrderLine(sku=s) for s in skus)
    save(order)  # expect: wrapper-call
    work.put(order.id)


def add_line(order_id, sku):
    order = db_session.get(Order, order_id)
    order.lines.append(OrderLine(sku=sku))  # expect: collection
    db_session.commit()


def cancel(order_id):
    order = db_session.query(Order).get(order_id)
    remove(order)  # expect: wrapper-call
    grouped = defaultdict(list)
    grouped["x"].append(order_id)
