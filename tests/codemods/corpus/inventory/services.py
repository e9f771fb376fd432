import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .models import Bin, Item, SessionLocal, Warehouse, engine
from .repositories import ItemRepository

log = logging.getLogger(__name__)
_pending_skus = set()


def receive(sku: str, amount: int) -> None:
    with SessionLocal() as session:
        item = session.scalars(select(Item).where(Item.sku == sku)).one()
        item.quantity += amount  # expect: implicit-update
        item.updated_at = datetime.utcnow()
        session.commit()
    _pending_skus.discard(sku)


def open_warehouse(name: str) -> Warehouse:
    with Session(engine) as session, session.begin():
        warehouse = Warehouse(name=name)
        session.add(warehouse)  # expect: session-add
        session.add(Bin(warehouse=warehouse))  # expect: session-add
    return warehouse


def close_warehouse(warehouse_id: int) -> None:
    session = SessionLocal()
    try:
        warehouse = session.get(Warehouse, warehouse_id)
        session.delete(warehouse)  # expect: session-delete
        session.commit()
    finally:
        session.close()


def zero_out(skus):
    with SessionLocal.begin() as session:
        session.execute(update(Item).where(Item.sku.in_(skus)).values(quantity=0))  # expect: execute


def sync(payload: dict) -> None:
    session = SessionLocal()
    repo = ItemRepository(session)
    item = session.merge(Item(**payload))  # expect: session-merge
    repo.add(item)  # expect: wrapper-call
    session.commit()
    stats = {}
    stats.update(synced=1)
    log.info("synced %s", stats)


def rename_bins(session: Session, warehouse_id: int, prefix: str) -> None:
    for bin_ in session.scalars(select(Bin).where(Bin.warehouse_id == warehouse_id)).all():
        setattr(bin_, "warehouse_id", warehouse_id)  # expect: implicit-update
    session.commit()
