"""The notifications service's own tables: what it knows of orders, and the mail it owes."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class KnownOrder(Base):
    """The part of a shop order this service needs, kept current from ``order`` events."""

    __tablename__ = "known_orders"

    order_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    email: Mapped[str] = mapped_column(String(255))
    ship_to_name: Mapped[str] = mapped_column(String(120))
    total_cents: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))


class OutgoingMail(Base):
    """A mail decided in the same transaction as the event that caused it; sent after commit.

    Deciding and sending are apart so a crash never loses a mail: the row
    commits with the inbox entry, and the dispatcher appends unsent rows to the
    spool and marks them sent.
    """

    __tablename__ = "outgoing_mail"
    __table_args__ = (UniqueConstraint("kind", "order_id", name="uq_outgoing_mail_kind_order"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(40))
    order_id: Mapped[int] = mapped_column(Integer)
    recipient: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    event_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
