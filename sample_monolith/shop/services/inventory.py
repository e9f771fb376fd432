"""Stock: reservations for placed orders, releases on cancellation, restocking."""

from sqlalchemy import text, update

from ..database import db
from ..models import StockLevel
from . import OutOfStock


def reserve(product_id, quantity):
    """Reserve ``quantity`` of a product, or raise OutOfStock. The caller commits."""
    stmt = (
        update(StockLevel)
        .where(StockLevel.product_id == product_id)
        .where(StockLevel.on_hand - StockLevel.reserved >= quantity)
        .values(reserved=StockLevel.reserved + quantity)
    )
    # Conditional update: two checkouts racing for the last item cannot both win.
    result = db.session.execute(stmt)
    if result.rowcount != 1:
        raise OutOfStock(f"product {product_id}: fewer than {quantity} available")


def release(product_id, quantity):
    """Give back a reservation. The caller commits."""
    db.session.execute(
        update(StockLevel)
        .where(StockLevel.product_id == product_id)
        .values(reserved=StockLevel.reserved - quantity)
    )


def restock(product_id, quantity):
    """Goods received: raise on-hand stock, creating the stock row if needed."""
    result = db.session.execute(
        text("UPDATE inventory SET on_hand = on_hand + :qty WHERE product_id = :pid"),
        {"qty": quantity, "pid": product_id},
    )
    if result.rowcount == 0:
        db.session.add(StockLevel(product_id=product_id, on_hand=quantity, reserved=0))
    db.session.commit()
    return db.session.get(StockLevel, product_id)
