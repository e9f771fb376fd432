"""A writer process for the concurrency tests: N business transactions, each with one emit."""

from __future__ import annotations

import decimal

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from outbox import emit
from tests.outbox.models import Order


def write_orders(url: str, writer: int, count: int) -> list[str]:
    """Commit ``count`` orders, each with its ``shop.order.created`` event; return the event ids."""
    engine = create_engine(url)
    ids = []
    try:
        for i in range(count):
            with Session(engine) as session, session.begin():
                order = Order(total=decimal.Decimal(f"{writer}.{i % 100:02d}"))
                session.add(order)
                ids.append(emit(session, "shop.order.created", order, data={"writer": writer, "n": i}))
    finally:
        engine.dispose()
    return ids
