from collections import deque
from typing import Iterable

import requests
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from .models import Bin, Item, Warehouse


class ItemRepository:
    """The repository pattern: a session injected, the caller's unit of work commits."""

    def __init__(self, session: Session):
        self.session = session
        self.recent = deque(maxlen=10)

    def get(self, item_id: int) -> Item:
        return self.session.get(Item, item_id)

    def add(self, item: Item) -> None:
        self.session.add(item)  # expect: session-add
        self.recent.append(item.sku)

    def add_many(self, items: Iterable[Item]) -> None:
        self.session.add_all(items)  # expect: session-add

    def remove(self, item: Item) -> None:
        self.session.delete(item)  # expect: session-delete
        self.recent.remove(item.sku)

    def restock(self, item_id: int, amount: int) -> None:
        stmt = update(Item).where(Item.id == item_id).values(quantity=Item.quantity + amount)
        self.session.execute(stmt)  # expect: execute

    def clear_bin(self, bin_id: int) -> None:
        self.session.execute(delete(Item).where(Item.bin_id == bin_id))  # expect: execute

    def import_rows(self, rows):
        self.session.execute(insert(Item), rows)  # expect: execute
        self.session.bulk_insert_mappings(Item, rows)  # expect: session-bulk

    def skus(self):
        return self.session.scalars(select(Item.sku)).all()


class BinRepository:
    def __init__(self, session):
        self.session = session

    def create(self, warehouse: Warehouse, name: str) -> Bin:
        new_bin = Bin(warehouse=warehouse)
        self.session.add(new_bin)  # expect: session-add
        return new_bin

    def move(self, item: Item, target: Bin) -> None:
        target.items.append(item)  # expect: collection


class SupplierClient:
    """HTTP, not SQL: its session deletes URLs."""

    def __init__(self, base_url: str):
        self.session = requests.Session()
        self.base_url = base_url

    def cancel(self, order_ref: str) -> None:
        self.session.delete(f"{self.base_url}/orders/{order_ref}")

    def add_header(self, name, value):
        self.session.headers.update({name: value})
