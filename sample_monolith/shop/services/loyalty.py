"""Loyalty points: one point per whole dollar spent, given back when an order is cancelled."""

from sqlalchemy import insert

from ..database import db
from ..models import LoyaltyEntry


def points_for(total_cents):
    return total_cents // 100


def award_points(customer, order):
    """Credit the customer for ``order``. The caller commits."""
    points = points_for(order.total_cents)
    if points <= 0:
        return 0
    customer.loyalty_points += points
    db.session.execute(
        insert(LoyaltyEntry).values(
            customer_id=customer.id, order_id=order.id, points=points, reason="order"
        )
    )
    return points


def revoke_points(customer, order, points, reason):
    """Take back ``points`` given for ``order``. The caller commits."""
    if customer is None or points <= 0:
        return 0
    points = min(points, customer.loyalty_points)
    customer.loyalty_points -= points
    db.session.add(
        LoyaltyEntry(customer_id=customer.id, order_id=order.id, points=-points, reason=reason)
    )
    return points
