"""Flush-time capture: one ``updated`` event per modified entity, in its transaction, never doubled."""

from __future__ import annotations

import decimal
import json

import pytest
from sqlalchemy import ForeignKey, Integer, MetaData, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from outbox import attach_to, emit, outbox_table
from outbox.capture import capture_updates, stop_capturing
from tests.outbox.models import Base, Customer, Order, Status


def create_schema_with_outbox(engine, base) -> None:
    """The create_all() way in: the outbox tables join a MetaData the app builds its schema from."""
    schema = MetaData()
    for table in base.metadata.tables.values():
        table.to_metadata(schema)
    attach_to(schema)
    schema.create_all(engine)


@pytest.fixture
def engine(sqlite_url):
    engine = create_engine(sqlite_url)
    create_schema_with_outbox(engine, Base)
    capture_updates(Order, prefix="shop")
    yield engine
    stop_capturing()
    engine.dispose()


def events(engine):
    with engine.connect() as conn:
        return [(r.type, r.aggregateid, json.loads(r.payload))
                for r in conn.execute(select(outbox_table).order_by(outbox_table.c.position))]


def make_order(engine):
    with Session(engine) as session:
        order = Order(total=decimal.Decimal("5"), status=Status.NEW)
        session.add(order)
        session.commit()
        return order.id


def test_attribute_assignment_then_commit_emits_one_updated_event_with_final_values(engine):
    order_id = make_order(engine)
    with Session(engine) as session:
        order = session.get(Order, order_id)
        order.status = Status.PAID
        session.flush()
        order.total = decimal.Decimal("7.50")
        session.commit()
    [(type_, key, data)] = events(engine)
    assert (type_, key) == ("shop.order.updated", str(order_id))
    assert data["status"] == "paid" and data["total"] == "7.50"


def test_an_explicit_emit_of_the_same_entity_wins(engine):
    order_id = make_order(engine)
    with Session(engine) as session:
        order = session.get(Order, order_id)
        setattr(order, "status", Status.PAID)
        session.flush()
        emit(session, "shop.order.paid", order)
        session.commit()
    assert [e[0] for e in events(engine)] == ["shop.order.paid"]


def test_rollback_and_unchosen_classes_and_new_or_deleted_entities_emit_nothing(engine):
    order_id = make_order(engine)
    with Session(engine) as session:
        session.get(Order, order_id).status = Status.PAID
        session.rollback()
    with Session(engine) as session:
        customer = Customer(email="a@example.com")
        session.add(customer)
        order = Order(total=decimal.Decimal("1"), status=Status.NEW)
        session.add(order)
        session.flush()
        order.total = decimal.Decimal("2")  # changed after its INSERT, still part of creating it
        customer.email = "b@example.com"
        session.commit()
    with Session(engine) as session:
        doomed = session.get(Order, order_id)
        doomed.status = Status.PAID
        session.flush()
        session.delete(doomed)
        session.commit()
    assert events(engine) == []


def test_one_event_per_entity_per_transaction(engine):
    first, second = make_order(engine), make_order(engine)
    with Session(engine) as session:
        for order_id in (first, second, first):
            session.get(Order, order_id).total += 1
            session.flush()
        session.commit()
    assert sorted(e[1] for e in events(engine)) == sorted([str(first), str(second)])


class _Base(DeclarativeBase):
    pass


class Account(_Base):
    """A parent that owns its entries (delete-orphan) and merely lists its invoices."""

    __tablename__ = "capture_accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(40), default="a")
    entries: Mapped[list["Entry"]] = relationship(cascade="all, delete-orphan")
    invoices: Mapped[list["Bill"]] = relationship(back_populates="account")
    notes: Mapped[list["Memo"]] = relationship()  # no way back from a memo


class Entry(_Base):
    __tablename__ = "capture_entries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("capture_accounts.id"))


class Bill(_Base):
    __tablename__ = "capture_bills"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("capture_accounts.id"), nullable=True)
    account: Mapped[Account | None] = relationship(back_populates="invoices")


class Memo(_Base):
    __tablename__ = "capture_memos"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("capture_accounts.id"), nullable=True)


def test_the_event_goes_to_the_aggregate_whose_rows_change_not_to_every_object_a_collection_touched(sqlite_url):
    engine = create_engine(sqlite_url)
    create_schema_with_outbox(engine, _Base)
    capture_updates(_Base, prefix="bank")
    try:
        with Session(engine) as session:
            session.add_all([Account(), Bill(), Memo()])
            session.commit()
        changes = {
            # a new bill pointing at the account: the bill's INSERT, the account's row is untouched
            "new child of a listed collection": lambda s, a: s.add(Bill(account=a)),
            # the bill's foreign key changes (through its back reference)
            "existing child moved in": lambda s, a: a.invoices.append(s.get(Bill, 1)),
            # no back reference: the memo's foreign key still changes, so the memo is the one updated
            "existing child moved in, one-way": lambda s, a: a.notes.append(s.get(Memo, 1)),
            # the account owns its entries: they are part of it
            "owned child added": lambda s, a: a.entries.append(Entry()),
            "own column": lambda s, a: setattr(a, "name", "b"),
        }
        seen = {}
        for what, change in changes.items():
            with Session(engine) as session:
                change(session, session.get(Account, 1))
                session.commit()
            with engine.begin() as conn:
                seen[what] = [(r.type, r.aggregateid) for r in conn.execute(select(outbox_table))]
                conn.execute(outbox_table.delete())
        assert seen == {
            "new child of a listed collection": [],
            "existing child moved in": [("bank.bill.updated", "1")],
            "existing child moved in, one-way": [("bank.memo.updated", "1")],
            "owned child added": [("bank.account.updated", "1")],
            "own column": [("bank.account.updated", "1")],
        }
    finally:
        stop_capturing()
        engine.dispose()
