"""The product catalogue: nightly import from the supplier feed, prices, discontinuation."""

from ..cache import cache
from ..database import db
from ..models import Product, StockLevel
from . import NotFound, ShopError

CATALOGUE_KEY = "catalogue:active"


def active_products():
    products = cache.get(CATALOGUE_KEY)
    if products is None:
        products = [p.to_dict() for p in Product.query.filter_by(active=True).order_by(Product.id)]
        cache.set(CATALOGUE_KEY, products)
    return products


def import_catalogue(rows):
    """Upsert products from the supplier feed (rows carry the supplier's product id).

    A product seen for the first time gets a stock row with the feed's ``stock``.
    """
    imported = []
    for row in rows:
        if not row.get("id") or not row.get("sku"):
            raise ShopError(f"feed row without id or sku: {row!r}")
        product = db.session.merge(
            Product(
                id=int(row["id"]),
                sku=row["sku"],
                name=row["name"],
                price_cents=int(row["price_cents"]),
                active=bool(row.get("active", True)),
            )
        )
        imported.append((product, int(row.get("stock", 0))))
    db.session.flush()

    known = {level.product_id for level in StockLevel.query.all()}
    new_levels = [
        StockLevel(product_id=product.id, on_hand=stock, reserved=0)
        for product, stock in imported
        if product.id not in known
    ]
    db.session.add_all(new_levels)
    db.session.commit()
    cache.delete(CATALOGUE_KEY)
    return {"products": len(imported), "new_stock_rows": len(new_levels)}


def set_price(sku, price_cents):
    if price_cents <= 0:
        raise ShopError("price must be positive")
    changed = Product.query.filter_by(sku=sku).update({"price_cents": price_cents})
    if not changed:
        raise NotFound(f"no product {sku}")
    db.session.commit()
    cache.delete(CATALOGUE_KEY)
    return changed


def discontinue(skus):
    changed = (
        db.session.query(Product)
        .filter(Product.sku.in_(list(skus)))
        .update({Product.active: False}, synchronize_session=False)
    )
    db.session.commit()
    cache.delete(CATALOGUE_KEY)
    return changed
