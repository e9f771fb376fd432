from datetime import date

from flask import Blueprint, jsonify, request
from sqlalchemy import delete

from ..database import db
from ..models import Payment
from ..services import ShopError, catalogue, inventory
from . import legacy_reports

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _json():
    return request.get_json(silent=True) or {}


def _day(value):
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise ShopError(f"not a date: {value!r}") from None


@bp.post("/catalogue/import")
def import_catalogue():
    return jsonify(catalogue.import_catalogue(_json().get("rows", [])))


@bp.post("/products/<sku>/price")
def set_price(sku):
    catalogue.set_price(sku, int(_json()["price_cents"]))
    return jsonify(sku=sku, price_cents=int(_json()["price_cents"]))


@bp.post("/products/discontinue")
def discontinue():
    return jsonify(discontinued=catalogue.discontinue(_json().get("skus", [])))


@bp.post("/inventory/<int:product_id>/restock")
def restock(product_id):
    quantity = int(_json().get("quantity", 0))
    if quantity <= 0:
        raise ShopError("quantity must be positive")
    level = inventory.restock(product_id, quantity)
    return jsonify(product_id=product_id, on_hand=level.on_hand, reserved=level.reserved)


@bp.post("/payments/purge-failed")
def purge_failed_payments():
    result = db.session.execute(delete(Payment).where(Payment.status == "failed"))
    db.session.commit()
    return jsonify(purged=result.rowcount)


@bp.post("/reports/daily-sales/<day>")
def rebuild_daily_sales(day):
    return jsonify(day=_day(day), rows=legacy_reports.rebuild_daily_sales(_day(day)))


@bp.get("/reports/daily-sales/<day>")
def daily_sales(day):
    return jsonify(legacy_reports.daily_sales_report(_day(day)))


@bp.delete("/reports/daily-sales/<day>")
def drop_daily_sales(day):
    return jsonify(removed=legacy_reports.drop_report_day(_day(day)))


@bp.get("/reports/top-customers")
def top_customers():
    return jsonify(legacy_reports.top_customers(int(request.args.get("limit", 10))))
