from flask import Blueprint, jsonify, request

from ..cache import cache
from ..forms import ProfileForm, SignupForm
from ..models import Order
from ..services import customers

bp = Blueprint("customers", __name__, url_prefix="/customers")


@bp.post("")
def sign_up():
    form = SignupForm(request.get_json(silent=True))
    if not form.validate():
        return jsonify(errors=form.errors), 400
    customer = customers.sign_up(form)
    return jsonify(customer.to_dict()), 201


@bp.get("/<int:customer_id>")
def show(customer_id):
    key = f"customer:{customer_id}"
    card = cache.get(key)
    if card is None:
        card = customers.get_customer(customer_id).to_dict()
        cache.set(key, card)
    return jsonify(card)


@bp.get("")
def lookup():
    email = request.args.get("email", "")
    customer = customers.find_by_email(email) if email else None
    if customer is None:
        return jsonify(error="not found"), 404
    return jsonify(customer.to_dict())


@bp.patch("/<int:customer_id>")
def update_profile(customer_id):
    form = ProfileForm(request.get_json(silent=True))
    customer = customers.update_profile(customer_id, form)
    return jsonify(customer.to_dict())


@bp.delete("/<int:customer_id>")
def delete(customer_id):
    customers.delete_customer(customer_id)
    return "", 204


@bp.get("/<int:customer_id>/orders")
def orders(customer_id):
    customer = customers.get_customer(customer_id)
    return jsonify([order.to_dict() for order in customer.orders.order_by(Order.id)])
