"""Handlers of the notifications service and the dispatcher that sends what they decide."""

from __future__ import annotations

import json
import os
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from outbox import inbox
from outbox.consumer import Consumer, Event

from .models import Base, KnownOrder, OutgoingMail, utcnow

NAME = "notifications"
#: The order events this service reads; the policy lets only this service decrypt them.
ORDER_EVENTS = "shop.order.*"


def format_amount(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}"


def render_confirmation(order_id: int, email: str, name: str, total_cents: int) -> dict[str, Any]:
    """The order confirmation, as the shop's checkout used to send it inline.

    Moved here from the shop's mailer; the walkthrough's parity check compares
    what this renders with what the shop sent, message by message.
    """
    return {
        "to": email,
        "subject": f"Your order #{order_id} is confirmed",
        "body": (
            f"Hello {name},\n\n"
            f"Thank you for your order #{order_id}. "
            f"Total: {format_amount(total_cents)}.\n\n"
            "The Shop team\n"
        ),
        "order_id": order_id,
    }


def on_order_event(event: Event, session: Session) -> None:
    """Keep the order current; the first time an order is seen placed, owe its confirmation.

    Events of one order arrive in the order they were emitted, so the first
    one seen is the order's creation, whatever the event's verb.
    """
    data = event.data
    if not isinstance(data, dict) or "id" not in data:
        return  # an order event without the entity (a bulk update): nothing to confirm
    order_id = int(data["id"])
    known = session.get(KnownOrder, order_id)
    if known is None:
        known = KnownOrder(
            order_id=order_id,
            email=data.get("email", ""),
            ship_to_name=data.get("ship_to_name", ""),
            total_cents=int(data.get("total_cents") or 0),
            status=data.get("status", ""),
        )
        session.add(known)
        if known.status == "placed" and known.email:
            mail = render_confirmation(order_id, known.email, known.ship_to_name, known.total_cents)
            session.add(
                OutgoingMail(
                    kind="order_confirmation", order_id=order_id, recipient=mail["to"],
                    subject=mail["subject"], body=mail["body"], event_id=event.id,
                )
            )
        return
    for field in ("email", "ship_to_name", "status"):
        if field in data:
            setattr(known, field, data[field])
    if "total_cents" in data:
        known.total_cents = int(data["total_cents"] or 0)


def build_consumer(engine: Engine, *, keys_dir: str | None, policy: str | None) -> Consumer:
    """Return the service's consumer: its handlers on its own database."""
    consumer = Consumer(NAME, engine, keys_dir=keys_dir, policy=policy)
    consumer.add_handler(ORDER_EVENTS, on_order_event)
    return consumer


def migrate(engine: Engine) -> None:
    """Create the service's tables and its inbox (idempotent)."""
    Base.metadata.create_all(engine)
    inbox.upgrade(engine.url.render_as_string(hide_password=False))


def dispatch_mail(engine: Engine, spool_path: str) -> int:
    """Append every unsent mail to the spool file, mark it sent; return how many were sent."""
    sent = 0
    with Session(engine) as session, session.begin():
        pending = session.scalars(
            select(OutgoingMail).where(OutgoingMail.sent_at.is_(None)).order_by(OutgoingMail.id)
        ).all()
        if not pending:
            return 0
        folder = os.path.dirname(spool_path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(spool_path, "a", encoding="utf-8") as spool:
            for mail in pending:
                message = {"to": mail.recipient, "subject": mail.subject, "body": mail.body, "order_id": mail.order_id}
                spool.write(json.dumps(message, sort_keys=True) + "\n")
                mail.sent_at = utcnow()
                sent += 1
            spool.flush()
            os.fsync(spool.fileno())
    return sent
