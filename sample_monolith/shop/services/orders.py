"""Checkout and everything that happens to an order before it ships."""

from flask import current_app

from .. import mailer
from ..cache import cache
from ..database import db, persist
from ..models import Order, OrderLine, Payment, Product, utcnow
from ..pricing import checkout_rules
from . import NotFound, ShopError, inventory, loyalty
from .catalogue import CATALOGUE_KEY
from .customers import get_customer


def get_order(order_id):
    order = Order.get_by_id(order_id)
    if order is None:
        raise NotFound(f"no order {order_id}")
    return order


def _forget_cached(order):
    # Stock and loyalty figures on these cached pages changed.
    cache.delete(CATALOGUE_KEY)
    if order.customer_id is not None:
        cache.delete(f"customer:{order.customer_id}")


def place_order(form):
    """Place an order: price it, reserve stock, credit loyalty points, confirm by e-mail."""
    customer = get_customer(form.data["customer_id"])
    skus = [line["sku"] for line in form.data["lines"]]
    products = {p.sku: p for p in Product.query.filter(Product.sku.in_(skus), Product.active)}
    missing = sorted(set(skus) - set(products))
    if missing:
        raise NotFound(f"unknown or discontinued products: {', '.join(missing)}")

    priced = checkout_rules.execute(
        {"sku": line["sku"], "quantity": line["quantity"],
         "unit_price_cents": products[line["sku"]].price_cents}
        for line in form.data["lines"]
    )
    order = Order(customer=customer, email=customer.email, ship_to_name=customer.name)
    for line in priced:
        order.lines.append(
            OrderLine(
                product=products[line["sku"]],
                quantity=line["quantity"],
                unit_price_cents=line["unit_price_cents"],
            )
        )
    order.recalculate_total()
    try:
        persist(order)
        for line in order.lines:
            inventory.reserve(line.product_id, line.quantity)
        loyalty.award_points(customer, order)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    _forget_cached(order)

    if current_app.config["INLINE_EMAIL"]:
        mailer.send_order_confirmation(order)
    return order


def remove_line(order_id, line_id):
    """Drop one line from an unpaid order; its stock and points are given back."""
    order = get_order(order_id)
    if order.status != "placed":
        raise ShopError(f"order {order.id} is {order.status}; lines can no longer change", 409)
    line = next((line for line in order.lines if line.id == int(line_id)), None)
    if line is None:
        raise NotFound(f"order {order.id} has no line {line_id}")
    if len(order.lines) == 1:
        raise ShopError("cannot remove the last line; cancel the order instead", 409)

    points_before = loyalty.points_for(order.total_cents)
    order.lines.remove(line)
    order.recalculate_total()
    inventory.release(line.product_id, line.quantity)
    loyalty.revoke_points(
        order.customer, order, points_before - loyalty.points_for(order.total_cents), "line removed"
    )
    db.session.commit()
    _forget_cached(order)
    return order


def cancel_order(order_id):
    """Cancel a placed or paid order: release stock, refund payments, take back points."""
    order = get_order(order_id)
    if order.status not in ("placed", "paid"):
        raise ShopError(f"order {order.id} is {order.status} and cannot be cancelled", 409)

    for line in order.lines:
        inventory.release(line.product_id, line.quantity)
    Payment.query.filter_by(order_id=order.id, status="captured").update({"status": "refunded"})
    loyalty.revoke_points(
        order.customer, order, loyalty.points_for(order.total_cents), "order cancelled"
    )
    order.status = "cancelled"
    order.cancelled_at = utcnow()
    db.session.commit()
    _forget_cached(order)
    return order
