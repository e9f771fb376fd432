"""Taking payment for an order. The card gateway is simulated: card 0002 is always declined."""

import uuid

from ..database import db
from ..models import Payment, utcnow
from . import ShopError
from .orders import get_order

DECLINED_CARD = "0002"


def _charge(order_id, method, amount_cents, card_last4):
    """Ask the gateway; returns (status, reference)."""
    if method == "card" and card_last4 == DECLINED_CARD:
        return "failed", None
    key = f"{order_id}:{method}:{card_last4}:{amount_cents}"
    return "captured", uuid.uuid5(uuid.NAMESPACE_URL, key).hex


def record_payment(order_id, form):
    order = get_order(order_id)
    if order.status != "placed":
        raise ShopError(f"order {order.id} is {order.status}; nothing to pay", 409)
    amount = int(form.data["amount_cents"])
    if amount != order.total_cents:
        raise ShopError(f"amount {amount} does not match the order total {order.total_cents}")

    status, reference = _charge(order.id, form.data["method"], amount, form.data.get("card_last4"))
    payment = Payment(
        order=order, amount_cents=amount, method=form.data["method"], status=status,
        reference=reference,
    )
    db.session.add(payment)
    if status == "captured":
        order.status = "paid"
        order.paid_at = utcnow()
    db.session.commit()
    return payment
