"""A small mapped model used by the outbox tests: an order as a legacy app would have it."""

from __future__ import annotations

import datetime as dt
import decimal
import enum

from sqlalchemy import DateTime, Enum, ForeignKey, Integer, Numeric, String
from sqlalchemy.types import TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Status(enum.Enum):
    NEW = "new"
    PAID = "paid"


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(200))


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), nullable=True)
    total: Mapped[decimal.Decimal] = mapped_column(Numeric(10, 2))
    status: Mapped[Status] = mapped_column(Enum(Status), default=Status.NEW)
    placed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(), nullable=True)


class OrderLine(Base):
    __tablename__ = "order_lines"
    __strangler_aggregate__ = "order"

    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(40))


class Money:
    """A value object a legacy app stores through a custom column type."""

    def __init__(self, text: str):
        self.text = text


class MoneyType(TypeDecorator):
    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else value.text

    def process_result_value(self, value, dialect):
        return None if value is None else Money(value)


class Invoice(Base):
    """Has a column whose Python value JSON has no form for."""

    __tablename__ = "invoices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    amount: Mapped[Money] = mapped_column(MoneyType)
